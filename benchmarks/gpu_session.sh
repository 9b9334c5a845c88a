#!/usr/bin/env bash
# The prepared GPU check: one call on a machine with one CUDA GPU, about 9.5 minutes on an H200.
#
#   1. the tiny walkthrough on the GPU (the default recipe into a fresh runs/gpu-check.*/tiny, timed);
#   2. the `--long` recipe (timed, in the background) while notebooks 00-07 run under nbval on the GPU
#      (they share the GPU, so the --long time is an upper bound);
#   3. benchmarks/gpu_bench.py at LLaMA-7B shape on the otherwise idle GPU: alignment MFU over batch
#      sizes (+ a profile of the best), batch-1 decoding with the static cache + CUDA graph against
#      the dynamic cache;
#   4. the CUDA tests: static decoding (tests/test_static_decode.py), the 7B-shaped end-to-end run with
#      chat through the library (tests/test_full_scale_gpu.py), the small CUDA paths;
#   5. optionally, alignment with each LLaMA layer compiled, if time is left.
#
# Packages the GPU image lacks travel as wheels in .whl/ (docs/gpu.md says how to fetch them).
# Results go to $OUT (at most 8 files): session.log, walkthrough_tiny.json, walkthrough_long.log,
# notebooks.log, gpu_bench.json, full_scale_gpu.json, gpu_bench_compiled.json and bench.json (all of
# it under "gpu").
set -u
OUT=${OUT:-benchmarks/out/gpu}
BUDGET=${GPU_SESSION_BUDGET:-585}  # seconds for the whole script
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg XRAYGPT_PROFILE=tiny TOKENIZERS_PARALLELISM=false
left() { echo $(( BUDGET - SECONDS )); }
cap() { local want=$1 l; l=$(( $(left) - 5 )); (( l < want )) && want=$l; (( want < 1 )) && want=1; echo "$want"; }
stamp() { echo "== [$SECONDS s] $*"; }

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
status=0
# fresh run folders of this check only (nothing of an existing runs/ is touched); the notebooks use the
# tiny run trained here through XRAYGPT_LAB_RUN
mkdir -p runs
CHECK=$(mktemp -d runs/gpu-check.XXXX)
export XRAYGPT_LAB_RUN="$PWD/$CHECK/tiny"

stamp "1. tiny walkthrough on the GPU"
start=$SECONDS
timeout "$(cap 150)" python3 -m xraygpt_lab walkthrough --out "$CHECK/tiny" --quiet || status=1
echo "walkthrough_tiny_seconds $(( SECONDS - start ))"
python3 - "$OUT/walkthrough_tiny.json" "$CHECK/tiny" $(( SECONDS - start )) <<'EOF'
import json, sys, pathlib
out, run, wall = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
m = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
pathlib.Path(out).write_text(json.dumps({"wall_seconds": wall, "metrics": m}, indent=1))
EOF

stamp "2. --long in the background, notebooks under nbval"
start=$SECONDS
( timeout "$(cap 300)" python3 -m xraygpt_lab walkthrough --long --out "$CHECK/long" --quiet > "$OUT/walkthrough_long.log" 2>&1;
  echo "exit $? wall $(( SECONDS - start ))" >> "$OUT/walkthrough_long.log" ) &
long_pid=$!
timeout "$(cap 280)" python3 -m pytest -q -p no:cacheprovider -n 4 --dist loadfile --nbval-lax \
    notebooks/00_synthetic_world.ipynb notebooks/00b_real_data.ipynb notebooks/01_vision_encoder.ipynb \
    notebooks/02_language_model.ipynb notebooks/03_linear_alignment.ipynb notebooks/04_chat.ipynb \
    notebooks/05_attribution.ipynb notebooks/06_attention.ipynb notebooks/07_evaluation.ipynb \
    --durations=0 > "$OUT/notebooks.log" 2>&1 || status=1
tail -25 "$OUT/notebooks.log"
stamp "notebooks done; waiting for --long"
wait $long_pid
tail -12 "$OUT/walkthrough_long.log"
stamp "3. 7B benchmark (GPU otherwise idle)"
timeout "$(cap 170)" python3 benchmarks/gpu_bench.py --shape 7b --batches 4,12,24 --steps 5 --decode-tokens 128 \
    --json "$OUT/gpu_bench.json" || status=1

stamp "4. CUDA tests"
XRAYGPT_GPU_TEST_JSON="$OUT/full_scale_gpu.json" timeout "$(cap 150)" python3 -m pytest -q -p no:cacheprovider -rs \
    tests/test_static_decode.py tests/test_full_scale_gpu.py tests/test_gpu_scale.py tests/test_full_scale.py \
    tests/test_device.py || status=1

if (( $(left) > 100 )); then
    stamp "5. compiled layers (time left: $(left) s)"
    timeout "$(cap 200)" python3 benchmarks/gpu_bench.py --shape 7b --batches 16 --steps 5 --decode-tokens 32 \
        --compile-layers --json /tmp/gpu_bench_compiled.json && cp /tmp/gpu_bench_compiled.json "$OUT/gpu_bench_compiled.json"
fi

python3 - "$OUT" "$CHECK" <<'EOF'
import json, sys, pathlib, datetime
out = pathlib.Path(sys.argv[1])
gpu = {"date": datetime.date.today().isoformat()}
for name in ("gpu_bench", "gpu_bench_compiled", "walkthrough_tiny", "full_scale_gpu"):
    p = out / f"{name}.json"
    if p.is_file():
        gpu[name] = json.loads(p.read_text())
long_log, long_metrics = out / "walkthrough_long.log", pathlib.Path(sys.argv[2]) / "long" / "metrics.json"
gpu["walkthrough_long"] = {
    "tail": long_log.read_text().strip().splitlines()[-1] if long_log.is_file() else None,
    "metrics": json.loads(long_metrics.read_text()) if long_metrics.is_file() else None}
(out / "bench.json").write_text(json.dumps({"gpu": gpu}, indent=1))
EOF
stamp "done, status $status"
exit $status
