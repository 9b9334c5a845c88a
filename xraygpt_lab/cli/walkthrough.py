"""``xraygpt-lab walkthrough``: train the whole XrayGPT recipe into a run folder (resumable)."""
from __future__ import annotations

from pathlib import Path

from xraygpt_lab.cli._common import add_device_argument, non_negative_int
from xraygpt_lab.config import STAGE1_INITS


def register(subparsers) -> None:
    """Add the ``walkthrough`` sub-command."""
    p = subparsers.add_parser(
        "walkthrough", help="train the whole recipe (synthetic data → encoder → LLM → stage 1 → stage 2 → eval)",
        description="Synthetic data → MedCLIP-style encoder pretraining → LLM domain fine-tuning → "
                    "alignment stage 1 → stage 2 → evaluation on an unseen seed. Writes a self-contained "
                    "run folder (config.json, encoder/, llm/, projection.safetensors, history.json, "
                    "metrics.json). Re-running after an interruption resumes.")
    p.add_argument("--profile", choices=["tiny"], default="tiny", help="size profile (tiny: CPU, minutes)")
    p.add_argument("--out", type=Path, required=True, help="run folder to write (created if missing)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--long", action="store_true",
                   help="the tiny recipe with more data and steps (config.TINY_LONG_OVERRIDES; ~25-40 min on 2 cores)")
    p.add_argument("--set", dest="overrides", action="append", default=[], type=_override, metavar="KEY=VALUE",
                   help="replace one training setting of the profile (repeatable), e.g. --set encoder_steps=4800; "
                        "the keys are those of config.json's \"train\" entry")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device_argument(p)
    p.set_defaults(func=run)


def _overrides(args) -> dict | None:
    from xraygpt_lab.config import TINY_LONG_OVERRIDES

    merged = {**(TINY_LONG_OVERRIDES if args.long else {}), **dict(args.overrides)}
    return merged or None


#: Settings with a fixed set of values (the others are typed by their default).
CHOICES: dict[str, tuple] = {"encoder_bf16": (True, False, "auto"), "stage1_init": STAGE1_INITS}


def _override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with a JSON value (numbers, true/false) or a bare string."""
    import argparse
    import json

    from xraygpt_lab.config import TINY_TRAIN

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key not in TINY_TRAIN:
        raise argparse.ArgumentTypeError(f"unknown training setting {key!r}; choose from {', '.join(sorted(TINY_TRAIN))}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    default = TINY_TRAIN[key]
    if key in CHOICES:
        if not any(type(parsed) is type(choice) and parsed == choice for choice in CHOICES[key]):  # 1 is not True
            raise argparse.ArgumentTypeError(f"{key} takes one of {', '.join(map(json.dumps, CHOICES[key]))}, "
                                             f"got {value!r}")
        return key, parsed
    if isinstance(default, bool):
        if not isinstance(parsed, bool):
            raise argparse.ArgumentTypeError(f"{key} takes true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        if isinstance(parsed, bool) or not isinstance(parsed, (int, float)):
            raise argparse.ArgumentTypeError(f"{key} takes a number, got {value!r}")
        if isinstance(default, int) and not isinstance(parsed, int):
            raise argparse.ArgumentTypeError(f"{key} takes an integer, got {value!r}")
        if parsed < 0:
            raise argparse.ArgumentTypeError(f"{key} must be >= 0, got {value!r}")
    return key, parsed


def run(args) -> int:
    import time

    from xraygpt_lab.train.walkthrough import run_walkthrough

    start = time.perf_counter()
    metrics = run_walkthrough(args.out, args.profile, seed=args.seed, log=lambda m: print(m, flush=True),
                              overrides=_overrides(args), progress=not args.quiet, device=args.device)
    print(f"run folder: {args.out}  (total {time.perf_counter() - start:.0f} s this call; "
          f"metrics in {args.out / 'metrics.json'})")
    return 0 if metrics else 1
