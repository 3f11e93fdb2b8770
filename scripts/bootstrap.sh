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
# An exact MuJoCo to test against (e.g. MUJOCO_SPEC="mujoco==3.3.7"); default: the newest.
MUJOCO_SPEC=${MUJOCO_SPEC:-}
stamp="$VENV/.metarl-installed"

pip_install() {
  # Some machines list extra package folders that pip reports as missing on every call.
  local status=0
  "$VENV/bin/python" -m pip install --quiet "$@" \
    2> >(grep -v "is ignored: it is neither a file" >&2) || status=$?
  return "$status"
}
want="$EXTRAS $MUJOCO_SPEC"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the project's requirements changed since the last install.
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip_install --upgrade pip setuptools wheel
# torch first: a bare requirement would pull a multi-GB CUDA build where a CPU one is enough.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[bootstrap] installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi
echo "[bootstrap] installing metarl[$EXTRAS] (editable)"
if [ -n "$MUJOCO_SPEC" ]; then
  pip_install -e ".[$EXTRAS]" "$MUJOCO_SPEC"
else
  pip_install -e ".[$EXTRAS]"
fi
echo "$want" > "$stamp"
