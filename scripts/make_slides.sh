#!/usr/bin/env bash
# Reveal.js slides from a notebook: executes it and writes OUT/<name>.slides.html.
# Usage: VENV=.venv OUT=slides bash scripts/make_slides.sh [NOTEBOOK]
#   (default notebook: notebooks/slides_xraygpt_in_one_picture.ipynb)
#
# nbconvert's slides load reveal.js, require.js and jQuery from CDNs: such a page needs a browser
# with internet. So that the slides work in a room without network, this script keeps local
# copies in OUT/lib/ (reveal.js 4.0.2, the version nbconvert's template is written for; fetched
# once with `npm pack` from the npm registry) and points the page at them: copy the whole OUT
# folder to the presenting machine. Without npm or network, it falls back to the CDNs and says
# so; either way the page shows a note when reveal.js could not start (it then reads as one
# long page). Code cells tagged remove_input show their output only.
set -euo pipefail
VENV=${VENV:-.venv}
OUT=${OUT:-slides}
NOTEBOOK=${1:-notebooks/slides_xraygpt_in_one_picture.ipynb}
LIB="$OUT/lib"
# name@version, file inside the npm package, where it goes under LIB
ASSETS=("reveal.js@4.0.2 dist reveal.js/dist" "reveal.js@4.0.2 plugin/notes reveal.js/plugin/notes"
        "requirejs@2.1.10 require.js require.js" "jquery@2.1.4 dist/jquery.min.js jquery.min.js")

have_assets() {
  for asset in "${ASSETS[@]}"; do
    read -r _ _ target <<< "$asset"
    [ -e "$LIB/$target" ] || return 1
  done
}

fetch_assets() {  # npm pack each package into a temporary folder, copy the parts we use
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  command -v npm >/dev/null 2>&1 || { echo "npm not found"; return 1; }
  for asset in "${ASSETS[@]}"; do
    read -r package member target <<< "$asset"
    local folder="$tmp/${package//[@\/]/_}"
    if [ ! -d "$folder" ]; then
      mkdir -p "$folder"
      (cd "$folder" && npm pack --silent "$package" >/dev/null 2>&1 && tar xzf ./*.tgz) || return 1
    fi
    mkdir -p "$(dirname "$LIB/$target")"
    rm -rf "${LIB:?}/$target.part"
    cp -r "$folder/package/$member" "$LIB/$target.part" && mv "$LIB/$target.part" "$LIB/$target"
  done
}

mkdir -p "$OUT"
ARGS=()
if have_assets || fetch_assets; then
  ARGS=(--SlidesExporter.reveal_url_prefix=lib/reveal.js --SlidesExporter.require_js_url=lib/require.js
        --SlidesExporter.jquery_url=lib/jquery.min.js)
  echo "slides: reveal.js from $LIB (works offline; copy the whole $OUT folder)"
else
  echo "slides: no local reveal.js (npm or its registry unavailable): this page needs a browser with internet"
fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MPLBACKEND=Agg "$VENV/bin/jupyter" nbconvert --to slides --execute \
  --TagRemovePreprocessor.enabled=True --TagRemovePreprocessor.remove_input_tags=remove_input \
  --SlidesExporter.reveal_theme=simple --SlidesExporter.reveal_transition=none \
  "${ARGS[@]}" --log-level WARN --output-dir "$OUT" "$NOTEBOOK"
HTML="$OUT/$(basename "${NOTEBOOK%.ipynb}").slides.html"
"$VENV/bin/python" - "$HTML" <<'EOF'
import re
import sys
from pathlib import Path

NOTE = ('<div id="slides-note" style="display:none;padding:0.8em;background:#fff3cd;'
        'font-family:sans-serif">reveal.js did not start: these slides need the lib/ folder '
        'beside this file, or a browser with internet. Shown as one page.</div>\n'
        '<script>window.addEventListener("load", function () { setTimeout(function () {'
        ' var r = document.querySelector(".reveal");'
        ' if (!r || !r.classList.contains("ready"))'
        ' document.getElementById("slides-note").style.display = "block"; }, 4000); });</script>\n')
path = Path(sys.argv[1])
html = path.read_text(encoding="utf-8")
if 'id="slides-note"' not in html:
    body = re.search(r"<body[^>]*>", html)
    if body is None:
        sys.exit(f"{path}: no <body> to add the note to")
    path.write_text(html[:body.end()] + "\n" + NOTE + html[body.end():], encoding="utf-8")
EOF
figures=$(grep -c '<img[^>]*src="data:image/png' "$HTML" || true)
[ "$figures" -ge 1 ] || { echo "slides: $HTML holds no figure: did the notebook fail to draw it?" >&2; exit 1; }
echo "slides: $HTML ($(grep -c '<section' "$HTML") slides, $figures figure(s))"
