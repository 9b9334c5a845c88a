#!/usr/bin/env bash
# Wheels that a bare CUDA machine (Python 3.12, torch + transformers + pytest preinstalled, no network)
# needs for benchmarks/gpu_session.sh: the notebook stack for nbval, and the toolkit's own extras.
# Run where pip can reach an index; the wheels land in .whl/ (git-ignored, about 22 MB).
#
#   bash benchmarks/fetch_gpu_wheels.sh [python]     # then carry .whl to the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d .whl \
    asttokens comm debugpy executing fastjsonschema ipykernel ipython ipython_pygments_lexers ipywidgets jedi \
    jsonschema jsonschema-specifications jupyter_client jupyter_core jupyterlab_widgets jupytext matplotlib-inline \
    mdit-py-plugins nbclient nbformat nbval nest-asyncio2 nltk parso pexpect platformdirs prompt_toolkit ptyprocess \
    pure_eval pydicom pyzmq referencing rpds-py stack-data tornado traitlets wcwidth widgetsnbextension captum defusedxml
# rouge-score >= 0.1.2 is published as a source archive only: build its (pure-Python) wheel here
"$PY" -m pip wheel -q --no-deps --no-build-isolation "rouge-score>=0.1.2" -w .whl
ls .whl | wc -l
