#!/usr/bin/env bash
# The method comparison of issue #3 on the shipped teaching VLM (the README's table):
#  1. binding with ONE fixed binding for training and test (what a trained adapter can learn),
#     each adapter also measured on shapes-vqa (what it costs on a task it was not trained for);
#  2. binding whose words change per episode (only demonstrations can tell them): MMICT vs
#     VanillaICT vs VanillaFT vs ICL;
#  3. the trained vector / virtual-KV methods on operator and format (hidden rule per episode, shown only
#     by the demos), for the README's vector table beside the training-free vectors.
# 300 held-out episodes, seed 0.  Trained adapters are cached in $CACHE and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/compare}
CACHE=${CACHE:-$OUT/cache}
EPISODES=${EPISODES:-300}
STEPS=${STEPS:-2000}  # optimiser steps per adapter: HiFICL leaves the word-prior plateau only after ~800-2000 (200: 0.10)
mkdir -p "$OUT"
$BIN/mmict compare --task binding --fixed-binding --mix-fixed 0.5 --also-on shapes-vqa \
  --methods icl:0,icl:8,hificl,mimic,live,lora,m2iv --episodes "$EPISODES" --seed 0 \
  --steps "$STEPS" --cache "$CACHE" --json "$OUT/compare_fixed.json"
$BIN/mmict compare --task binding --methods icl:4,vanilla-ft,vanilla-ict,mmict --episodes "$EPISODES" --seed 0 \
  --steps "$STEPS" --cache "$CACHE" --json "$OUT/compare_episode.json"
for task in operator format; do
  $BIN/mmict compare --task $task --methods icl:0,icl:5,live,mimic,m2iv,hificl --episodes "$EPISODES" --seed 0 \
    --steps "$STEPS" --cache "$CACHE" --json "$OUT/compare_$task.json"
done
