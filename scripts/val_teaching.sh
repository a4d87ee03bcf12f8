#!/usr/bin/env bash
# Score candidate teaching-VLM folders on the *validation* episodes (300, seed 0) of every task that
# has an acceptance target, to choose which one to ship without looking at the test split:
#   bash scripts/val_teaching.sh runs/G1 runs/G2
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
for dir in "$@"; do
  mkdir -p "$dir/val"
  for spec in shapes-vqa:0 binding:0,4,8 format:0,2 operator:4; do
    task=${spec%%:*}; shots=${spec#*:}
    $BIN/mmict eval --backbone "$dir" --task "$task" --shots "$shots" --episodes 300 --seed 0 --split val \
      --batch-size 64 --quiet --json "$dir/val/$task.json" > /dev/null
  done
  $BIN/python - "$dir" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
cells = [f"{r['task']}@{x['shots']} {x['accuracy']:.3f}" for t in ("shapes-vqa", "binding", "format", "operator")
         for r in [json.loads((d / "val" / f"{t}.json").read_text())] for x in r["results"]]
print(d, " | ".join(cells))
PY
done
