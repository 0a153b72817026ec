#!/usr/bin/env bash
# Set up (or reuse) .venv and run the tests:   bash scripts/dev.sh test [pytest args...]
# CPU torch is installed first and pinned: an unpinned torch pulls the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import leti_env, trl, pytest" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[dev]"
fi
export LETI_DATA_DIR=${LETI_DATA_DIR:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
cmd=${1:-test}; shift || true
case "$cmd" in
  test) exec .venv/bin/python -m pytest -q "$@" ;;
  *) echo "usage: bash scripts/dev.sh test [pytest args]" >&2; exit 2 ;;
esac
