#!/usr/bin/env bash
# Install PyTorch into the given Python before the toolkit, preferring a CPU build.
#   - already importable: nothing to do;
#   - a GPU is present: the default (CUDA) build from the package index;
#   - otherwise: torch==$TORCH_CPU_VERSION from local wheels only (no download; fast where a CPU
#     wheel lies on disk), else the default build from the index.
# Override with TORCH_SPEC='torch==X.Y.Z' to install exactly that.
set -euo pipefail
PY=${1:-python3}
TORCH_CPU_VERSION=${TORCH_CPU_VERSION:-2.13.0}
if "$PY" -c "import torch" 2>/dev/null; then
  echo "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
  exit 0
fi
if [ -n "${TORCH_SPEC:-}" ]; then
  exec "$PY" -m pip install "$TORCH_SPEC"
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "GPU found: installing the default torch build"
  exec "$PY" -m pip install "torch>=2.2"
fi
# --no-index --no-deps: succeeds only where the wheel lies on local disk (pip's find-links);
# the second call then fetches torch's small pure-Python dependencies from the index.
if "$PY" -m pip install -q --no-index --no-deps "torch==$TORCH_CPU_VERSION" 2>/dev/null \
   && "$PY" -m pip install -q "torch==$TORCH_CPU_VERSION"; then
  echo "installed local CPU wheel torch==$TORCH_CPU_VERSION"
else
  echo "no local CPU wheel for torch==$TORCH_CPU_VERSION; installing torch from the index"
  "$PY" -m pip install "torch>=2.2"
fi
