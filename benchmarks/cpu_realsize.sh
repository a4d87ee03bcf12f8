#!/usr/bin/env bash
# Real classes at >= 1 B parameters in 4-bit on this CPU, within a time budget (default 40 min of measurements):
#   bash benchmarks/cpu_realsize.sh                          # all models; results in benchmarks/results/realsize_cpu/
#   bash benchmarks/cpu_realsize.sh --budget-s 1200 --models idefics2-1b,idefics2-0.25b
#   bash benchmarks/cpu_realsize.sh --tiny --out /tmp/rs      # toy sizes of the same classes (~1 min)
#   bash benchmarks/cpu_realsize.sh --readme                  # only regenerate benchmarks/README.md's block from the JSON
# PYTHON: the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" -m benchmarks.cpu_realsize "$@"
