"""Evaluate a trained XrayGPT on (image, reference report) pairs: the walkthrough's stage 7.

Generating and scoring live in ``eval.evaluate`` (:func:`~xraygpt_lab.eval.evaluate.generate_reports`,
:func:`~xraygpt_lab.eval.evaluate.score_reports`); this module only imports them (``train`` →
``eval``, never back) and re-exports them for older imports.

Metrics (``eval.metrics.report_metrics``): ROUGE-1/2/L (XrayGPT's Table 1 metric), BLEU-1..4,
the repetition and contradiction rates of the generated text (``eval.consistency``) and
clinical efficacy (CE) over the observations the synthetic world renders
(``RENDERED_OBSERVATIONS``). CE labels come from our rule-based labeler (``data.labeler``)
applied to the generated text, scored

* against the labeler applied to the reference text (``ce_*``), the usual CE protocol, and
* against ground-truth labels when the data has them (``vs_ground_truth``; ``labels.csv`` of a
  synthetic export).

``baselines.image_blind`` repeats everything with the image withheld: the projection output is
replaced by zeros (the ``<Img></Img>`` slot stays, so only the image content is missing). A model
that uses the image must lose most of its CE there.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data.findings import RENDERED_OBSERVATIONS
from ..eval.consistency import CONSISTENCY_METRICS
from ..eval.details import DETAIL_METRICS
from ..eval.evaluate import DEFAULT_INSTRUCTION, generate_reports, score_reports
from ..models.xraygpt import XrayGPT

__all__ = ["DEFAULT_INSTRUCTION", "evaluate_model", "generate_reports", "score_reports"]


def evaluate_model(model: XrayGPT, refs: Sequence[str], pixel_values: torch.Tensor | None = None,
                   features: torch.Tensor | None = None, ground_truth: Sequence[dict] | None = None,
                   max_new_tokens: int = 160, batch_size: int = 50, n_boot: int = 200,
                   n_examples: int = 5, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Metrics of ``model`` and of its image-blind baseline, plus a few example reports."""
    source = pixel_values if pixel_values is not None else features
    if source is None or source.shape[0] != len(refs):
        raise ValueError(f"need one image per reference ({len(refs)} references)")
    if features is None:  # encode once, reuse for both systems
        features = torch.cat([model.encode_image(source[i:i + batch_size]).cpu()
                              for i in range(0, source.shape[0], batch_size)])
    say = log or (lambda _: None)
    say(f"generating {len(refs)} reports")
    preds = generate_reports(model, features=features, batch_size=batch_size, max_new_tokens=max_new_tokens)
    say("generating image-blind baseline (projection output replaced by zeros)")
    blind = generate_reports(model, features=features, batch_size=batch_size, max_new_tokens=max_new_tokens,
                             withhold_image=True)
    out = score_reports(preds, refs, ground_truth, n_boot=n_boot)
    out["n"] = len(refs)
    out["observations"] = list(RENDERED_OBSERVATIONS)
    out["ce_labels"] = "rule-based labeler (data.labeler) on generated vs reference text"
    out["consistency_metrics"] = dict(CONSISTENCY_METRICS)
    out["detail_metrics"] = dict(DETAIL_METRICS)
    out["baselines"] = {"image_blind": {
        "how": "projection output replaced by zeros; <Img></Img> slot kept",
        **score_reports(blind, refs, ground_truth, n_boot=0),
    }}
    out["examples"] = [{"generated": p, "reference": r} for p, r in list(zip(preds, refs))[:n_examples]]
    return out
