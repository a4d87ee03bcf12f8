#!/usr/bin/env bash
# The papers' claims measured in their own settings, 3 seeds each, on the shipped teaching VLM.
#   MMICT >= VanillaICT >= VanillaFT on the downstream case-study tasks (docs/tasks/downstream.md):
#   pre-registered phases, baseline before methods; per-run JSON in benchmarks/results/claims/downstream/,
#   the README's claim block rewritten from it.  Resumes: a finished (task, method, seed) is not re-run.
#   HiFICL / M2IV at 0 demos >= 8-shot ICL on fixed binding: scripts/measure_binding_claims.py (same budget as the
#   starter library's adapters).  The single-run comparison of every adapter: scripts/compare_teaching.sh.
#   bash scripts/claims.sh            # ~90 min on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/claims/downstream
TASKS=${TASKS:-ft-vqa,ft-caption,ft-video-qa,ft-video-caption}
LIB=${LIB:-assets/teaching-vlm/library}
$PY scripts/measure_downstream.py --phase baseline --tasks "$TASKS" --out "$OUT" --library "$LIB"
$PY scripts/measure_downstream.py --phase methods --tasks "$TASKS" --out "$OUT" --library "$LIB"
$PY scripts/measure_downstream.py --summary --readme --tasks "$TASKS" --out "$OUT"
$PY scripts/measure_binding_claims.py --readme --out benchmarks/results/claims/binding
