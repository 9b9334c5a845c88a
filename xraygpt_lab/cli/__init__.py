"""The ``xraygpt-lab`` command: the scripted face of the functions the notebooks call.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds a parser whose ``func(args) -> int | None`` runs
it. Modules are discovered automatically, so adding a command touches one file only.
Heavy imports (torch, transformers) belong inside ``func`` so that ``--help`` stays fast.

Errors: an error the user can act on (``XrayGPTLabError``, ``ValueError``, ``OSError``) prints
one line ``xraygpt-lab: error: …`` and exits 2; anything unexpected prints one line with a hint
and exits 1. ``--debug`` (or ``XRAYGPT_DEBUG=1``) adds the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence

from xraygpt_lab.errors import XrayGPTLabError

PROG = "xraygpt-lab"
DEBUG_ENV = "XRAYGPT_DEBUG"

#: Errors caused by what the user typed or pointed at: one line, exit status 2.
USER_ERRORS = (XrayGPTLabError, ValueError, OSError)


class OneLineParser(argparse.ArgumentParser):
    """argparse parser whose errors are a single line on stderr and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command module of this package."""
    from xraygpt_lab import __version__

    parser = OneLineParser(prog=PROG, description="Rebuild, train, chat with and explain XrayGPT.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (same as {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        _report(exc, debug, hint="")
        return 2
    except Exception as exc:  # a bug, not the user's input: one line, the traceback on request
        _report(exc, debug, hint=f" (an unexpected {type(exc).__name__}; run again with --debug or "
                                 f"{DEBUG_ENV}=1 for the traceback, and please report it)")
        return 1
    return int(status or 0)


def _report(exc: BaseException, debug: bool, hint: str) -> None:
    """``xraygpt-lab: error: <first line of the message><hint>``, after the traceback when debugging."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    text = str(exc).strip()
    message = text.splitlines()[0] if text else type(exc).__name__
    print(f"{PROG}: error: {message}{hint}", file=sys.stderr)
