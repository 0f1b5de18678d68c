#!/usr/bin/env bash
# The GPU check, in one call on a bare borrowed GPU machine (Python 3.12 with torch + CUDA, no
# network, only the working tree and .whl/ carried):
#
#   make gpu-wheels                 # here, with PyPI: .whl/gpu/ (< 60 MiB)
#   bench/gpu_check.sh              # there, with .whl carried
#   bench/gpu_check.sh --dry-run    # here: the same steps on the CPU with tiny models (CI runs it)
#
# Steps: install the carried wheels (pip --no-index --target), run the gpu-marked tests that need
# no Ray or Delta, then `python -m bench.gpu` (the stages directly: decode, CLIP, Whisper, end to
# end; bench/gpu.py says what and how). Writes RESULTS-gpu.md (+ .json, the test log) into $OUT
# when set, else bench/. About 5 minutes on one H100 with 16 cores; each step has a timeout so
# the whole stays under 6. PY overrides the interpreter (default: python3 there, .venv here).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=
case "${1:-}" in
  --dry-run) DRY_RUN=--dry-run ;;
  "") ;;
  *) echo "usage: bench/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
OUT_DIR=${OUT:-bench}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
START=$SECONDS
if [ -n "$DRY_RUN" ]; then
  PY=${PY:-.venv/bin/python}
else
  PY=${PY:-python3}
  SITE=${GPU_SITE:-/tmp/gpu-check-site}
  shopt -s nullglob
  WHEELS=(.whl/gpu/*.whl)
  if [ ${#WHEELS[@]} -eq 0 ]; then
    echo "no wheels in .whl/gpu: run 'make gpu-wheels' where PyPI is reachable and carry .whl" >&2
    exit 2
  fi
  echo "installing ${#WHEELS[@]} wheels into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${WHEELS[@]}" \
    || exit 1
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')" || exit 1
fi
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '|',
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" || exit 1
echo "[$((SECONDS - START)) s] gpu-marked tests (no Ray, no Delta)"
# The files whose gpu tests need neither Ray nor deltalake (tests/test_gpu_check.py keeps it so).
GPU_TESTS=(tests/test_clip.py tests/test_transcribe.py tests/test_whisper_step_rules.py tests/test_audio_embedding.py)
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu "${GPU_TESTS[@]}" 2>&1 | tee "$OUT_DIR/gpu-tests.log"
TESTS=${PIPESTATUS[0]}
echo "[$((SECONDS - START)) s] benchmark"
timeout 210 "$PY" -m bench.gpu $DRY_RUN --out "$OUT_DIR/RESULTS-gpu.md"
BENCH=$?
echo "[$((SECONDS - START)) s] done: tests exit $TESTS, benchmark exit $BENCH"
[ "$TESTS" -eq 0 ] && [ "$BENCH" -eq 0 ]
