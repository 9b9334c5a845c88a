"""``xraygpt-lab walkthrough``: train the whole XrayGPT recipe into a run folder (resumable)."""
from __future__ import annotations

from pathlib import Path

from xraygpt_lab.cli._common import add_device_argument, non_negative_int, positive_int


def register(subparsers) -> None:
    """Add the ``walkthrough`` sub-command."""
    p = subparsers.add_parser(
        "walkthrough", help="train the whole recipe (synthetic data → encoder → LLM → stage 1 → stage 2 → eval)",
        description="Synthetic data → MedCLIP-style encoder pretraining → LLM domain fine-tuning → "
                    "alignment stage 1 → stage 2 → evaluation on an unseen seed. Writes a self-contained "
                    "run folder (config.json, encoder/, llm/, projection.safetensors, history.json, "
                    "metrics.json). Re-running after an interruption resumes; a second walkthrough into the "
                    "same folder waits for the first.")
    p.add_argument("--profile", choices=["tiny"], default="tiny", help="size profile (tiny: CPU, minutes)")
    p.add_argument("--out", type=Path, required=True, help="run folder to write (created if missing)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--long", action="store_true",
                   help="the tiny recipe with more data and steps (config.TINY_LONG; about an hour on 2 cores)")
    p.add_argument("--set", dest="overrides", action="append", default=[], type=_setting, metavar="KEY=VALUE",
                   help="replace one setting of the recipe (repeatable), e.g. --set encoder_steps=4800; "
                        "the keys are the flat names of xraygpt_lab.recipe (an unknown key lists them)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--save-every", type=positive_int, default=None, metavar="N",
                   help="checkpoint each training stage every N steps (default 50); an interruption loses "
                        "at most N steps, the weights do not depend on it")
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

    from xraygpt_lab.run_folder import run_lock
    from xraygpt_lab.train.walkthrough import SAVE_EVERY, run_walkthrough, walkthrough_recipe

    def say(message: str) -> None:
        print(message, flush=True)

    start = time.perf_counter()
    recipe = walkthrough_recipe(args.profile, recipe=_recipe(args))  # refused before the lock or any file
    with run_lock(args.out, on_wait=lambda: say(f"another walkthrough is writing to {args.out}; waiting for it")):
        metrics = run_walkthrough(args.out, args.profile, seed=args.seed, log=say, recipe=recipe,
                                  progress=not args.quiet, device=args.device,
                                  save_every=args.save_every or SAVE_EVERY)
    if metrics and args.profile == "tiny" and not args.long:
        for line in beside_reference(metrics):
            say(line)
    say(f"run folder: {args.out}  (total {time.perf_counter() - start:.0f} s this call{_resumed(metrics)}; "
        f"metrics in {args.out / 'metrics.json'})")  # the last line: what this call did
    return 0 if metrics else 1


#: (label, key path in metrics.json, format) of the side-by-side table.
COMPARED = (("CE macro-F1 vs true labels", ("vs_ground_truth", "ce_f1_macro"), "{:.3f}"),
            ("ROUGE-L", ("rougeL",), "{:.3f}"),
            ("image-blind CE macro-F1", ("baselines", "image_blind", "ce_f1_macro"), "{:.3f}"),
            ("reports repeating themselves", ("repetition_rate",), "{:.3f}"),
            ("reports contradicting themselves", ("contradiction_rate",), "{:.3f}"),
            ("sided findings on the reference's side", ("side_agreement",), "{:.3f}"),
            ("graded findings of the reference's grade", ("grade_agreement",), "{:.3f}"))
#: Width of the label column: the longest label, so that the numbers line up.
WIDTH = max(len(label) for label, _, _ in COMPARED)


def beside_reference(metrics: dict, reference: dict | None = None) -> list[str]:
    """Lines setting a finished run's scores beside the shipped reference run's ("what more
    training buys"); empty when this install has no reference. The reference's training time is
    read from its own ``timings_s``."""
    import json

    if reference is None:
        from xraygpt_lab.errors import XrayGPTLabError
        from xraygpt_lab.runs import reference_run

        try:
            reference = json.loads((reference_run() / "metrics.json").read_text())
        except (XrayGPTLabError, OSError, ValueError):
            return []

    def value(table: dict, path: tuple[str, ...]) -> float | None:
        for key in path:
            table = table.get(key) if isinstance(table, dict) else None
        return table if isinstance(table, (int, float)) else None

    same = metrics.get("eval_seed") is not None and metrics.get("eval_seed") == reference.get("eval_seed")
    films = (f"the same {metrics.get('n', '?')} held-out films (seed {metrics['eval_seed']})" if same
             else "each on its own held-out films")
    stage_seconds = [v for v in (reference.get("timings_s") or {}).values() if isinstance(v, (int, float))]
    trained = f"trained about {round(sum(stage_seconds) / 60)} minutes" if stage_seconds else "trained longer"
    lines = [f"beside the reference run (the same recipe {trained}, walkthrough --long), {films}:",
             f"  {'':{WIDTH}}{'this run':>10}{'reference':>11}"]
    for label, path, fmt in COMPARED:
        ours, theirs = value(metrics, path), value(reference, path)
        show = lambda v: "—" if v is None else fmt.format(v)  # noqa: E731
        lines.append(f"  {label:{WIDTH}}{show(ours):>10}{show(theirs):>11}")
    return lines


def _resumed(metrics: dict) -> str:
    """``; resumed encoder from step 50, …; repaired 1 unreadable file`` for the summary line."""
    resumed = ", ".join(f"{stage} from step {steps[-1]}" for stage, steps in metrics.get("resumed", {}).items())
    repaired = len(metrics.get("repaired", []))
    return (f"; resumed {resumed}" if resumed else "") + \
        (f"; discarded and remade {repaired} unreadable file(s)" if repaired else "")
