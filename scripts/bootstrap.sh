#!/usr/bin/env bash
# Creates .venv from the lock files, or reuses it while they are unchanged.
# Usage: bash scripts/bootstrap.sh   (idempotent; prints what it does)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.lock-sha256"
UV_VERSION=0.13.9
want=$(cat requirements.lock requirements-tfx.txt setup.py scripts/bootstrap.sh scripts/tf_legacy_keras.pth | sha256sum | cut -d' ' -f1)

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "bootstrap: reusing $VENV (lock unchanged)"
  exit 0
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || { echo "bootstrap: $PYTHON not found; this project needs CPython 3.11" >&2; exit 1; }
if ! command -v uv >/dev/null || [[ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
  echo "bootstrap: installing uv $UV_VERSION"
  "$PYTHON" -m pip install -q "uv==$UV_VERSION"
fi
UV="$("$PYTHON" -c 'import shutil,sys; print(shutil.which("uv"))')"

echo "bootstrap: creating $VENV from requirements.lock (about 3 GB, 1-3 minutes)"
rm -rf "$VENV"
"$UV" venv -q -p "$PYTHON" "$VENV"
VIRTUAL_ENV="$PWD/$VENV" "$UV" pip install -q -r requirements.lock
# TFX 1.16 declares Python <3.11; --python-version lets uv take it, --no-deps keeps our pins.
VIRTUAL_ENV="$PWD/$VENV" "$UV" pip install -q --no-deps --python-version 3.10 -r requirements-tfx.txt
VIRTUAL_ENV="$PWD/$VENV" "$UV" pip install -q --no-deps -e .
# The one place TF_USE_LEGACY_KERAS=1 is set (TFRS needs Keras 2): a .pth file runs at every start of
# the venv's interpreter, before any import, so it holds for `python -m`, pytest, servers, the UI
# and Beam's worker processes alike.
cp scripts/tf_legacy_keras.pth "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
echo "$want" > "$STAMP"
echo "bootstrap: done ($VENV)"
