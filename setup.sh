#!/usr/bin/env bash
# Turn a fresh clone into a working environment:
#   .venv/  with the CPU build of torch (unless a GPU is present), minilatent (editable), JupyterLab,
#           ipywidgets, pytest and nbval;
#   data/   an untracked copy of eg_data/ for your own files.
# Idempotent: run it again at any time; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
say() { printf '[setup] %s\n' "$*"; }

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "[setup] error: Python >= 3.10 is required ($("$PY" --version 2>&1) found); set PYTHON=/path/to/python3.x" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
else
  say ".venv exists: reusing it"
fi
VPY=.venv/bin/python
PIP="$VPY -m pip --disable-pip-version-check"

# torch first, and deliberately: an open range like 'torch>=2.2' pulls a CUDA build of several GB on
# Linux. Without an NVIDIA GPU we ask for the CPU build (about 10x smaller). Set MINILATENT_TORCH to
# override the requirement (e.g. MINILATENT_TORCH='torch==2.13.0' on a GPU machine).
if "$VPY" -c 'import torch' 2>/dev/null; then
  say "torch $("$VPY" -c 'import torch; print(torch.__version__)') already installed"
else
  TORCH_SPEC=${MINILATENT_TORCH:-torch==2.13.0}
  if [ "$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    say "installing $TORCH_SPEC (CPU build: no NVIDIA GPU found)"
    # --retries 1: where that index is unreachable (offline mirrors) fail over to the others at once
    $PIP install -q "$TORCH_SPEC" --retries 1 --extra-index-url https://download.pytorch.org/whl/cpu
  else
    say "installing $TORCH_SPEC"
    $PIP install -q "$TORCH_SPEC"
  fi
fi

# the package and its tools; skipped when pyproject.toml has not changed since the last successful install
STAMP=.venv/.minilatent-installed
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VPY" -c 'import minilatent, nbval, jupyterlab' 2>/dev/null; then
  say "minilatent and its tools are installed and pyproject.toml is unchanged: skipping pip"
else
  say "installing minilatent (editable) with JupyterLab, ipywidgets, pytest, nbval"
  $PIP install -q -e ".[dev]"
  echo "$WANT" > "$STAMP"
fi

if [ ! -d data ]; then
  say "seeding data/ from eg_data/"
  mkdir -p data
  cp -n eg_data/*.h5 data/ 2>/dev/null || true
else
  cp -n eg_data/*.h5 data/ 2>/dev/null || true
  say "data/ exists: added any missing example files"
fi

say "done: torch $("$VPY" -c 'import torch; print(torch.__version__)'), venv size $(du -sh .venv | cut -f1)"
say "activate with: source .venv/bin/activate"
