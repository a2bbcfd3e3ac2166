#!/usr/bin/env bash
# ES on a GPU in one command: P-ES and a 1M-parameter MLP generations/s (full and low rank), the GPU's
# own fp32 GEMM peak and peak GPU memory, and P-ES on one Ray worker holding the GPU (the workers' loop,
# as runtime.loop auto runs it on one machine); writes benchmarks/results/es_gpu.md.
#   benchmarks/gpu.sh [--data-root DIR] [--generations N]      (DIR: $EVOPLAT_DATA, else evoplat's cache)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-$HERE/../.venv/bin/python}
[ -x "$PY" ] || PY=python
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu.sh: torch sees no CUDA device")'
"$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'
# Without EVOPLAT_DATA or --data-root, MNIST comes from evoplat's cache (downloaded on first use).
exec "$PY" "$HERE/bench_es_gpu.py" ${EVOPLAT_DATA:+--data-root "$EVOPLAT_DATA"} "$@"
