#!/usr/bin/env bash
# ES on a GPU in one command: P-ES and a 1M-parameter MLP generations/s (full and low rank), the GPU's
# own fp32 GEMM peak and peak GPU memory; writes benchmarks/results/es_gpu.md.
#   benchmarks/gpu.sh [--data-root DIR] [--generations N]      (DIR defaults to $EVOPLAT_DATA or ../shared/data)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-$HERE/../.venv/bin/python}
[ -x "$PY" ] || PY=python
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu.sh: torch sees no CUDA device")'
"$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'
exec "$PY" "$HERE/bench_es_gpu.py" --data-root "${EVOPLAT_DATA:-$HERE/../../shared/data}" "$@"
