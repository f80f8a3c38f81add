#!/usr/bin/env bash
# The paper's seed path on a GPU (issue 31): bench/gpu_seed_path.py with whatever python has torch
# and timm (no install needed). From anywhere in a checkout:
#     bash bench/gpu_seed_path.sh            # CUDA: DeiT-S, 500x375 (about a minute on one H100 expected; capped at 280 s)
#     bash bench/gpu_seed_path.sh --tiny     # any machine: a check of the script (DeiT-Ti, 64x96)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=""
for c in "${PYTHON:-}" python3 python; do
  if [ -n "$c" ] && command -v "$c" >/dev/null && "$c" -c "import torch, timm" 2>/dev/null; then PY=$c; break; fi
done
[ -n "$PY" ] || { echo "gpu_seed_path.sh: no python with torch and timm found (set PYTHON=...)" >&2; exit 2; }
export PYTHONPATH="$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
exec timeout 280 "$PY" bench/gpu_seed_path.py "$@"
