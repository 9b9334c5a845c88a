#!/usr/bin/env bash
# Serve the chat panel (xraygpt_lab.widgets.ChatPanel) as a standalone web page with Voilà, for
# workshops: no code cells, no browser opened here; prints the URL.
#
#   bash scripts/serve_chat.sh                      # the reference run, http://127.0.0.1:8866/
#   PORT=9000 bash scripts/serve_chat.sh            # another port
#   XRAYGPT_CHAT_RUN=runs/full bash scripts/serve_chat.sh        # another run folder
#   XRAYGPT_CHAT_DATASET=data/room bash scripts/serve_chat.sh    # the images the page offers
#   IP=0.0.0.0 bash scripts/serve_chat.sh           # reachable from the room: a token is required
#
# The page opens only files inside XRAYGPT_CHAT_DATASET (default: a held-out synthetic set written
# once to data/workshop), uploads and synthetic cases; any other server path is refused.
# Bound to anything but localhost, the server requires a token: XRAYGPT_CHAT_TOKEN, or a random
# one printed in the URL to share. Without XRAYGPT_CHAT_RUN the page opens the reference run shipped
# with the toolkit; an install without it trains the tiny run first (a few minutes, once), so that
# the page itself loads in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${PORT:-8866}
IP=${IP:-127.0.0.1}
PY="$VENV/bin/python"

# the run: XRAYGPT_CHAT_RUN (a folder, or "reference"), else the reference run shipped with the
# toolkit, else the tiny run (trained once); resolved here so that the page loads in seconds
XRAYGPT_CHAT_RUN=$("$PY" -c 'import sys
from xraygpt_lab.widgets.app import chat_run
print(chat_run(log=lambda message: print(message, file=sys.stderr)))')
# the page's kernel runs in the app's folder: hand it absolute paths (relative = to the repository)
XRAYGPT_CHAT_RUN=$(realpath -m "$XRAYGPT_CHAT_RUN")
XRAYGPT_CHAT_DATASET=$("$PY" -c 'from xraygpt_lab.widgets.app import workshop_data
print(workshop_data())')
export XRAYGPT_CHAT_RUN XRAYGPT_CHAT_DATASET

TOKEN_ARGS=()
case "$IP" in
    127.0.0.1|localhost|::1) ;;
    *)
        XRAYGPT_CHAT_TOKEN=${XRAYGPT_CHAT_TOKEN:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(12))')}
        if [ ${#XRAYGPT_CHAT_TOKEN} -lt 8 ]; then
            echo "xraygpt-lab chat: XRAYGPT_CHAT_TOKEN must have at least 8 characters" >&2
            exit 2
        fi
        TOKEN_ARGS=(--token="$XRAYGPT_CHAT_TOKEN")
        ;;
esac

echo "xraygpt-lab chat: model ${XRAYGPT_CHAT_RUN}"
echo "xraygpt-lab chat: images offered from ${XRAYGPT_CHAT_DATASET} (plus uploads)"
if [ ${#TOKEN_ARGS[@]} -gt 0 ]; then
    echo "xraygpt-lab chat: open http://<this machine's address>:${PORT}/?token=${XRAYGPT_CHAT_TOKEN} (Ctrl-C stops the server)"
else
    echo "xraygpt-lab chat: open http://${IP}:${PORT}/ in a browser (Ctrl-C stops the server)"
fi
exec "$VENV/bin/voila" xraygpt_lab/widgets/chat_app.ipynb --no-browser --port="$PORT" \
    --Voila.ip="$IP" --theme=light --show_tracebacks=False "${TOKEN_ARGS[@]}"
