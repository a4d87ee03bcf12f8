#!/usr/bin/env bash
# Real-size (random-weight) 4-bit cost of every method on one GPU, within 8 minutes:
#   bash benchmarks/gpu.sh                 # Idefics2-8B and LLaVA-Interleave-Qwen-7B shapes on CUDA (fp16 + nf4)
#   bash benchmarks/gpu.sh --tiny          # the same code at toy sizes on the CPU (~1 min)
#   bash benchmarks/gpu.sh --models idefics2-8b --budget-s 300 --out DIR
# Writes gpu_<scale>.json and .md under $OUT if set, else benchmarks/results/gpu/; prints every goal PASS/FAIL.
# PYTHON: the interpreter (default: .venv/bin/python if present, else python3).  Where bitsandbytes is not
# installed (the lent GPU machines), wheels in ./.whl are installed into /tmp/site first (see benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import bitsandbytes" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "bitsandbytes is not installed and ./.whl holds no wheels: see benchmarks/README.md (GPU run)" >&2
    exit 2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" -m benchmarks.gpu "$@"
