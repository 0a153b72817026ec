#!/usr/bin/env bash
# Set up (or reuse) .venv, then:
#   bash scripts/dev.sh train [args]   the main job: `leti train` (no args: the built-in default on CPU)
#   bash scripts/dev.sh test [args]    run the test suite (pytest args pass through)
#   bash scripts/dev.sh demo [args]    run an environment end to end (python -m leti_env demo)
# CPU torch is installed first and pinned: an unpinned torch pulls the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import leti_env, trl, pytest, openenv" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[dev]"
fi
# Datasets: a local copy laid out like ../shared/data if there is one, else the Hugging Face Hub.
if [ -z "${LETI_DATA_DIR:-}" ] && [ -d ../shared/data/mbpp ]; then
  export LETI_DATA_DIR=$(cd ../shared/data && pwd)
fi
export TRL_EXPERIMENTAL_SILENCE=1
cmd=${1:-test}; shift || true
case "$cmd" in
  test) HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 exec .venv/bin/python -m pytest -q "$@" ;;
  train) exec .venv/bin/leti train "$@" ;;
  demo) exec .venv/bin/python -m leti_env demo "$@" ;;
  *) echo "usage: bash scripts/dev.sh {train|test|demo} [args]" >&2; exit 2 ;;
esac
