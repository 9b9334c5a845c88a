#!/usr/bin/env bash
# The prepared GPU check: one call on a machine with one CUDA GPU, about 9.5 minutes on an H200.
#
#   1. the tiny walkthrough on the GPU (the default recipe into a fresh runs/gpu-check.*/tiny, timed);
#   2. at once: the `--long` recipe (timed), the CUDA tests (static decoding, the 7B-shaped end-to-end
#      run with chat through the library, the small CUDA paths) and notebooks 00-07 under nbval; they
#      share the GPU, so the --long time is an upper bound;
#   3a. benchmarks/released_gpu.py: the released XrayGPT's whole stack at its real size (EVA ViT-g +
#      Q-Former + LLaMA-7B, random weights): memory, first-token latency, one IG map;
#   3b. benchmarks/gpu_bench.py at LLaMA-7B shape on the otherwise idle GPU: alignment MFU over batch
#      sizes (+ a profile of the best), batch-1 decoding with the static cache + CUDA graph against
#      the dynamic cache;
#   4. optionally, alignment with each LLaMA layer compiled, if time is left.
#
# Packages the GPU image lacks travel as wheels in .whl/ (docs/gpu.md says how to fetch them).
# Results go to $OUT (at most 8 files come back): session.log, walkthrough_long.log, notebooks.log and
# bench.json, which holds every measurement under "gpu" (the parts' JSON files are written to $PARTS).
set -u
OUT=${OUT:-benchmarks/out/gpu}
BUDGET=${GPU_SESSION_BUDGET:-585}  # seconds for the whole script
mkdir -p "$OUT"
PARTS=$(mktemp -d /tmp/gpu-parts.XXXX)
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
python3 - "$PARTS/walkthrough_tiny.json" "$CHECK/tiny" $(( SECONDS - start )) <<'EOF'
import json, sys, pathlib
out, run, wall = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
m = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
pathlib.Path(out).write_text(json.dumps({"wall_seconds": wall, "metrics": m}, indent=1))
EOF

stamp "2. --long and the CUDA tests in the background, notebooks under nbval"
start=$SECONDS
( OMP_NUM_THREADS=4 timeout "$(cap 300)" python3 -m xraygpt_lab walkthrough --long --out "$CHECK/long" --quiet \
      > "$OUT/walkthrough_long.log" 2>&1;
  echo "exit $? wall $(( SECONDS - start ))" >> "$OUT/walkthrough_long.log" ) &
long_pid=$!
# correctness only (speed is measured in step 3 on an idle GPU)
( XRAYGPT_GPU_TEST_JSON="$PARTS/full_scale_gpu.json" OMP_NUM_THREADS=2 timeout "$(cap 250)" \
      python3 -m pytest -q -p no:cacheprovider -rs tests/test_static_decode.py tests/test_full_scale_gpu.py \
      tests/test_gpu_scale.py tests/test_full_scale.py tests/test_device.py > "$PARTS/cuda_tests.log" 2>&1;
  echo "exit $?" >> "$PARTS/cuda_tests.log" ) &
tests_pid=$!
OMP_NUM_THREADS=2 timeout "$(cap 280)" python3 -m pytest -q -p no:cacheprovider -n 4 --dist loadfile --nbval-lax \
    notebooks/00_synthetic_world.ipynb notebooks/00b_real_data.ipynb notebooks/01_vision_encoder.ipynb \
    notebooks/02_language_model.ipynb notebooks/03_linear_alignment.ipynb notebooks/04_chat.ipynb \
    notebooks/05_attribution.ipynb notebooks/06_attention.ipynb notebooks/07_evaluation.ipynb \
    --durations=0 > "$OUT/notebooks.log" 2>&1 || status=1
tail -25 "$OUT/notebooks.log"
stamp "notebooks done; waiting for the CUDA tests"
wait $tests_pid
tail -15 "$PARTS/cuda_tests.log"
grep -q "^exit 0" "$PARTS/cuda_tests.log" || status=1

stamp "3a. the released stack at its real size (--long may still be training)"
timeout "$(cap 120)" python3 benchmarks/released_gpu.py --json "$PARTS/released_gpu.json" > /dev/null || status=1
stamp "waiting for --long"
wait $long_pid
tail -12 "$OUT/walkthrough_long.log"

stamp "3b. 7B benchmark (GPU otherwise idle)"
timeout "$(cap 170)" python3 benchmarks/gpu_bench.py --shape 7b --batches 4,12,24 --steps 5 --decode-tokens 128 \
    --json "$PARTS/gpu_bench.json" || status=1

if (( $(left) > 100 )); then
    stamp "4. compiled layers (time left: $(left) s)"
    timeout "$(cap 200)" python3 benchmarks/gpu_bench.py --shape 7b --batches 16 --steps 5 --decode-tokens 32 \
        --compile-layers --json "$PARTS/gpu_bench_compiled.json"
fi

python3 - "$OUT" "$CHECK" "$PARTS" <<'EOF'
import json, sys, pathlib, datetime
out, parts = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[3])
gpu = {"date": datetime.date.today().isoformat()}
for name in ("gpu_bench", "gpu_bench_compiled", "walkthrough_tiny", "full_scale_gpu", "released_gpu"):
    p = parts / f"{name}.json"
    if p.is_file():
        gpu[name] = json.loads(p.read_text())
long_log, long_metrics = out / "walkthrough_long.log", pathlib.Path(sys.argv[2]) / "long" / "metrics.json"
tests_log = parts / "cuda_tests.log"
gpu["cuda_tests"] = tests_log.read_text().strip().splitlines()[-12:] if tests_log.is_file() else None
gpu["walkthrough_long"] = {
    "tail": long_log.read_text().strip().splitlines()[-1] if long_log.is_file() else None,
    "metrics": json.loads(long_metrics.read_text()) if long_metrics.is_file() else None}
(out / "bench.json").write_text(json.dumps({"gpu": gpu}, indent=1))
EOF
stamp "done, status $status"
exit $status
