"""Small helpers shared by sub-command modules."""
from __future__ import annotations

import argparse
from typing import Callable, TypeVar

T = TypeVar("T")


def checked(convert: Callable[[str], T], valid: Callable[[T], bool], expected: str) -> Callable[[str], T]:
    """An argparse type: ``convert(text)`` that also passes ``valid``; otherwise one line saying
    ``expected <expected>, got <text>`` (NaN fails every comparison, so it is refused too)."""
    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


#: argparse type: an integer >= 1.
positive_int = checked(int, lambda v: v >= 1, "a whole number >= 1")
#: argparse type: an integer >= 0.
non_negative_int = checked(int, lambda v: v >= 0, "a whole number >= 0")
#: argparse type: a real number >= 0 (not NaN).
non_negative_float = checked(float, lambda v: v >= 0, "a number >= 0")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``: where the model runs (``xraygpt_lab.device``: CUDA when present, else the CPU)."""
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="cpu, cuda or cuda:N (default: $XRAYGPT_DEVICE, else cuda when present, else cpu)")


def add_run_argument(parser: argparse.ArgumentParser, required: bool = False, what: str = "run folder") -> None:
    """``--run``: a run folder, or ``reference`` for the run shipped with the toolkit (read by
    ``runs.resolve_run``, the one place that knows the name; ``./reference`` is a folder of that name)."""
    default = "" if required else " (default: $XRAYGPT_LAB_RUN, else runs/tiny)"
    parser.add_argument("--run", default=None, required=required, metavar="RUN",
                        help=f"{what}, or 'reference' for the reference run shipped with the toolkit{default}")
