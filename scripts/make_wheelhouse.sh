#!/usr/bin/env bash
# Build a wheelhouse: every wheel the toolkit needs, for this platform and this Python, so that a
# laptop with no network installs it with
#     python -m venv .venv && .venv/bin/pip install --no-index --find-links wheelhouse xraygpt-lab
# Usage: bash scripts/make_wheelhouse.sh [PYTHON] [FOLDER]   (defaults: python3, wheelhouse)
#   - PyTorch is the CPU build: torch==$TORCH_CPU_VERSION from local wheels (pip's find-links, as
#     scripts/install_torch.sh does), else TORCH_WHEEL=<path of a torch .whl> copied as is, else
#     torch==$TORCH_CPU_VERSION from the index (a CPU build on macOS and Windows; on Linux the
#     index's default build is the CUDA one, several GB with its nvidia-* wheels).
#   - EXTRAS=test adds the test extras (pytest, nbval, ...).
#   - FOLDER is created, or reused when an earlier run made it (it holds .xraygpt-lab-wheelhouse);
#     a folder holding anything else is refused, and nothing in it is deleted.
set -euo pipefail
PY=${1:-python3}
OUT=${2:-wheelhouse}
TORCH_CPU_VERSION=${TORCH_CPU_VERSION:-2.13.0}
MARKER=.xraygpt-lab-wheelhouse
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [ -e "$OUT" ] && [ ! -d "$OUT" ]; then
  echo "wheelhouse: $OUT exists and is not a folder; choose another WHEELHOUSE=" >&2; exit 2
fi
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ] && [ ! -f "$OUT/$MARKER" ]; then
  echo "wheelhouse: $OUT holds other files (no $MARKER); refusing to write there." >&2
  echo "            Empty it yourself or choose another WHEELHOUSE=" >&2; exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TAG=$("$PY" -c 'import platform, sys; print(f"python {sys.version_info[0]}.{sys.version_info[1]} {platform.system()} {platform.machine()}")')
if [ -f "$OUT/$MARKER" ] && ! grep -qx "$TAG" "$OUT/$MARKER"; then
  echo "wheelhouse: $OUT was also built for: $(tr '\n' ';' < "$OUT/$MARKER") (pip picks the wheels that fit)"
fi
grep -qsx "$TAG" "$OUT/$MARKER" || echo "$TAG" >> "$OUT/$MARKER"
echo "wheelhouse: $OUT for $TAG"

# 1. PyTorch, CPU build where one can be had.
torch_wheel=$(ls "$OUT"/torch-"$TORCH_CPU_VERSION"*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$torch_wheel" ] && [ -n "${TORCH_WHEEL:-}" ]; then
  cp "$TORCH_WHEEL" "$OUT"/ && torch_wheel="$OUT/$(basename "$TORCH_WHEEL")"
fi
if [ -z "$torch_wheel" ]; then
  if "$PY" -m pip download -q --no-index --no-deps -d "$OUT" "torch==$TORCH_CPU_VERSION" 2>/dev/null; then
    echo "torch: local CPU wheel torch==$TORCH_CPU_VERSION"
  else
    [ "$(uname -s)" = Linux ] && echo "torch: no local CPU wheel; the index's Linux build is the CUDA one (large)." \
      "Set TORCH_WHEEL=<a CPU torch .whl> to use a CPU wheel instead."
    "$PY" -m pip download -q --no-deps -d "$OUT" "torch==$TORCH_CPU_VERSION"
  fi
  torch_wheel=$(ls "$OUT"/torch-*.whl | head -n 1)
fi
# The exact version in the file name (e.g. 2.13.0+cpu), so that pip cannot swap in another build.
torch_version=$(basename "$torch_wheel" | cut -d- -f2)
echo "torch: $(basename "$torch_wheel")"

# 2. The toolkit's own wheel and a wheel for every dependency (sdists are built into wheels here,
#    so the laptops need no compiler). The toolkit's wheel is rebuilt each time.
rm -f "$OUT"/xraygpt_lab-*.whl
spec="$ROOT${EXTRAS:+[$EXTRAS]}"
"$PY" -m pip wheel -q --wheel-dir "$OUT" --find-links "$OUT" "$spec" "torch==$torch_version"

count=$(ls "$OUT"/*.whl | wc -l)
size=$(du -sh "$OUT" | cut -f1)
echo "wheelhouse: $count wheels, $size in $OUT"
