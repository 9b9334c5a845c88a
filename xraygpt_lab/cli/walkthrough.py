"""``xraygpt-lab walkthrough``: train the whole XrayGPT recipe into a run folder (resumable)."""
from __future__ import annotations

from pathlib import Path

from xraygpt_lab.cli._common import add_device_argument, non_negative_int


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
                   help="the tiny recipe with more data and steps (config.TINY_LONG; ~25-40 min on 2 cores)")
    p.add_argument("--set", dest="overrides", action="append", default=[], type=_setting, metavar="KEY=VALUE",
                   help="replace one setting of the recipe (repeatable), e.g. --set encoder_steps=4800; "
                        "the keys are the flat names of xraygpt_lab.recipe (an unknown key lists them)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device_argument(p)
    p.set_defaults(func=run)


def _setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE``, parsed and checked by ``recipe.parse_setting``."""
    import argparse

    from xraygpt_lab.recipe import RecipeError, parse_setting

    try:
        return parse_setting(text)
    except RecipeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _recipe(args):
    """The profile's recipe (``config.TINY_LONG`` with ``--long``) with the ``--set`` settings."""
    from xraygpt_lab.config import TINY_LONG, get_profile

    base = TINY_LONG if args.long else get_profile(args.profile).recipe
    return base.override(dict(args.overrides))


def run(args) -> int:
    import time

    from xraygpt_lab.train.walkthrough import run_walkthrough

    start = time.perf_counter()
    metrics = run_walkthrough(args.out, args.profile, seed=args.seed, log=lambda m: print(m, flush=True),
                              recipe=_recipe(args), progress=not args.quiet, device=args.device)
    print(f"run folder: {args.out}  (total {time.perf_counter() - start:.0f} s this call; "
          f"metrics in {args.out / 'metrics.json'})")
    return 0 if metrics else 1
