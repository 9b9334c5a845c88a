"""Does a report put each finding on the right side? Side agreement between a report and its reference.

CE (``eval.metrics.clinical_efficacy``) compares observations, not sides: "small right apical
pneumothorax" for a left one counts as a correct pneumothorax. A radiologist would call it a
serious error, so ``evaluate`` also reports **side agreement**: over every (report, observation)
where both the generated and the reference report assert the observation and name its side, the
share where the sides named are the same. Sides are read as ``eval.consistency`` reads them: the
labeler's positive mentions (``data.text.labeler.find_mentions``, run per sentence), and the side
words of each mention's clause (``left``, ``right``, ``bilateral``/``both`` for both; all
positive mentions of an observation pooled). Support Devices are left out (several devices, each
with its own side), and so is every observation either report names without a side (the heart,
most edema).

Limits: a clause that names two sides for two things ("left effusion and right pneumothorax")
gives both to each; a reference with nodules in both lungs disagrees with a report naming one.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..data.findings import POSITIVE
from .consistency import report_parts, sides
from ..data.text.labeler import find_mentions

#: One sentence for the ``evaluate`` help and its JSON.
SIDE_AGREEMENT = ("share of findings asserted with a side in both the generated and the reference report "
                  "whose sides agree (left / right / both; Support Devices left out); null when no finding "
                  "has a side in both")

#: Observations whose side is not compared (several devices, each with its own side).
NO_SIDE: tuple[str, ...] = ("Support Devices",)


def named_sides(report: str) -> dict[str, frozenset[str]]:
    """Observation -> the sides its positive mentions name (``{"left"}``, ``{"right"}`` or both);
    observations asserted without a side word are absent."""
    body, summary = report_parts(report)
    found: dict[str, set[str]] = {}
    for sentence in body + summary:
        for mention in find_mentions(sentence):
            if mention.value == POSITIVE and mention.observation not in NO_SIDE:
                said = sides(mention.clause)
                if said:
                    found.setdefault(mention.observation, set()).update(said)
    return {obs: frozenset(s) for obs, s in found.items()}


def side_mismatches(generated: str, reference: str) -> list[str]:
    """Observations both reports assert with a side, where the sides differ (in report order)."""
    ours, theirs = named_sides(generated), named_sides(reference)
    return [obs for obs in ours if obs in theirs and ours[obs] != theirs[obs]]


def side_agreement(preds: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """``{"side_agreement": share or None, "side_pairs": n, "side_per_observation": {obs: {"pairs",
    "agree"}}}`` over the (report, observation) pairs both texts give a side (module docstring)."""
    if isinstance(preds, str) or isinstance(refs, str):
        raise TypeError("give sequences of reports, not one string")
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} generated reports but {len(refs)} references")
    per: dict[str, dict[str, int]] = {}
    for generated, reference in zip(preds, refs):
        ours, theirs = named_sides(generated), named_sides(reference)
        for obs in ours.keys() & theirs.keys():
            row = per.setdefault(obs, {"pairs": 0, "agree": 0})
            row["pairs"] += 1
            row["agree"] += int(ours[obs] == theirs[obs])
    pairs = sum(r["pairs"] for r in per.values())
    agree = sum(r["agree"] for r in per.values())
    return {"side_agreement": agree / pairs if pairs else None, "side_pairs": pairs,
            "side_per_observation": dict(sorted(per.items()))}


def side_table(per_observation: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    """Rows ``{"observation", "pairs", "agree", "share"}`` of :func:`side_agreement`'s breakdown."""
    return [{"observation": obs, "pairs": r["pairs"], "agree": r["agree"],
             "share": r["agree"] / r["pairs"] if r["pairs"] else None} for obs, r in per_observation.items()]
