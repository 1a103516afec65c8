#!/usr/bin/env bash
# One command for set-up and use on a fresh machine:
#   bash scripts/run.sh test    install what is needed into .venv, then lint (ruff) and run the test suite
#   bash scripts/run.sh demo    install, then train and translate on the shipped SNARE-seq cells (report in butterfly_demo/)
#   bash scripts/run.sh docs    install, then build the documentation site into docs/_build/html (tutorials executed)
# Extra arguments are passed on (to pytest, or to `butterfly demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
VENV_PY=.venv/bin/python
"$VENV_PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# Install the CPU build of torch first when none is present: a bare `torch` requirement would pull a multi-GB
# CUDA build. GPU users install their CUDA build of torch into the venv beforehand (see README).
if ! "$VENV_PY" -c "import torch" >/dev/null 2>&1; then
  "$VENV_PY" -m pip install -q "torch==2.13.0" || "$VENV_PY" -m pip install -q "torch>=2.1" --index-url https://download.pytorch.org/whl/cpu
fi
"$VENV_PY" -m pip install -q -e ".[test]" 2>&1 | grep -vE "pyyaml|^\s*$" || true

cmd=${1:-test}
shift || true
case "$cmd" in
  test)
    # lint and format first (seconds): the same checks as the pre-commit hooks
    .venv/bin/ruff check src tests benchmarks
    .venv/bin/ruff format --check src tests benchmarks
    exec "$VENV_PY" -m pytest "$@" ;;
  demo) exec .venv/bin/butterfly demo "$@" ;;
  docs) exec .venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html "$@" ;;
  *) echo "usage: bash scripts/run.sh test|demo|docs [args...]" >&2; exit 2 ;;
esac
