#!/usr/bin/env bash
# The GPU check of the real-model path, in one run: under 8 minutes on one H100/H200. Writes
# gpu_check.json (or --out PATH) and prints a table; exits 1 if a check failed. What it checks:
# scripts/gpu_check.py's docstring.
#   bash scripts/gpu_check.sh                        # a CUDA machine, recipe shapes
#   bash scripts/gpu_check.sh --smoke --device cpu   # the same checks with tiny shapes on a CPU
#   bash scripts/gpu_check.sh --wheels               # where pip works: put in .whl/ the wheels of the packages
#                                                    # a GPU image without network may lack; carry .whl/ there
# Uses .venv/bin/python if there is one, else $PYTHON or python3; wheels in .whl/ are installed to
# /tmp/leti-site first and take precedence.
set -euo pipefail
cd "$(dirname "$0")/.."
# The versions leti is tested with, for a Python 3.12 x86-64 machine (about 58 MB in all).
WHEELS="trl==1.16.0 transformers==5.24.0 peft==0.21.2 bitsandbytes==0.50.2 datasets==5.2.0 gymnasium==1.4.0
        farama-notifications==0.0.6 dill==0.4.1 multiprocess==0.70.19 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ "${1:-}" = "--wheels" ]; then
  platforms=""
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64 any; do platforms="$platforms --platform $p"; done
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
    -d .whl $WHEELS
  du -sh .whl
  exit 0
fi
if ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import sys; sys.exit(sys.version_info[:2] != (3, 12))"; then
  echo "gpu_check: ignoring .whl/ (wheels for Python 3.12; this is $("$PY" -c 'import platform; print(platform.python_version())'))" >&2
elif ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/leti-site .whl/*.whl
  export PYTHONPATH=/tmp/leti-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TRL_EXPERIMENTAL_SILENCE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
missing=$("$PY" -c "import importlib.util as u
print(' '.join(n for n in ('torch', 'transformers', 'trl', 'peft', 'bitsandbytes', 'datasets', 'gymnasium',
                           'accelerate', 'rich', 'yaml') if u.find_spec(n) is None))")
if [ -n "$missing" ]; then
  echo "gpu_check: missing Python packages: $missing. Install leti's train extra (pip install -e '.[train]');" \
       "on a machine without network, run 'bash scripts/gpu_check.sh --wheels' where pip works and bring .whl/ along." >&2
  exit 2
fi
exec "$PY" scripts/gpu_check.py "$@"
