#!/usr/bin/env python
"""Screenshots of every tab of MMICT Studio, taken in a real browser after a real session.

    python scripts/screenshots.py --out docs/screenshots

Starts the app on the teaching VLM (a free local port, a throw-away work folder), drives it in
Debian's Chromium through Playwright like a user — two demonstrations clicked, k filled
automatically, ICL compared, a HiFICL adapter trained, its attention shown, the VLibrary entry
inspected — and saves one full-page PNG per tab: case-study (the starter library's VanillaFT /
VanillaICT / MMICT on the default VQA query), backbone, demonstrations, compare, train,
attention, vlibrary.  Needs /usr/bin/chromium (apt-get install -y chromium) and playwright.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TABS = ["case-study", "backbone", "demonstrations", "compare", "train", "attention", "vlibrary"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flow(page, url: str, out: Path, steps: int, samples: int, log=print) -> list[Path]:
    """Use every tab like a user and save ``<tab>.png`` for each; returns the paths written."""
    from playwright.sync_api import expect

    written = []

    def shot(name: str):
        path = out / f"{name}.png"
        page.mouse.move(0, 0)  # no hover highlight in the picture
        page.wait_for_timeout(300)  # let transitions settle
        page.screenshot(path=str(path), full_page=True)
        written.append(path)
        log(f"  wrote {path}")

    page.set_default_timeout(60_000)
    page.goto(url)

    # Case study (the first tab): the default query through the starter library's three methods
    page.get_by_role("button", name="Run the case study").click()
    acc = page.get_by_role("grid", name="Accuracy over held-out episodes")
    expect(acc.get_by_role("gridcell", name="mmict", exact=True)).to_have_count(1, timeout=300_000)
    shot("case-study")

    # Backbone: the loaded model's description appears once the page's load events ran
    page.get_by_role("tab", name="Backbone").click()
    expect(page.get_by_text(re.compile(r"parameters, .* MiB in memory"))).to_be_visible()
    shot("backbone")

    # Demonstrations: two thumbnails by hand, then k (4) filled automatically
    page.get_by_role("tab", name="Demonstrations").click()
    summary = page.get_by_role("tabpanel").get_by_text(re.compile(r"\d+ demonstrations"))
    expect(summary).to_contain_text("0 demonstrations")
    page.get_by_role("button", name=re.compile(r"^Thumbnail 2 of \d+$")).click()
    expect(summary).to_contain_text("1 demonstrations")
    page.get_by_role("button", name=re.compile(r"^Thumbnail 5 of \d+$")).click()
    expect(summary).to_contain_text("2 demonstrations")
    page.get_by_role("button", name="Fill k automatically").click()
    expect(summary).to_contain_text("4 demonstrations")
    shot("demonstrations")

    # Compare: ICL alone first
    page.get_by_role("tab", name="Compare").click()
    page.get_by_role("button", name="Run compare").click()
    table = page.get_by_role("grid", name="Outputs on the same query")
    expect(table.get_by_role("gridcell", name="ICL", exact=True)).to_have_count(1)

    # Train: a HiFICL adapter on the binding task
    page.get_by_role("tab", name="Train").click()
    expect(page.get_by_role("button", name="Train", exact=True)).to_be_visible()
    for label, value in (("Steps", steps), ("Samples", samples)):
        box = page.get_by_label(label, exact=True)
        for _ in range(5):  # fields mounted on the tab's first visit may reset a value typed meanwhile
            box.fill(str(value))
            box.press("Tab")
            page.wait_for_timeout(250)
            if box.input_value() == str(value):
                break
    page.get_by_role("button", name="Train", exact=True).click()
    expect(page.get_by_text(re.compile(r"^finished: "))).to_be_visible(timeout=max(120_000, steps * 5_000))
    shot("train")
    adapter = f"hificl-binding-{steps}s"

    # Compare again: the new adapter is now in the method list beside ICL
    page.get_by_role("tab", name="Compare").click()
    page.get_by_role("button", name="Run compare").click()
    expect(table.get_by_role("gridcell", name=adapter, exact=True)).to_have_count(1)
    expect(page.get_by_role("heading", name="Outputs")).to_be_visible()
    shot("compare")

    # Attention: pick the adapter, show where its virtual key/value pairs are looked at
    page.get_by_role("tab", name="Attention").click()
    page.get_by_label("HiFICL adapter").click()
    page.get_by_role("option", name=adapter).click()
    page.get_by_role("button", name="Show attention").click()
    plots = page.get_by_role("tabpanel").locator(".js-plotly-plot")
    expect(plots).to_have_count(3)
    expect(plots.last.locator(".main-svg").first).to_be_visible()
    shot("attention")

    # VLibrary: the saved entry, inspected
    page.get_by_role("tab", name="VLibrary").click()
    page.get_by_role("button", name="Search / refresh").click()
    expect(page.get_by_role("gridcell", name=adapter, exact=True)).to_have_count(1)
    page.get_by_label("Entry", exact=True).click()
    page.get_by_role("option", name=adapter).click()
    page.get_by_role("button", name="Inspect").click()
    expect(page.get_by_text(re.compile(r"hificl")).last).to_be_visible()
    page.wait_for_timeout(500)
    shot("vlibrary")
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder for the PNGs")
    ap.add_argument("--steps", type=int, default=40, help="HiFICL training steps")
    ap.add_argument("--samples", type=int, default=100, help="training samples")
    ap.add_argument("--port", type=int, default=0, help="app port (0: a free one)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("MMICT_TEST_THREADS") or 0),
                    help="torch threads (0: torch's default)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1000)
    args = ap.parse_args(argv)

    if not Path(args.chromium).exists():
        print(f"{args.chromium} not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mmict-shots-"))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio")  # before gradio is imported
    sys.path.insert(0, str(ROOT))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from playwright.sync_api import sync_playwright

    from app.main import launch

    t0 = time.time()
    demo, url, _ = launch(block=False, port=args.port or free_port(), workdir=str(work / "app"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                written = flow(page, url, out, args.steps, args.samples)
            finally:
                browser.close()
    finally:
        demo.close()
        shutil.rmtree(work, ignore_errors=True)
    missing = [t for t in TABS if not (out / f"{t}.png").exists()]
    print(f"{len(written)} screenshots in {out} ({time.time() - t0:.0f} s)")
    if missing:
        print("missing: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
