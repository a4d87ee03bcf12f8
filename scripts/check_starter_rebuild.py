"""Does the starter library rebuild from its script to within the reported intervals?

Rebuilds the named entries (default: the cheapest, binding-fixed.hificl) with the starter library's
own builder (casestudy.build_starter_library, the code behind `mmict starter-library`) and seed into a
scratch library, then checks each rebuilt accuracy against the shipped entry's 95% Wilson interval.
Prints one row per entry; exit status 1 when one falls outside.

    python scripts/check_starter_rebuild.py                        # binding-fixed.hificl (~1 min)
    python scripts/check_starter_rebuild.py --only binding-fixed.lora,binding-fixed.live
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def check(names: list[str], seed: int = 0, shipped: Path | None = None, progress: bool = False) -> list[dict]:
    """One row per entry: shipped accuracy and interval, rebuilt accuracy, whether it lies inside."""
    from mmict_core.casestudy import STARTER_DIR, build_starter_library

    shipped = Path(shipped or STARTER_DIR)
    rows = []
    with tempfile.TemporaryDirectory(prefix="starter-rebuild-") as tmp:
        for name in names:
            ref = json.loads((shipped / name / "entry.json").read_text())["metrics"]
            new = build_starter_library(tmp, seed=seed, only=[name], episodes=ref["episodes"], progress=progress)
            if not new:
                raise SystemExit(f"{name}: not a starter entry (see mmict_core.casestudy.STARTER_ENTRIES)")
            acc = new[0]["accuracy"]
            rows.append({"name": name, "shipped": ref["accuracy"], "ci95": [ref["ci95_lo"], ref["ci95_hi"]],
                         "rebuilt": acc, "episodes": ref["episodes"],
                         "inside": ref["ci95_lo"] - 1e-9 <= acc <= ref["ci95_hi"] + 1e-9})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="binding-fixed.hificl", help="comma-separated starter entry names")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rows = check(a.only.split(","), a.seed, progress=True)
    print("| entry | shipped accuracy [95% Wilson] | rebuilt | inside |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['shipped']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['rebuilt']:.3f} | "
              f"{'yes' if r['inside'] else 'NO'} |")
    return 0 if all(r["inside"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
