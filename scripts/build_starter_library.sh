#!/usr/bin/env bash
# Rebuild the starter library shipped with the teaching VLM (assets/teaching-vlm/library): for each
# case-study task VanillaFT / VanillaICT / MMICT, and HiFICL / MimIC / LIVE / M2IV / LoRA for fixed
# binding and ft-vqa; each entry's metadata holds its command, steps, train seconds and held-out
# accuracy with a 95% interval.  One training budget per method family (mmict_core.casestudy.STARTER_TRAIN).
#   [BACKBONE=teaching-folder] [ONLY=entry,...] [OUT=dir] bash scripts/build_starter_library.sh [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
$BIN/mmict starter-library --seed "${1:-0}" ${ONLY:+--only "$ONLY"} ${OUT:+--out "$OUT"} ${BACKBONE:+--backbone "$BACKBONE"}
