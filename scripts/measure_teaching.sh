#!/usr/bin/env bash
# Measure the shipped teaching VLM as the model card reports it: 300 held-out episodes, seed 0,
# fp32 / 8-bit / 4-bit, then rewrite assets/teaching-vlm/MODEL_CARD.md from the JSON reports.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/eval}
mkdir -p "$OUT"
for quant in ${QUANTS:-none 8bit 4bit}; do
  for task in shapes-vqa binding format operator; do
    $BIN/mmict eval --task $task --shots 0,1,2,4,8 --episodes 300 --seed 0 --quant $quant --batch-size 64 \
      --quiet --json "$OUT/$task-$quant.json"
  done
done
for task in ${EXTRA_TASKS-shapes-caption digits}; do
  $BIN/mmict eval --task $task --shots 0,1,2,4,8 --episodes 300 --seed 0 --batch-size 64 --quiet --json "$OUT/$task-none.json"
done
[ -n "${NO_CARD:-}" ] && exit 0
$BIN/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from mmict_core.backbones import ASSETS_DIR
from mmict_core.backbones.model_card import write_model_card
out = Path(sys.argv[1])
order = [(t, q) for q in ("none", "8bit", "4bit") for t in ("shapes-vqa", "binding", "format", "operator", "shapes-caption", "digits")]
reports = [json.loads((out / f"{t}-{q}.json").read_text()) for t, q in order if (out / f"{t}-{q}.json").exists()]
write_model_card(ASSETS_DIR, reports, "bash scripts/measure_teaching.sh  (mmict eval --task T --shots 0,1,2,4,8 --episodes 300 --seed 0 --quant Q)")
print("model card written")
PY
