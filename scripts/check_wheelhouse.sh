#!/usr/bin/env bash
# Build a wheelhouse in a new temporary folder, install the toolkit from it into a fresh venv
# with no package index (and, where `unshare -n` works, no network at all), then run a smoke
# check in that venv. Removes only the temporary folder it made. Prints each step's time.
# Usage: bash scripts/check_wheelhouse.sh [PYTHON]   (default: python3)
set -euo pipefail
PY=${1:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/xraygpt-lab-wheelhouse-check.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
step_start=$SECONDS
step() { echo "[wheelhouse check] $1: $((SECONDS - step_start)) s"; step_start=$SECONDS; }

bash "$ROOT/scripts/make_wheelhouse.sh" "$PY" "$TMP/wheelhouse"
step "build"

# Runs "$@" in a new network namespace with only the loopback interface (Jupyter's kernels talk
# over it) where unshare and ip allow it, else as is.
if unshare -n sh -c 'ip link set lo up' 2>/dev/null; then
  offline() { unshare -n sh -c 'ip link set lo up && exec "$0" "$@"' "$@"; }
else
  echo "no network namespace here: offline by --no-index only"
  offline() { "$@"; }
fi

"$PY" -m venv "$TMP/venv"
# No index and no pip configuration (a configured find-links would otherwise still be read):
# only the wheelhouse can serve the install.
offline env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
  "$TMP/venv/bin/python" -m pip install -q --disable-pip-version-check --no-index \
  --find-links "$TMP/wheelhouse" xraygpt-lab
step "offline install"

cd "$TMP"  # away from the repository, so the import below is the installed package
"$TMP/venv/bin/xraygpt-lab" --help >/dev/null
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$TMP/venv/bin/python" -c "
import torch, xraygpt_lab
assert xraygpt_lab.__file__.startswith('$TMP/venv'), xraygpt_lab.__file__
assert torch.version.cuda is None, f'a CUDA build of torch: {torch.__version__}'
print('import ok: xraygpt_lab', xraygpt_lab.__version__, '| torch', torch.__version__)"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} offline "$TMP/venv/bin/xraygpt-lab" synth --n 4 \
  --workers 1 --out "$TMP/synth" --quiet
test "$(ls "$TMP/synth/image" | wc -l)" -eq 4
echo "synth ok: 4 images"
# Notebook 00 top to bottom with the venv's own Jupyter, as a laptop would open it.
cp "$ROOT/notebooks/00_synthetic_world.ipynb" "$TMP/"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MPLBACKEND=Agg offline "$TMP/venv/bin/jupyter" nbconvert \
  --to notebook --execute --log-level WARN --output "$TMP/00_executed.ipynb" "$TMP/00_synthetic_world.ipynb"
echo "notebook 00 ok"
step "smoke check"
echo "[wheelhouse check] venv size: $(du -sh "$TMP/venv" | cut -f1)"
