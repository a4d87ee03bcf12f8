"""The notebook panels in a real JupyterLab (this venv's server) and a real browser (Debian's
Chromium driven by Playwright): run a notebook that shows every panel, save it, then

1. reload the page while the kernel lives (widgets restored from the kernel), and
2. stop the server and open the saved notebook in a fresh one (widgets restored from the widget
   state saved in the notebook, the way ``make notebooks`` configures JupyterLab),

and each time assert that every widget renders, every figure draws with a height and fits the notebook
at 1280 px, and none shows "Error displaying widget" or an anywidget initialisation failure.

What this catches (each seen on this machine): with JupyterLab's default (widget state not saved)
step 2 draws no widget (the console logs "widget model not found"); with plotly ``FigureWidget`` s in
the panels the saved notebook weighed 51 MB (each carries plotly.js); with plotly's "responsive"
config the first figure of the page was drawn 0 px high.  The anywidget
2-second initialisation timeout reported in issue 22 did not trigger here, even with the CPU
throttled 6x; the restores run throttled all the same.

Skipped when /usr/bin/chromium or JupyterLab is missing, except under CI (env CI set).
Run only this file with:  .venv/bin/python -m pytest -q tests/test_widgets_browser.py
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
READY = "ALL-PANELS-SHOWN"
ERRORS = ("Error displaying widget", "Failed to initialize model", "model not found", "Failed to load model")

pytestmark = pytest.mark.browser

CELLS = [
    "import torch\ntorch.set_num_threads(1)\n"
    "from IPython.display import display\n"
    "from mmict_core.backbones import TeachingVLM\n"
    "from mmict_core.widgets import AttentionExplorer, ComparisonPanel, DemoPicker, Studio, TrainingPanel\n"
    "from mmict_core.workbench import Session\n"
    "session = Session(TeachingVLM.create(seed=0), task='binding', pool_size=8, seed=0)",
    "picker = DemoPicker(session)\npicker.fill.click()\ndisplay(picker)",
    "trainer = TrainingPanel(session, threaded=False, steps=3, samples=8, batch_size=2)\n"
    "trainer.train_button.click()\ndisplay(trainer)",
    "comparison = ComparisonPanel(session)\ncomparison.run()\ndisplay(comparison)",
    "explorer = AttentionExplorer(session)\nexplorer.show()\ndisplay(explorer)",
    f"studio = Studio(session, threaded=False)\ndisplay(studio)\nprint({READY!r}, explorer.error or 'ok')",
]
# jupyterlab-manager 5.0.x: seen once in CI on reopen (1 of 12 figures drawn; the console's error thrown by
# get_model after the manager said it had restored), never in dozens of runs here. The likely mechanism, read
# from its bundled code (restoreWidgets / _handleKernelConnectionStatusChange): a kernel "connected" event
# while the saved state is still loading starts a kernel-only restore, which marks the manager "restored"
# early; outputs then asking for a model not yet loaded show "Error displaying widget: model not found"
# and never retry. A page reload restores them; the reopen step allows that one reload, and only
# after this exact error: a state that was not saved, or is broken, fails both times.
UPSTREAM_RACE = "widget model not found"
# figures drawn: the training curve and the explorer's five, twice (the panels, then the Studio's tabs)
FIGURES = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _needs():
    missing = [] if Path(CHROMIUM).exists() else [CHROMIUM]
    jupyter = Path(sys.executable).with_name("jupyter")
    if not jupyter.exists():
        missing.append(str(jupyter))
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing: {', '.join(missing)} — CI must run the browser test")
        pytest.skip(f"missing: {', '.join(missing)}")
    return jupyter


class Lab:
    """A JupyterLab server on ``root`` with its own config, runtime and settings folders, and the
    project's JupyterLab defaults (notebooks/jupyterlab/overrides.json: the widget manager saves widget
    state into the notebook), as ``make notebooks`` installs them."""

    def __init__(self, jupyter: Path, root: Path, home: Path):
        self.port = _free_port()
        app_settings = home / "app-settings"  # the venv's defaults, as `make notebooks` installs them
        app_settings.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "notebooks" / "jupyterlab" / "overrides.json", app_settings / "overrides.json")
        # no news / update pop-ups over the page
        (home / "settings" / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
        (home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "ws"),
                   PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.log = open(home / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", "--allow-root", f"--port={self.port}", "--ServerApp.token=",
             "--ServerApp.password=", f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
             "--ServerApp.ip=127.0.0.1", f"--LabApp.app_settings_dir={app_settings}"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.5)
        self.close()
        raise RuntimeError("JupyterLab did not start within 120 s")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{name}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


SLOWDOWN = 6  # the restores run on a CPU throttled this many times (a student's laptop under load)


def _throttle(page) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": SLOWDOWN})


def _problems(page, console) -> list[str]:
    html = page.content()  # every tab, hidden ones included
    found = [e for e in ERRORS if e in html]
    found += [m for m in console if any(e in m for e in ERRORS)]
    return found


def _wait_rendered(page, expect, console, what: str) -> None:
    plots = page.locator(".jp-OutputArea .js-plotly-plot")
    try:
        expect(plots).to_have_count(FIGURES, timeout=120_000)
    except AssertionError as e:  # name what the page logged (the error's stack is in the console)
        raise AssertionError(f"{what}: {plots.count()} of {FIGURES} figures drawn; console:\n" + "\n".join(console)) from e
    expect(page.locator(".jp-OutputArea").get_by_text("Show attention").first).to_be_visible()
    page.wait_for_timeout(3000)  # anywidget's initialisation timeout is 2 s: let any failure show
    assert _problems(page, console) == [], f"{what}: widgets failed"
    # every figure drawn with a height, and nothing wider than the notebook at 1280 px (sidebar open)
    boxes = plots.evaluate_all("els => els.filter(e => e.offsetParent !== null).map(e => e.getBoundingClientRect().height)")
    assert boxes and min(boxes) > 100, f"{what}: a figure was drawn {min(boxes)} px high"
    wide = page.locator(".jp-OutputArea-output").evaluate_all(
        "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => [e.className, e.scrollWidth, e.clientWidth])")
    assert wide == [], f"{what}: outputs wider than the notebook: {wide}"
    assert page.locator(".widget-tab").count() >= 1  # the Studio's tabs


def _run_all(page, expect, tries: int = 3) -> None:
    """Run > Run All Cells once the kernel is idle, and again if no cell was queued.

    Seen in CI on a loaded machine: "Run All Cells" clicked while the kernel was still starting left
    every prompt at "[ ]:" and the kernel idle, so nothing ever ran."""
    status = page.get_by_role("button", name=re.compile(r"\| Idle$"))
    prompts = page.locator(".jp-Notebook .jp-InputPrompt")
    for attempt in range(tries):
        expect(status.first).to_be_visible(timeout=120_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        deadline = time.time() + 30
        while time.time() < deadline:
            if any(re.search(r"\[(\*|\d+)\]", t) for t in prompts.all_inner_texts()):
                return  # queued or run
            page.wait_for_timeout(500)
    raise AssertionError(f"Run All Cells queued nothing in {tries} tries; prompts: {prompts.all_inner_texts()}")


def test_every_panel_survives_reload_and_reopen(tmp_path):
    jupyter = _needs()
    from playwright.sync_api import expect, sync_playwright

    root, home = tmp_path / "nb", tmp_path / "home"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "panels.ipynb")
    t0 = time.time()
    lab = Lab(jupyter, root, home)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1600})
                page.set_default_timeout(60_000)
                console: list[str] = []
                page.on("console", lambda m: console.append(m.text))
                page.goto(lab.url("panels.ipynb"))
                page.locator(".jp-Notebook .jp-Cell").first.click()
                _run_all(page, expect)
                expect(page.get_by_text(f"{READY} ok")).to_be_visible(timeout=240_000)
                _wait_rendered(page, expect, console, "first run")
                page.keyboard.press("Control+s")
                expect(page.locator(".jp-mod-dirty")).to_have_count(0, timeout=30_000)

                # 1. reload: the kernel still holds the widgets
                console.clear()
                _throttle(page)
                page.reload()
                _wait_rendered(page, expect, console, "after a reload")
                page.screenshot(path=str(tmp_path / "reload.png"), full_page=True)
            finally:
                browser.close()
        saved = nbformat.read(root / "panels.ipynb", as_version=4)
        state = saved.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        assert state.get("state"), "the widget state was not saved into the notebook"
        size = (root / "panels.ipynb").stat().st_size
        assert size < 2_000_000, f"the saved notebook weighs {size:,} bytes: a figure carries a JS bundle"
    finally:
        lab.close()

    # 2. a fresh server: the old kernel is gone; the widgets come from the notebook's saved state
    shutil.rmtree(home / "ws", ignore_errors=True)
    lab = Lab(jupyter, root, home)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1600})
                page.set_default_timeout(60_000)
                console = []
                page.on("console", lambda m: console.append(m.text))
                _throttle(page)
                page.goto(lab.url("panels.ipynb"))
                try:
                    _wait_rendered(page, expect, console, "reopened from the saved state")
                except AssertionError as first:
                    # jupyterlab-manager 5.0's race (see UPSTREAM_RACE): one reload, as the README tells users
                    if not any(UPSTREAM_RACE in m for m in console):
                        raise
                    page.screenshot(path=str(tmp_path / "reopen-race.png"), full_page=True)
                    warnings.warn(f"reopen hit jupyterlab-manager's restore race; reloading once ({first})")
                    console.clear()
                    page.reload()
                    _wait_rendered(page, expect, console, "reopened from the saved state, reloaded once")
                page.screenshot(path=str(tmp_path / "reopen.png"), full_page=True)
            finally:
                browser.close()
    finally:
        lab.close()
    assert time.time() - t0 < 600
