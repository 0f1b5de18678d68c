#!/usr/bin/env bash
# On a machine with a CUDA GPU: the gpu-marked tests and the GPU part of the benchmark, within
# about 8 minutes; writes bench/RESULTS-gpu.md. Needs the project's environment (make venv)
# with a CUDA build of torch; PY overrides the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
timeout 240 "$PY" -m pytest -m gpu -q -p no:cacheprovider
timeout 300 "$PY" -m bench.gpu "$@"
