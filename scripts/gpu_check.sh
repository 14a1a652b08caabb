#!/usr/bin/env bash
# The GPU check (issue #17, docs/benchmarks.md): the product's loading, training, drawing, chat and instant-concept
# paths at Anole-7b's size with random weights, on one GPU, in at most 8 minutes, no network. Writes
# gpu_check.json under $OUT (default build/gpu-check).
#
#   bash scripts/gpu_check.sh            # on a CUDA machine
#   bash scripts/gpu_check.sh --demo     # the same steps at the demo model's size on the CPU (under 2 minutes)
#
# Python: $PYTHON, else .venv/bin/python where it exists, else python3. Where bitsandbytes is missing (the lent GPU
# machines have torch and transformers but not it), wheels put in .whl/ are installed into a temporary folder first.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/gpu-check}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
if compgen -G ".whl/*.whl" >/dev/null && ! "$python" -c "import bitsandbytes" 2>/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/familiar-site .whl/*.whl
    export PYTHONPATH="/tmp/familiar-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
timeout "${GPU_CHECK_SECONDS:-480}" "$python" scripts/gpu_check.py --out "$out" "$@"
