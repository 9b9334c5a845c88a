"""Does a report get a finding's details right? Side and grade agreement with the reference.

CE (``eval.metrics.clinical_efficacy``) compares observations only: "small right apical
pneumothorax" for a large left one counts as a correct pneumothorax. A radiologist would call
both the side and the size wrong, so ``evaluate`` also reports two agreements. Each is taken over
every (report, observation) where both the generated and the reference report assert the
observation and state the detail, as the share where the two texts state the same:

* **side** (``side_agreement``): ``left``, ``right``, or both (``bilateral``, ``both``, or two
  side words);
* **grade** (``grade_agreement``): the size or severity on a three-step scale, 1 for ``small``,
  ``mild``, ``trace``, ``minimal``, ``tiny`` (and ``mildly``), 2 for ``moderate``, 3 for
  ``large``, ``severe``, ``marked``, ``massive``, ``extensive`` (and ``-ly`` forms). CheXpert
  and the synthetic world's reports grade effusions and pneumothoraces by size, edema and
  cardiomegaly by severity; one scale serves both.

Details are read where ``eval.consistency`` reads sides: the labeler's positive mentions
(``data.text.labeler.find_mentions``, run per sentence) and the words of each mention's clause,
all positive mentions of an observation pooled. Left out: Support Devices (several devices, each
with its own side), Lung Opacity (CheXpert's catch-all shares its phrase with the finding it
belongs to, "bilateral perihilar haziness from moderate pulmonary edema", and would count that
finding's detail twice), and every observation either text names without the detail.

Limits: a clause that names two sides or grades for two things ("small left effusion and large
right pneumothorax") gives both to each; a reference with nodules in both lungs disagrees with a
report naming one; lesion sizes in millimetres and rib levels are not compared.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ..data.findings import POSITIVE
from ..data.text.labeler import find_mentions
from .consistency import report_parts, sides

#: One sentence each, for the ``evaluate`` help and its JSON.
DETAIL_METRICS: dict[str, str] = {
    "side_agreement": "share of findings asserted with a side in both the generated and the reference report "
                      "whose sides agree (left / right / both; devices and Lung Opacity left out); null when "
                      "no finding has a side in both",
    "grade_agreement": "share of findings asserted with a size or severity in both the generated and the "
                       "reference report whose grades agree (small or mild / moderate / large or severe; "
                       "devices and Lung Opacity left out); null when no finding has a grade in both",
}

#: Observations whose details are not compared: several devices, each with its own side; the
#: catch-all opacity, whose detail is that of the finding it shares a phrase with.
NOT_COMPARED: tuple[str, ...] = ("Support Devices", "Lung Opacity")

#: Grade words -> step on one size/severity scale (module docstring).
GRADES: dict[str, int] = {
    **dict.fromkeys(("trace", "minimal", "tiny", "small", "mild", "mildly"), 1),
    **dict.fromkeys(("moderate", "moderately"), 2),
    **dict.fromkeys(("large", "severe", "severely", "marked", "markedly", "massive", "extensive"), 3),
}
_WORD = re.compile(r"[a-z]+")


def grades(clause: str) -> set[int]:
    """The grade steps a clause's words name (``{2}`` for "moderate right-sided effusion")."""
    return {GRADES[w] for w in _WORD.findall(clause.lower()) if w in GRADES}


def _named(report: str, read: Callable[[str], set]) -> dict[str, frozenset]:
    """Observation -> what ``read`` finds in the clauses of its positive mentions; observations
    asserted without it are absent."""
    body, summary = report_parts(report)
    found: dict[str, set] = {}
    for sentence in body + summary:
        for mention in find_mentions(sentence):
            if mention.value == POSITIVE and mention.observation not in NOT_COMPARED:
                said = read(mention.clause)
                if said:
                    found.setdefault(mention.observation, set()).update(said)
    return {obs: frozenset(s) for obs, s in found.items()}


def named_sides(report: str) -> dict[str, frozenset[str]]:
    """Observation -> the sides its positive mentions name (``{"left"}``, ``{"right"}`` or both)."""
    return _named(report, sides)


def named_grades(report: str) -> dict[str, frozenset[int]]:
    """Observation -> the grade steps its positive mentions name (``{1}`` for "small", …)."""
    return _named(report, grades)


def _mismatches(generated: str, reference: str, read: Callable[[str], dict]) -> list[str]:
    ours, theirs = read(generated), read(reference)
    return [obs for obs in ours if obs in theirs and ours[obs] != theirs[obs]]


def side_mismatches(generated: str, reference: str) -> list[str]:
    """Observations both reports assert with a side, where the sides differ (in report order)."""
    return _mismatches(generated, reference, named_sides)


def grade_mismatches(generated: str, reference: str) -> list[str]:
    """Observations both reports assert with a grade, where the grades differ (in report order)."""
    return _mismatches(generated, reference, named_grades)


def _agreement(name: str, preds: Sequence[str], refs: Sequence[str],
               read: Callable[[str], dict]) -> dict[str, Any]:
    if isinstance(preds, str) or isinstance(refs, str):
        raise TypeError("give sequences of reports, not one string")
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} generated reports but {len(refs)} references")
    per: dict[str, dict[str, int]] = {}
    for generated, reference in zip(preds, refs):
        ours, theirs = read(generated), read(reference)
        for obs in ours.keys() & theirs.keys():
            row = per.setdefault(obs, {"pairs": 0, "agree": 0})
            row["pairs"] += 1
            row["agree"] += int(ours[obs] == theirs[obs])
    pairs = sum(r["pairs"] for r in per.values())
    agree = sum(r["agree"] for r in per.values())
    return {f"{name}_agreement": agree / pairs if pairs else None, f"{name}_pairs": pairs,
            f"{name}_per_observation": dict(sorted(per.items()))}


def side_agreement(preds: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """``{"side_agreement": share or None, "side_pairs": n, "side_per_observation": {obs: {"pairs",
    "agree"}}}`` over the (report, observation) pairs both texts give a side."""
    return _agreement("side", preds, refs, named_sides)


def grade_agreement(preds: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """:func:`side_agreement` for grades: ``grade_agreement``, ``grade_pairs``, ``grade_per_observation``."""
    return _agreement("grade", preds, refs, named_grades)


def detail_agreement(preds: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """Both agreements in one dict (the keys of :func:`side_agreement` and :func:`grade_agreement`)."""
    return {**side_agreement(preds, refs), **grade_agreement(preds, refs)}
