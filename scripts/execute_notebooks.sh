#!/usr/bin/env bash
# Re-execute notebooks in place from their reviewed .py sources (make notebooks).
#   scripts/execute_notebooks.sh [VENV] [NAME ...]   (names without extension; default: every notebook)
# Each .ipynb first takes the cells of its paired .py (jupytext --update keeps nothing stale), then
# runs top to bottom on the tiny profile. MPLBACKEND is unset: a non-inline backend drops figures.
set -euo pipefail
VENV=${1:-.venv}
shift || true
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then
  set -- $(ls notebooks/*.py | xargs -n1 basename | sed 's/\.py$//')
fi
for name in "$@"; do
  source="notebooks/$name.py"
  [ -f "$source" ] || { echo "no $source" >&2; exit 2; }
  "$VENV/bin/jupytext" --quiet --update --to ipynb "$source"
  start=$(date +%s)
  log=$(mktemp "${TMPDIR:-/tmp}/execute-$name.XXXXXX")
  env -u MPLBACKEND XRAYGPT_PROFILE=tiny "$VENV/bin/jupyter" nbconvert --to notebook --execute --inplace \
    --ExecutePreprocessor.timeout=900 "notebooks/$name.ipynb" 2> "$log" \
    || { echo "$name failed; its log: $log" >&2; exit 1; }
  rm -f "$log"
  echo "$name: $(( $(date +%s) - start )) s, $(( $(stat -c %s "notebooks/$name.ipynb") / 1024 )) KB"
done
