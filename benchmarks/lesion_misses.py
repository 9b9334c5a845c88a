"""Where a run's missed lung lesions are lost: in the image tokens, or in the LLM's reading of them.

For ``n`` fresh synthetic films of each held-out seed, three readings of every film:

* **slot score**: the largest cosine similarity between one of the projected image tokens and the
  LLM's input embedding of a lung-lesion concept token (``<lung_lesion_left>``/``_right``, the
  tokens the LLM learned to read; ``train.grounding``). It says how much "nodule" the linear layer
  writes into the slot.
* **written**: the labeler reads "Lung Lesion" as present in the run's own report (greedy).
* **oracle**: the same, for the report the LLM writes from the *true* concept tokens
  (``grounding.oracle_prompts``): what a perfect encoder and projection would let it say.

Reported: recall of the reports and of the oracle, false lesions, the slot score's AUC and its
quartiles for written, missed and negative films, and recall by conspicuity (the finding's largest
change on the noise-free film, ``world.conspicuity``; labelled from ``VISIBLE_PEAK`` = 0.10 up).
When the oracle names every nodule and the missed ones score like negatives, the nodules are
lost before the LLM: in the encoder's features (the projection is linear).

Run:  ``python benchmarks/lesion_misses.py [--run reference] [--seeds 1357 2468 5151] [--n 300]``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Conspicuity bins (largest change on the noise-free film): at the visibility rule, faint, clear.
PEAK_BINS: tuple[tuple[float, float], ...] = ((0.10, 0.125), (0.125, 0.175), (0.175, 1.0))


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """ROC AUC of positives against negatives (``models.zero_shot.roc_auc``); None if one is empty."""
    import torch

    from xraygpt_lab.models.zero_shot import roc_auc

    if not positives or not negatives:
        return None
    scores = torch.tensor([*positives, *negatives])  # [n_pos + n_neg]
    return roc_auc(scores, torch.arange(len(scores)) < len(positives))


def _quartiles(values: list[float]) -> list[float] | None:
    import numpy as np

    return [round(float(q), 3) for q in np.percentile(values, (25, 50, 75))] if values else None


def slot_scores(model, pixel_values) -> "torch.Tensor":
    """``[n]``: per film, the largest cosine between a projected image token and a lesion concept's
    input embedding (either side)."""
    import torch
    from torch.nn.functional import normalize

    from xraygpt_lab.train.grounding import concept_token

    ids = [model.tokenizer.convert_tokens_to_ids(concept_token("Lung Lesion", side)) for side in ("left", "right")]
    concepts = normalize(model.llm.get_input_embeddings().weight[ids].detach(), dim=-1)  # [2, hidden]
    with torch.no_grad():
        tokens = normalize(model.embed_image(pixel_values=pixel_values), dim=-1)  # [n, slots, hidden]
    return (tokens @ concepts.T).amax(dim=(1, 2))  # [n]


def run(run_dir: str | None = "reference", seeds: tuple[int, ...] = (1357, 2468, 5151), n: int = 300,
        log=print) -> dict:
    """The three readings on ``n`` films of each seed; returns the summary (see the module docstring)."""
    import torch

    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.data.synthetic.world import conspicuity, generate_cases
    from xraygpt_lab.data.text.labeler import label_report
    from xraygpt_lab.recipe import recipe_of_run
    from xraygpt_lab.runs import load_run
    from xraygpt_lab.train.grounding import oracle_prompts

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_run(run_dir)
    max_new = recipe_of_run(model.run_config).max_new_tokens  # the run's own report length
    rows: list[dict] = []
    for seed in seeds:
        cases = list(generate_cases(n, model.image_size, seed))
        pixels = torch.stack([preprocess(c.image, model.image_size) for c in cases])  # [n, 1, S, S]
        scores = slot_scores(model, pixels).tolist()
        reports = model.describe(pixel_values=pixels, max_new_tokens=max_new)
        oracle = model.generate(oracle_prompts([c.findings for c in cases], model.num_image_tokens, seed),
                                max_new_tokens=max_new)
        for case, score, report, told in zip(cases, scores, reports, oracle):
            row = {"seed": seed, "image_id": case.image_id, "positive": bool(case.labels["Lung Lesion"]),
                   "score": score, "written": label_report(report).get("Lung Lesion") == 1,
                   "oracle": label_report(told).get("Lung Lesion") == 1}
            if row["positive"]:
                lesion = case.finding("Lung Lesion")
                row.update(kind=lesion.detail.get("kind"), size_mm=lesion.detail.get("size_mm"),
                           peak=conspicuity(case, "Lung Lesion").peak,
                           with_findings=sorted(f.observation for f in case.findings if f is not lesion))
            rows.append(row)
        log(f"seed {seed}: {sum(r['positive'] for r in rows if r['seed'] == seed)} lesions")
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    """Recall, oracle recall, false lesions, slot-score AUC and quartiles, recall by conspicuity."""
    pos = [r for r in rows if r["positive"]]
    neg = [r for r in rows if not r["positive"]]
    written = [r for r in pos if r["written"]]
    missed = [r for r in pos if not r["written"]]

    def rate(part: list[dict], key: str) -> float | None:
        return round(sum(r[key] for r in part) / len(part), 3) if part else None

    by_peak = []
    for low, high in PEAK_BINS:
        part = [r for r in pos if low <= r["peak"] < high]
        by_peak.append({"peak": f"{low:.3f}-{high:.3f}", "n": len(part), "recall": rate(part, "written"),
                        "score_median": (_quartiles([r["score"] for r in part]) or [None] * 3)[1]})
    alone = [r for r in pos if not r["with_findings"]]
    others = [r for r in pos if r["with_findings"]]
    slot_auc = auc([r["score"] for r in pos], [r["score"] for r in neg])  # None without both kinds
    return {
        "films": len(rows), "lesions": len(pos),
        "recall": rate(pos, "written"), "oracle_recall": rate(pos, "oracle"),
        "false_lesions": sum(r["written"] for r in neg), "oracle_false_lesions": sum(r["oracle"] for r in neg),
        "slot_score_auc": None if slot_auc is None else round(slot_auc, 3),
        "slot_score_quartiles": {"written": _quartiles([r["score"] for r in written]),
                                 "missed": _quartiles([r["score"] for r in missed]),
                                 "negative": _quartiles([r["score"] for r in neg])},
        "recall_by_peak": by_peak,
        "recall_alone": rate(alone, "written"), "recall_with_other_findings": rate(others, "written"),
        "missed": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                    if k not in ("positive", "written", "oracle")} for r in missed],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="reference", help="run folder or 'reference' (default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1357, 2468, 5151])
    parser.add_argument("--n", type=int, default=300, help="films per seed (default 300)")
    parser.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    result = run(args.run, tuple(args.seeds), args.n)
    short = {k: v for k, v in result.items() if k != "missed"}
    print(json.dumps(short, indent=1))
    if args.out is not None:
        from xraygpt_lab.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
