"""Evaluate a trained XrayGPT on (image, reference report) pairs.

Metrics (``eval.metrics.report_metrics``): ROUGE-1/2/L (XrayGPT's Table 1 metric), BLEU-1..4
and clinical efficacy (CE) over the observations the synthetic world renders
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
from ..models.xraygpt import XrayGPT

DEFAULT_INSTRUCTION = "Describe the given chest x-ray image in detail."


def generate_reports(model: XrayGPT, pixel_values: torch.Tensor | None = None, features: torch.Tensor | None = None,
                     batch_size: int = 50, instruction: str = DEFAULT_INSTRUCTION,
                     max_new_tokens: int = 160, withhold_image: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Greedy reports for ``pixel_values`` ``[M, 1, S, S]`` or cached ``features`` ``[M, N, d]``."""
    source = pixel_values if pixel_values is not None else features
    if source is None:
        raise ValueError("give pixel_values or features")
    reports: list[str] = []
    for start in range(0, source.shape[0], batch_size):
        chunk = source[start:start + batch_size]
        kwargs = {"pixel_values": chunk} if pixel_values is not None else {"features": chunk}
        reports += model.describe(instruction=instruction, max_new_tokens=max_new_tokens,
                                  withhold_image=withhold_image, **kwargs)
        if progress is not None:
            progress(len(reports), source.shape[0])
    return reports


def score_reports(preds: Sequence[str], refs: Sequence[str],
                  ground_truth: Sequence[dict] | None = None,
                  observations: Sequence[str] = RENDERED_OBSERVATIONS, n_boot: int = 200) -> dict[str, Any]:
    """ROUGE, BLEU and CE (labeler on both texts; and vs ground truth when given)."""
    from ..data.labeler import label_report
    from ..eval.metrics import clinical_efficacy, report_metrics

    pred_labels = [label_report(p) for p in preds]
    ref_labels = [label_report(r) for r in refs]
    out = report_metrics(list(preds), list(refs), pred_labels, ref_labels, observations, n_boot=n_boot)
    if ground_truth is not None:
        ce = clinical_efficacy(pred_labels, list(ground_truth), observations)
        ref_ce = clinical_efficacy(ref_labels, list(ground_truth), observations)
        out["vs_ground_truth"] = {
            "ce_f1_macro": ce["macro_f1"], "ce_f1_micro": ce["micro_f1"],
            "per_observation": ce["per_observation"],
            "labeler_ceiling_f1_macro": ref_ce["macro_f1"],  # labeler on the reference vs truth
        }
    return out


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
    out["baselines"] = {"image_blind": {
        "how": "projection output replaced by zeros; <Img></Img> slot kept",
        **score_reports(blind, refs, ground_truth, n_boot=0),
    }}
    out["examples"] = [{"generated": p, "reference": r} for p, r in list(zip(preds, refs))[:n_examples]]
    return out
