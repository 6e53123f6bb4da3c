#!/usr/bin/env bash
# The project's one-call GPU check (issue 18). See bench/gpu_check.py and bench/README.md.
#
#   bash bench/gpu_check.sh pack            # here: writes .gpu-pack/ (model in reduced form, texts, CPU reference, wheels)
#   bash bench/gpu_check.sh run             # on the GPU machine, with carry [".gpu-pack"]; results under $OUT
#   bash bench/gpu_check.sh dry-run         # CPU dry run: tiny pack + run, seconds (what tests/test_gpu_check.py runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=${GPU_PACK:-.gpu-pack}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
command=${1:-}
shift || true
case "$command" in
  pack)
    exec "$PYTHON" bench/gpu_check.py pack --pack "$PACK" "$@" ;;
  run)
    # The GPU machine lacks pydantic (hybridir.config): install the carried wheels outside the tree.
    if ! "$PYTHON" -c "import pydantic" 2>/dev/null; then
      ls "$PACK"/wheels/*.whl >/dev/null 2>&1 || { echo "error: no pydantic here and no $PACK/wheels: rerun pack" >&2; exit 2; }
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-check-site "$PACK"/wheels/*.whl
      export PYTHONPATH="$PYTHONPATH:/tmp/gpu-check-site"
    fi
    exec "$PYTHON" bench/gpu_check.py run --pack "$PACK" "$@" ;;
  dry-run)
    DRY=${GPU_DRY_PACK:-$(mktemp -d)/gpu-pack}
    "$PYTHON" bench/gpu_check.py pack --pack "$DRY" --dry-run --no-wheels
    exec "$PYTHON" bench/gpu_check.py run --pack "$DRY" "$@" ;;
  *)
    echo "usage: bash bench/gpu_check.sh pack|run|dry-run [options]" >&2; exit 2 ;;
esac
