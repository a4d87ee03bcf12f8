#!/usr/bin/env bash
# The method comparison of issue #3 on the shipped teaching VLM (the README's tables):
#  1. binding with ONE fixed binding for training and test (what a trained adapter can learn),
#     each adapter also measured on shapes-vqa (what it costs on a task it was not trained for);
#  2. binding whose words change per episode (only demonstrations can tell them): MMICT vs
#     VanillaICT vs VanillaFT vs ICL;
#  3. the trained vector / virtual-KV methods on operator and format (hidden rule per episode, shown only
#     by the demos), for the README's vector table beside the training-free vectors;
#  4. the training-free vectors (task vector at layers 1 and 2, function vector, MTV) and ICL on operator,
#     format and fixed binding.
# 300 held-out episodes, seed 0.  JSON in $OUT (committed: benchmarks/results/compare/, each file records the
# backbone's fingerprint), then the README's tables rewritten from it (python scripts/compare_tables.py --readme).
# Trained adapters are cached in $CACHE and reused.  About 60 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-benchmarks/results/compare}
CACHE=${CACHE:-runs/compare/cache}
EPISODES=${EPISODES:-300}
STEPS=${STEPS:-2000}  # optimiser steps per adapter: HiFICL leaves the word-prior plateau only after ~800-2000 (200: 0.10)
PARTS=${PARTS:-1 2 3 4}
mkdir -p "$OUT"
for part in $PARTS; do
  case $part in
  1) $BIN/mmict compare --task binding --fixed-binding --mix-fixed 0.5 --also-on shapes-vqa \
       --methods icl:0,icl:8,hificl,mimic,live,lora,m2iv --episodes "$EPISODES" --seed 0 \
       --steps "$STEPS" --cache "$CACHE" --json "$OUT/compare_fixed.json" ;;
  2) $BIN/mmict compare --task binding --methods icl:4,vanilla-ft,vanilla-ict,mmict --episodes "$EPISODES" --seed 0 \
       --steps "$STEPS" --cache "$CACHE" --json "$OUT/compare_episode.json" ;;
  3) for task in operator format; do
       $BIN/mmict compare --task $task --methods icl:0,icl:5,live,mimic,m2iv,hificl --episodes "$EPISODES" --seed 0 \
         --steps "$STEPS" --cache "$CACHE" --json "$OUT/compare_$task.json"
     done ;;
  4) for task in operator format binding; do
       fixed=""; [ "$task" = binding ] && fixed="--fixed-binding"
       $BIN/mmict compare --task $task $fixed \
         --methods icl:0,icl:5,task-vector:5@layer=1,task-vector:5@layer=2,function-vector:5,mtv:5,mtv:8 \
         --episodes "$EPISODES" --seed 0 --json "$OUT/vectors_$task.json"
     done ;;
  esac
done
if [ -f "$OUT/compare_fixed.json" ] && [ -f "$OUT/compare_episode.json" ]; then
  $BIN/python scripts/compare_tables.py --readme --out "$OUT"
fi
