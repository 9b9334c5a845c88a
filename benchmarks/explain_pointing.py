"""The pointing game as a user meets it: ``explain IMAGE --phrase "pleural effusion"``.

For ``n`` held-out positives of each localized observation (``interpret.localization``, never
trained on) the run is given only the image and a plain finding name — "pleural effusion",
"pneumothorax", "consolidation", "atelectasis", "nodule" or "mass" (the lesion's own kind) — and
does what ``xraygpt-lab explain`` does: writes its report, finds the finding's whole noun phrase in
it (or in its answer to the finding's yes/no question; ``interpret.phrases``), and explains that
phrase with the recommended IG (``attribution.RECOMMENDED_IG``, 32 steps). A hit is the map's peak
within 4 px (at 128 px) of the finding's mask (Zhang et al. 2018).

Reported overall and per observation: the pointing game, how often the model wrote the finding,
the pointing game on those, and the random map's expected rate. Goal: ≥ 0.85 for the reference run.

Run:  ``python benchmarks/explain_pointing.py [--run reference] [--n 60] [--seed 5000]``
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL = 0.85

#: The plain name a user types for each observation (a lung lesion: its kind, "nodule" or "mass").
NAMES = {"Pleural Effusion": "pleural effusion", "Pneumothorax": "pneumothorax", "Consolidation": "consolidation",
         "Atelectasis": "atelectasis"}


def plain_name(case, observation: str) -> str:
    """What a user would type for ``observation`` on ``case``."""
    if observation == "Lung Lesion":
        return next(f.detail["kind"] for f in case.findings if f.observation == observation)
    return NAMES[observation]


def _rates(rows: list[dict]) -> dict:
    written = [r for r in rows if r["written"]]
    return {"n": len(rows), "pointing": round(sum(r["hit"] for r in rows) / len(rows), 3),
            "written": round(len(written) / len(rows), 3),
            "pointing_when_written": round(sum(r["hit"] for r in written) / len(written), 3) if written else None,
            "random": round(sum(r["random"] for r in rows) / len(rows), 3)}


def run(n_per_observation: int = 60, run_dir: str | None = None, seed: int | None = None, log=print) -> dict:
    """Explain ``5 × n_per_observation`` positives from their plain names; returns the tables."""
    import torch

    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.interpret.attribution import explain
    from xraygpt_lab.interpret.faithfulness import default_tolerance, pointing_hit, random_pointing_rate
    from xraygpt_lab.interpret.localization import DEFAULT_METHODS, HELD_OUT_SEED, held_out_positives
    from xraygpt_lab.interpret.phrases import resolve_phrase
    from xraygpt_lab.interpret.targets import phrase_target
    from xraygpt_lab.runs import ensure_tiny_run, load_run, resolve_run

    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = resolve_run(run_dir) if run_dir else ensure_tiny_run()
    model = load_run(path)
    size = model.encoder.config.image_size
    tolerance = default_tolerance(size)
    seed = HELD_OUT_SEED if seed is None else seed
    settings = dict(DEFAULT_METHODS["ig_gated"])  # the recommended IG, as `explain --method ig` runs it
    method = settings.pop("method")
    rows: list[dict] = []
    start = time.perf_counter()
    pairs = held_out_positives(n_per_observation, size, seed=seed)
    for i, (case, obs) in enumerate(pairs):
        pixels = preprocess(case.image, size)[None]  # [1, 1, S, S]
        resolved = resolve_phrase(model, pixels, plain_name(case, obs))
        target = phrase_target(model, resolved.phrase, resolved.answer, resolved.instruction)
        torch.manual_seed(i)
        saliency = explain(target, pixels, method, **settings).map  # [S, S]
        mask = case.masks[obs]
        rows.append({"case": case.image_id, "observation": obs, "asked": resolved.asked, "phrase": resolved.phrase,
                     "source": resolved.source, "written": resolved.written,
                     "hit": pointing_hit(saliency, mask, tolerance), "random": random_pointing_rate(mask, tolerance)})
        if log is not None and (i + 1) % 25 == 0:
            log(f"{i + 1}/{len(pairs)} explained; pointing so far {_rates(rows)['pointing']}")
    observations = sorted({r["observation"] for r in rows})
    result = {"run": str(path), "held_out_seed": seed, "n_per_observation": n_per_observation, "method": "ig",
              "settings": settings, "tolerance_px": tolerance, "goal": GOAL,
              "all": _rates(rows), **{o: _rates([r for r in rows if r["observation"] == o]) for o in observations},
              "seconds": round(time.perf_counter() - start, 1),
              "examples": [{k: r[k] for k in ("observation", "asked", "phrase", "source", "hit")} for r in rows[::25]]}
    result["passed"] = result["all"]["pointing"] >= GOAL
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="positives per observation (default 60: 300 in all)")
    parser.add_argument("--run", default=None, help="run folder or 'reference' (default: the tiny run)")
    parser.add_argument("--seed", type=int, default=None, help="held-out seed (default: the localization set's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(args.n, args.run, args.seed)
    print(f"{'observation':<18} {'pointing':>9} {'written':>8} {'hit|written':>12} {'random':>7}")
    for key in ["all", *sorted(k for k in result if k[:1].isupper())]:
        r = result[key]
        print(f"{key:<18} {r['pointing']:>9} {r['written']:>8} {r['pointing_when_written']!s:>12} {r['random']:>7}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
