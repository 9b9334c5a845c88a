#!/usr/bin/env bash
# The prepared check for a session that is lent a GPU (one call; about 6 minutes on an H200).
#
#   1. benchmarks/gpu_scale.py at LLaMA-7B shape: alignment throughput, MFU, first-token and
#      decode latency, peak memory (XrayGPT's batch 3; then batch 12 with gradient checkpointing);
#   2. the library's CUDA paths on small stand-ins (tests/test_full_scale.py, tests/test_gpu_scale.py);
#   3. tests/test_full_scale_gpu.py: tutorials/full_scale_train.py end to end on a Swin-T MedCLIP
#      stand-in and a LLaMA-7B-shaped LLM written to disk in the real layouts.
#
# Packages the GPU image lacks travel as wheels in .whl/ (see NOTES.md, "GPU sessions").
# Results (JSON + logs) go to $OUT (the device tool's folder) or ./benchmarks/out/gpu.
set -u
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

status=0
timeout 150 python3 benchmarks/gpu_scale.py --shape 7b --steps 10 --batch 3 --json "$OUT/gpu_scale_b3.json" || status=1
timeout 150 python3 benchmarks/gpu_scale.py --shape 7b --steps 6 --batch 12 --gradient-checkpointing \
    --json "$OUT/gpu_scale_b12_ckpt.json" || status=1
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_full_scale.py tests/test_gpu_scale.py 2>&1 \
    | tee "$OUT/pytest_small.log"; [ "${PIPESTATUS[0]}" = 0 ] || status=1
XRAYGPT_GPU_TEST_JSON="$OUT/full_scale_gpu.json" timeout 300 python3 -m pytest -q -p no:cacheprovider -rs \
    tests/test_full_scale_gpu.py 2>&1 | tee "$OUT/pytest_7b.log"; [ "${PIPESTATUS[0]}" = 0 ] || status=1
exit $status
