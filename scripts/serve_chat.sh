#!/usr/bin/env bash
# Serve the chat panel (xraygpt_lab.widgets.ChatPanel) as a standalone web page with Voilà, for
# workshops: no code cells, no browser opened here; prints the URL.
#
#   bash scripts/serve_chat.sh                      # the tiny run, http://127.0.0.1:8866/
#   PORT=9000 bash scripts/serve_chat.sh            # another port
#   XRAYGPT_CHAT_RUN=runs/full bash scripts/serve_chat.sh   # another run folder
#   IP=0.0.0.0 bash scripts/serve_chat.sh           # reachable from the room (no login: trusted networks only)
#
# Without XRAYGPT_CHAT_RUN the tiny run is trained first when it is absent (a few minutes, once),
# so that the page itself loads in seconds. XRAYGPT_CHAT_DATASET pre-fills the dataset browser.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${PORT:-8866}
IP=${IP:-127.0.0.1}
PY="$VENV/bin/python"

if [ -z "${XRAYGPT_CHAT_RUN:-}" ]; then
    XRAYGPT_CHAT_RUN=$("$PY" -c 'import sys
from xraygpt_lab.runs import ensure_tiny_run
print(ensure_tiny_run(log=lambda message: print(message, file=sys.stderr)))')
fi
# the page's kernel runs in the app's folder: hand it an absolute path (relative = to the repository)
XRAYGPT_CHAT_RUN=$(realpath -m "$XRAYGPT_CHAT_RUN")
export XRAYGPT_CHAT_RUN
if [ -n "${XRAYGPT_CHAT_DATASET:-}" ]; then
    XRAYGPT_CHAT_DATASET=$(realpath -m "$XRAYGPT_CHAT_DATASET")
    export XRAYGPT_CHAT_DATASET
fi

echo "xraygpt-lab chat: model ${XRAYGPT_CHAT_RUN}"
echo "xraygpt-lab chat: open http://${IP}:${PORT}/ in a browser (Ctrl-C stops the server)"
exec "$VENV/bin/voila" xraygpt_lab/widgets/chat_app.ipynb --no-browser --port="$PORT" \
    --Voila.ip="$IP" --theme=light --show_tracebacks=False
