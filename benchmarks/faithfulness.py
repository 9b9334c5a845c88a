"""Faithfulness of every explanation method on ≥ 100 held-out synthetic positives.

For each localized observation (Pleural Effusion, Pneumothorax, Lung Lesion, Consolidation,
Atelectasis) the first ``n`` held-out phantoms that have it (``interpret.localization``, seed
3000, never trained on) are explained with every method of ``DEFAULT_METHODS``: the target is the
log-probability of the observation's phrase inside the image's ground-truth summary, teacher-forced
after "Describe the given chest x-ray image in detail.". The phrase is the finding's whole noun
phrase, size or severity included (e.g. "moderate left pleural effusion", "15 mm nodule in the
right upper lung"; ``localization.PHRASE_PATTERNS``).
Each map is scored by the pointing game (tolerance 4 px at 128 px, Zhang et al. 2018), energy in
the mask, and (``--curves``) deletion / insertion AUCs, beside a random map.

Goal: the best method's pointing game ≥ 0.80 over all positives, well above random. The default
is 60 positives per observation (300): one draw of 100 moves the pointing game by ± 0.04
(binomial), so 300 pins it to ± 0.023. Also reported (``pointing_by_reliance``): each method's
pointing game on the positives whose phrase the model writes *because of* the finding
(counterfactual gain > 0.5 nats) and on the rest — a faithful map cannot point at a lesion the
model ignores.

Writes ``runs/faithfulness_<run name>.json`` (read by notebook 05) and returns the tables as a dict.

Run:  ``python benchmarks/faithfulness.py [--n 60] [--curves] [--seed 5000]``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL = 0.80


def result_path(run_dir: Path) -> Path:
    """Where the tables of ``run_dir`` are saved (``runs.results_file``: beside the run, in the
    git-ignored ``runs/``; for the packaged reference, in ``runs/`` too)."""
    from xraygpt_lab.runs import results_file

    return results_file(run_dir, "faithfulness")


#: The fast methods (≈ 2 s per positive on one core); ``--all-methods`` adds occlusion, GradientShap
#: and 32-step IG / layer IG (≈ 5 s per positive).
FAST_METHODS: dict[str, dict] = {
    "ig": {"baseline": "blur", "n_steps": 16}, "smoothgrad": {}, "saliency": {}, "gradcam": {},
    "layer_ig": {"baseline": "blur", "n_steps": 16}, "attention": {}, "grad_rollout": {},
}


#: Always run, with the library's settings: the recommended IG (``attribution.RECOMMENDED_IG``,
#: gated by the feature IG), its two parts, and the ungated IG over two baselines it replaced.
RECOMMENDED = ("ig_gated", "ig_blur_black", "feature_ig")


#: Positives per observation of the saved table (5 observations → 300).
N_PER_OBSERVATION = 60


def run(n_per_observation: int = N_PER_OBSERVATION, curves: bool = False, run_dir: str | None = None, save: bool = True,
        all_methods: bool = False, seed: int | None = None, log=print) -> dict:
    """Explain ``5 × n_per_observation`` positives; returns ``{"pointing": {method: {obs: rate}}, ...}``.

    ``seed``: draw the positives from another held-out seed (a confirmation set for settings chosen
    on the default one); the saved table is the default seed's only."""
    import torch

    from xraygpt_lab.interpret.faithfulness import (RELIANCE_NATS, default_tolerance, faithfulness_table,
                                                    reliance_table, summary_table)
    from xraygpt_lab.interpret.localization import (DEFAULT_METHODS, HELD_OUT_SEED, PHRASE_PATTERNS, best_method,
                                                    evaluate_positives, held_out_positives, mask_area)
    from xraygpt_lab.runs import ensure_tiny_run, load_run, resolve_run

    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = resolve_run(run_dir) if run_dir else ensure_tiny_run()
    model = load_run(path)
    size = model.encoder.config.image_size
    seed = HELD_OUT_SEED if seed is None else seed
    config = path / "config.json"
    used = set(json.loads(config.read_text()).get("seeds", {}).values()) if config.is_file() else set()
    if seed in used:
        raise ValueError(f"seed {seed} is one of this run's training / evaluation seeds {sorted(used)}; pick another")
    pairs = held_out_positives(n_per_observation, size, seed=seed)
    save = save and seed == HELD_OUT_SEED
    start = time.perf_counter()
    methods = DEFAULT_METHODS if all_methods else {k: DEFAULT_METHODS[k] for k in RECOMMENDED} | FAST_METHODS
    rows = evaluate_positives(model, pairs, methods, curves=curves, log=log)
    seconds = time.perf_counter() - start
    tables = {"pointing": faithfulness_table(rows, "pointing"), "energy": faithfulness_table(rows, "energy")}
    if curves:
        tables["deletion_auc"] = faithfulness_table(rows, "deletion_auc")
        tables["insertion_auc"] = faithfulness_table(rows, "insertion_auc")
    best = best_method(tables["pointing"])
    result = {
        "run": str(path), "n_positives": len(pairs), "n_per_observation": n_per_observation,
        "held_out_seed": seed, "image_size": size, "tolerance_px": default_tolerance(size),
        "phrase_patterns": PHRASE_PATTERNS,
        "methods": methods, "best_method": best, "best_pointing": float(tables["pointing"].loc[best, "all"]),
        "random_pointing": float(tables["pointing"].loc["random", "all"]), "goal": GOAL,
        "mask_area": mask_area(pairs), "seconds": round(seconds, 1),
        "score_change": _score_change(rows),
        # pointing where the model's phrase depends on the finding (gain > RELIANCE_NATS) vs not
        "reliance_nats": RELIANCE_NATS,
        "pointing_by_reliance": reliance_table(rows).round(4).to_dict(orient="index"),
        "summary": summary_table(rows).round(4).to_dict(orient="index"),
        **{name: table.round(4).to_dict(orient="index") for name, table in tables.items()},
    }
    result["passed"] = result["best_pointing"] >= GOAL
    if save:
        target = result_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(result, handle, indent=2)
        os.replace(tmp, target)
        result["saved_to"] = str(target)
    return result


def _score_change(rows: list[dict]) -> dict[str, float]:
    """Mean log-probability gain of the phrase from adding the finding (counterfactual), per observation."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame = frame[frame["method"] == "random"]  # one row per case
    return {obs: round(float(v), 4) for obs, v in frame.groupby("observation")["score_change"].mean().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N_PER_OBSERVATION,
                        help=f"positives per observation (default {N_PER_OBSERVATION} → {5 * N_PER_OBSERVATION})")
    parser.add_argument("--curves", action="store_true", help="also deletion / insertion AUCs (slower)")
    parser.add_argument("--run", default=None, help="run folder (default: the tiny run)")
    parser.add_argument("--all-methods", action="store_true", help="add occlusion, GradientShap, 32-step IG")
    parser.add_argument("--seed", type=int, default=None,
                        help="held-out seed of the positives (default 3000; another one is a confirmation set, not saved)")
    args = parser.parse_args()
    result = run(args.n, args.curves, args.run, all_methods=args.all_methods, seed=args.seed)
    import pandas as pd

    print(pd.DataFrame(result["pointing"]).T.to_string(float_format=lambda v: f"{v:.2f}"))
    print("phrase log-prob gain from the finding (counterfactual):", result["score_change"])
    print(f"pointing where the model uses the finding (gain > {result['reliance_nats']} nats) vs where it does not:")
    print(pd.DataFrame(result["pointing_by_reliance"]).T.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"best: {result['best_method']} pointing {result['best_pointing']:.2f} vs random "
          f"{result['random_pointing']:.3f} on {result['n_positives']} positives "
          f"(goal >= {GOAL}; {'passed' if result['passed'] else 'NOT passed'}; {result['seconds']} s)")


if __name__ == "__main__":
    main()
