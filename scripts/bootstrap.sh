#!/usr/bin/env bash
# Create and fill the local virtual environment (.venv) that every make target uses.
# Idempotent: a second call only re-checks. Override the interpreter with PYTHON=...,
# the torch requirement with TORCH_SPEC=... (default: the CPU-friendly 2.13.0 release).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev,ray}
stamp="$VENV/.metarl-installed"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the project's requirements changed since the last install.
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$(cat "$stamp")" = "$EXTRAS" ]; then
  exit 0
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
# torch first: a bare requirement would pull a multi-GB CUDA build where a CPU one is enough.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[bootstrap] installing $TORCH_SPEC"
  "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
fi
echo "[bootstrap] installing metarl[$EXTRAS] (editable)"
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
echo "$EXTRAS" > "$stamp"
