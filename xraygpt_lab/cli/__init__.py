"""The ``xraygpt-lab`` command: the scripted face of the functions the notebooks call.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds a parser whose ``func(args) -> int | None`` runs
it. Modules are discovered automatically, so adding a command touches one file only.
Heavy imports (torch, transformers) belong inside ``func`` so that ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from xraygpt_lab.errors import XrayGPTLabError

PROG = "xraygpt-lab"


class OneLineParser(argparse.ArgumentParser):
    """argparse parser whose errors are a single line on stderr and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command module of this package."""
    from xraygpt_lab import __version__

    parser = OneLineParser(prog=PROG, description="Rebuild, train, chat with and explain XrayGPT.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
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
    try:
        status = args.func(args)
    except (XrayGPTLabError, ValueError, FileNotFoundError, NotADirectoryError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)
