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


def _positive_clauses(report: str) -> dict[str, list[str]]:
    """Observation -> the clauses of its positive mentions (one labeler pass over the report)."""
    body, summary = report_parts(report)
    found: dict[str, list[str]] = {}
    for sentence in body + summary:
        for mention in find_mentions(sentence):
            if mention.value == POSITIVE and mention.observation not in NOT_COMPARED:
                found.setdefault(mention.observation, []).append(mention.clause)
    return found


def _read(clauses: dict[str, list[str]], read: Callable[[str], set]) -> dict[str, frozenset]:
    """Observation -> what ``read`` finds in its clauses; observations without it are absent."""
    out = {obs: frozenset().union(*(read(c) for c in found)) for obs, found in clauses.items()}
    return {obs: said for obs, said in out.items() if said}


#: The detail readers, by metric name.
READERS: dict[str, Callable[[str], set]] = {"side": sides, "grade": grades}


def named_sides(report: str) -> dict[str, frozenset[str]]:
    """Observation -> the sides its positive mentions name (``{"left"}``, ``{"right"}`` or both)."""
    return _read(_positive_clauses(report), sides)


def named_grades(report: str) -> dict[str, frozenset[int]]:
    """Observation -> the grade steps its positive mentions name (``{1}`` for "small", …)."""
    return _read(_positive_clauses(report), grades)


def _differ(ours: dict[str, frozenset], theirs: dict[str, frozenset]) -> list[str]:
    return [obs for obs in ours if obs in theirs and ours[obs] != theirs[obs]]


def detail_mismatches(generated: str, reference: str) -> dict[str, list[str]]:
    """``{"wrong_side": [...], "wrong_grade": [...]}``: observations both reports assert with that
    detail, where it differs (in report order); each report is read once."""
    ours, theirs = _positive_clauses(generated), _positive_clauses(reference)
    return {f"wrong_{name}": _differ(_read(ours, read), _read(theirs, read)) for name, read in READERS.items()}


def side_mismatches(generated: str, reference: str) -> list[str]:
    """Observations both reports assert with a side, where the sides differ (in report order)."""
    return detail_mismatches(generated, reference)["wrong_side"]


def grade_mismatches(generated: str, reference: str) -> list[str]:
    """Observations both reports assert with a grade, where the grades differ (in report order)."""
    return detail_mismatches(generated, reference)["wrong_grade"]


def _agreement(names: Sequence[str], preds: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """The ``<name>_agreement``, ``<name>_pairs`` and ``<name>_per_observation`` of each detail in
    ``names``, reading every report once."""
    if isinstance(preds, str) or isinstance(refs, str):
        raise TypeError("give sequences of reports, not one string")
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} generated reports but {len(refs)} references")
    pairs = [(_positive_clauses(g), _positive_clauses(r)) for g, r in zip(preds, refs)]
    out: dict[str, Any] = {}
    for name in names:
        per: dict[str, dict[str, int]] = {}
        for generated, reference in pairs:
            ours, theirs = _read(generated, READERS[name]), _read(reference, READERS[name])
            for obs in ours.keys() & theirs.keys():
                row = per.setdefault(obs, {"pairs": 0, "agree": 0})
                row["pairs"] += 1
                row["agree"] += int(ours[obs] == theirs[obs])
        n = sum(r["pairs"] for r in per.values())
        agree = sum(r["agree"] for r in per.values())
        out.update({f"{name}_agreement": agree / n if n else None, f"{name}_pairs": n,
                    f"{name}_per_observation": dict(sorted(per.items()))})
    return out


def side_agreement(preds: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """``{"side_agreement": share or None, "side_pairs": n, "side_per_observation": {obs: {"pairs",
    "agree"}}}`` over the (report, observation) pairs both texts give a side."""
    return _agreement(("side",), preds, refs)


def grade_agreement(preds: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """:func:`side_agreement` for grades: ``grade_agreement``, ``grade_pairs``, ``grade_per_observation``."""
    return _agreement(("grade",), preds, refs)


def detail_agreement(preds: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """Both agreements in one dict (the keys of :func:`side_agreement` and :func:`grade_agreement`)."""
    return _agreement(tuple(READERS), preds, refs)
