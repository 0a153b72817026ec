#!/usr/bin/env bash
# Set up (or reuse) .venv with exactly the versions CI tested (constraints.txt), then:
#   bash scripts/dev.sh train [args]          the main job: `leti train` (no args: the built-in default on CPU)
#   bash scripts/dev.sh test [args]           run the test suite (pytest args pass through)
#   bash scripts/dev.sh test --latest [args]  the suite on the newest versions pyproject.toml's ranges allow,
#                                             in .venv-latest, made anew each time: run it before each release
#   bash scripts/dev.sh freeze                after `test --latest` passes: write its versions to constraints.txt
#   bash scripts/dev.sh demo [args]           run an environment end to end (python -m leti_env demo)
# torch comes first, pinned as constraints.txt says: an unpinned torch pulls the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=$(grep -m1 '^torch==' constraints.txt)

quietly() {  # a command's output to a log, shown only if it fails
  local log=$1; shift
  "$@" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "dev.sh: '$*' failed (log: $log)" >&2; exit 1; }
}

pinned_venv() {  # .venv, reinstalled whenever constraints.txt or pyproject.toml changed since it was set up
  local stamp
  stamp=$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  if [ "$(cat .venv/.leti-installed 2>/dev/null)" != "$stamp" ]; then
    echo "installing the tested versions (constraints.txt) into .venv ..." >&2
    quietly .venv/pip.log .venv/bin/pip install -c constraints.txt pip
    quietly .venv/pip.log .venv/bin/pip install -c constraints.txt "$TORCH"
    quietly .venv/pip.log .venv/bin/pip install -c constraints.txt -e ".[dev]"
    echo "$stamp" > .venv/.leti-installed
  fi
  VENV=.venv
}

latest_venv() {  # .venv-latest from nothing: the newest release of everything, torch as pinned
  echo "installing the newest versions pyproject.toml allows into .venv-latest ..." >&2
  rm -rf .venv-latest
  "$PY" -m venv .venv-latest
  quietly .venv-latest/pip.log .venv-latest/bin/pip install --upgrade pip
  quietly .venv-latest/pip.log .venv-latest/bin/pip install "$TORCH"
  quietly .venv-latest/pip.log .venv-latest/bin/pip install -c <(echo "$TORCH") -e ".[dev]"
  .venv-latest/bin/pip list --format=freeze 2>/dev/null \
    | grep -iE '^(torch|transformers|trl|peft|bitsandbytes|accelerate|datasets|gymnasium|rich|openenv-core)==' >&2
  VENV=.venv-latest
}

cmd=${1:-test}; shift || true
case "$cmd" in
  test|train|demo|freeze) ;;
  *) echo "usage: bash scripts/dev.sh {train|test [--latest]|freeze|demo} [args]" >&2; exit 2 ;;
esac
if [ "$cmd" = test ] && [ "${1:-}" = --latest ]; then
  shift
  latest_venv
elif [ "$cmd" = freeze ]; then
  [ -x .venv-latest/bin/python ] || { echo "dev.sh freeze: no .venv-latest; run 'bash scripts/dev.sh test --latest' first" >&2; exit 2; }
  {
    sed -n '1,/^[^#]/{/^#/p}' constraints.txt
    .venv-latest/bin/pip freeze --all --exclude-editable 2>/dev/null | grep -vE '^(-e|#)|@' | sed -E 's/^(torch==[^+]*)\+.*/\1/'
  } > constraints.txt.new
  mv constraints.txt.new constraints.txt
  echo "constraints.txt: $(grep -c '==' constraints.txt) pinned versions from .venv-latest" >&2
  exit 0
else
  pinned_venv
fi
# Datasets: a local copy laid out like ../shared/data if there is one, else the Hugging Face Hub.
if [ -z "${LETI_DATA_DIR:-}" ] && [ -d ../shared/data/mbpp ]; then
  export LETI_DATA_DIR=$(cd ../shared/data && pwd)
fi
export TRL_EXPERIMENTAL_SILENCE=1
case "$cmd" in
  test) HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 exec "$VENV/bin/python" -m pytest -q "$@" ;;
  train) exec "$VENV/bin/leti" train "$@" ;;
  demo) exec "$VENV/bin/python" -m leti_env demo "$@" ;;
esac
