"""Run ``xraygpt-lab walkthrough`` and interrupt it at an exact checkpoint of one stage.

    python tests/interrupted_walkthrough.py STAGE N SIGNAL WHEN -- WALKTHROUGH ARGUMENTS...

sends SIGNAL (``INT``: Ctrl-C, ``KILL``: ``kill -9``) to this process when the N-th checkpoint of
STAGE (``RUN/work/<STAGE>.ckpt.safetensors``) is about to be moved into place (``WHEN=before``:
the write is cut off and its temp file left behind) or has just been (``after``). The process
signals itself so that the stage and step are exact on any machine, however loaded.
"""
from __future__ import annotations

import os
import signal
import sys

from xraygpt_lab.cli import main

stage, nth, name, when = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
number = getattr(signal, f"SIG{name}")
arguments = sys.argv[sys.argv.index("--") + 1:]
real_replace = os.replace
seen = 0


def replace(src, dst, *args, **kwargs):
    """``os.replace`` that signals at the chosen checkpoint write."""
    global seen
    ours = os.path.basename(os.fspath(dst)) == f"{stage}.ckpt.safetensors"
    seen += ours
    if ours and seen == nth and when == "before":
        os.kill(os.getpid(), number)
    real_replace(src, dst, *args, **kwargs)
    if ours and seen == nth and when == "after":
        os.kill(os.getpid(), number)


os.replace = replace
# A parent that ignores SIGINT (a shell's background job, or a test before this one that set
# SIG_IGN in the pytest process) passes the ignore on, and Python then installs no
# KeyboardInterrupt handler: restore it, so that Ctrl-C is tested however the suite was started.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(main(["walkthrough", *arguments]))
