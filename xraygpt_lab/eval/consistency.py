"""Does a report repeat or contradict itself? Two checks on the text of one report.

ROUGE, BLEU and CE compare a report with a reference; these two read the report alone.

* **Repetition** (:func:`repetitions`): a sentence, or a clause of at least
  ``MIN_CLAUSE_WORDS`` words, that occurs twice, after normalising case, whitespace and
  punctuation (:func:`normalize_unit`). Sentences end at ``. ! ?`` followed by a space; clauses
  are the comma- or semicolon-separated parts of a sentence, so a short shared fragment such as
  "no" is not a repeat. Repeats are counted inside the body and inside the summary separately:
  a summary that restates a body finding once ("There is a small left pleural effusion. ...
  In summary: small left pleural effusion.") is what a summary is for, as an IMPRESSION
  restates the FINDINGS of a radiology report.
* **Contradiction** (:func:`contradictions`): the rule-based labeler (``data.text.labeler``,
  CheXpert's stages 1-2: mentions, then negation and uncertainty cues inside the mention's
  clause) is run on every sentence, and a report contradicts itself when

  - one observation has a positive mention (1) and a negative mention (0), unless the two
    clauses name opposite sides ("Small right pleural effusion. No left effusion." is
    consistent); uncertain mentions (-1: "possible", "cannot be excluded") are neither;
  - or the summary names a positive finding only on the side opposite to the one the body gives
    it ("left fourth rib fracture" in the body, "right seventh rib fracture" in the summary).
    Support Devices are left out of this side check: several devices, each with its own side.

  The summary is the IMPRESSION/CONCLUSION section when the report has headings, else every
  sentence from the first one that opens with a summary cue ("In summary", "To summarise",
  "Overall", "Impression") to the end.

``repetition_rate`` and ``contradiction_rate`` (:func:`consistency_rates`) are the shares of
reports with at least one repeat / contradiction.

Limits: the checks inherit the labeler's reading, so a real report that compares with a prior
study ("No new pneumothorax. Small left apical pneumothorax, unchanged.") counts as a
contradiction; a summary that names a finding the body never mentions is not one.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.findings import NEGATIVE, POSITIVE
from ..data.text.labeler import Mention, find_mentions
from ..data.text.summary import extract_sections

#: One sentence per metric, for the ``evaluate`` help and its JSON.
CONSISTENCY_METRICS: dict[str, str] = {
    "repetition_rate": "share of generated reports in which a sentence, or a comma/semicolon clause of "
                       "at least 3 words, occurs twice within the body or within the summary "
                       "(case, whitespace and punctuation ignored)",
    "contradiction_rate": "share of generated reports in which the labeler, run per sentence, finds one "
                          "observation both asserted and denied, or the summary puts a finding on the "
                          "side opposite to the body's",
}

#: Shortest clause (in words) that counts as a repeat on its own.
MIN_CLAUSE_WORDS = 3

ASSERTED_AND_DENIED = "asserted and denied"
OPPOSITE_SIDE = "opposite side"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLAUSE_SPLIT = re.compile(r"[,;]")
_WORD = re.compile(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*")  # keeps "0.63", "left-sided", "x-ray"
_SUMMARY_CUE = re.compile(r"^\W*(?:in summary|to summari[sz]e|summary|overall|in conclusion|conclusion|"
                          r"impressions?)\b", re.IGNORECASE)
_SUMMARY_SECTIONS = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS")
_BODY_SECTIONS = ("FINDINGS", "FINDING", "FINDINGS AND IMPRESSION")
_SIDES = {"left": {"left"}, "right": {"right"}, "bilateral": {"left", "right"},
          "bilaterally": {"left", "right"}, "both": {"left", "right"}}
_NO_SIDE_CHECK = ("Support Devices",)


@dataclass(frozen=True)
class Contradiction:
    """One observation the report contradicts itself on, with the two sentences that clash."""

    observation: str
    kind: str  # ASSERTED_AND_DENIED or OPPOSITE_SIDE
    asserted: str
    other: str  # the denying sentence, or the summary sentence with the other side


# ----------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------
def normalize_unit(text: str) -> str:
    """Lower-case words joined by one space: case, whitespace and punctuation do not count."""
    return " ".join(_WORD.findall(text.lower()))


def sentences(text: str) -> list[str]:
    """Sentences at ``. ! ?`` + whitespace whatever the next letter's case ("0.63" stays whole)."""
    parts = (re.sub(r"\s+", " ", p).strip() for p in _SENTENCE_END.split(text))
    return [p for p in parts if re.search(r"[A-Za-z]", p)]  # "1." of a numbered list is no sentence


def report_parts(report: str) -> tuple[list[str], list[str]]:
    """``(body sentences, summary sentences)`` of one report (see the module docstring)."""
    if not isinstance(report, str):
        raise TypeError(f"a report must be a string, got {type(report).__name__}")
    sections = extract_sections(report)
    body_text = " ".join(sections[s] for s in _BODY_SECTIONS if sections.get(s))
    summary_text = " ".join(sections[s] for s in _SUMMARY_SECTIONS if sections.get(s))
    if body_text or summary_text:
        return sentences(body_text), sentences(summary_text)
    every = sentences(report)
    start = next((i for i, s in enumerate(every) if _SUMMARY_CUE.match(s)), len(every))
    return every[:start], every[start:]


# ----------------------------------------------------------------------------------------------
# Repetition
# ----------------------------------------------------------------------------------------------
def _units(part: Sequence[str]) -> Counter[str]:
    """How often each sentence and each clause of >= MIN_CLAUSE_WORDS words occurs in ``part``."""
    counts: Counter[str] = Counter()
    for sentence in part:
        whole = normalize_unit(sentence)
        clauses = [normalize_unit(c) for c in _CLAUSE_SPLIT.split(sentence)]
        long_clauses = [c for c in clauses if len(c.split()) >= MIN_CLAUSE_WORDS and c != whole]
        counts.update([whole] + long_clauses)
    return counts


def repetitions(report: str) -> list[str]:
    """Normalised sentences/clauses that occur more than once in the body or in the summary."""
    repeated: list[str] = []
    for part in report_parts(report):
        repeated += [unit for unit, n in _units(part).items() if n > 1 and unit not in repeated]
    return repeated


# ----------------------------------------------------------------------------------------------
# Contradiction
# ----------------------------------------------------------------------------------------------
def sides(clause: str) -> set[str]:
    """``{"left"}``, ``{"right"}``, both (``bilateral``/``both``/two side words) or none."""
    found: set[str] = set()
    for word in _WORD.findall(clause.lower()):
        for piece in word.split("-"):  # "left-sided"
            found |= _SIDES.get(piece, set())
    return found


def _mentions(part: Sequence[str]) -> list[Mention]:
    return [m for sentence in part for m in find_mentions(sentence)]


def _clash(pos: Mention, neg: Mention) -> bool:
    """A denial contradicts an assertion unless both name a side and the sides differ."""
    a, d = sides(pos.clause), sides(neg.clause)
    return not a or not d or bool(a & d)


def contradictions(report: str) -> list[Contradiction]:
    """Observations the report both asserts and denies, or puts on opposite sides (module doc)."""
    body, summary = report_parts(report)
    in_body, in_summary = _mentions(body), _mentions(summary)
    found: list[Contradiction] = []
    for obs in dict.fromkeys(m.observation for m in in_body + in_summary):
        every = [m for m in in_body + in_summary if m.observation == obs]
        positive = [m for m in every if m.value == POSITIVE]
        clash = next(((p, n) for p in positive for n in every if n.value == NEGATIVE and _clash(p, n)), None)
        if clash is not None:
            found.append(Contradiction(obs, ASSERTED_AND_DENIED, clash[0].sentence, clash[1].sentence))
            continue
        if obs in _NO_SIDE_CHECK:
            continue
        body_pos = [m for m in in_body if m.observation == obs and m.value == POSITIVE]
        body_sides = set().union(*(sides(m.clause) for m in body_pos))
        for m in in_summary:
            said = sides(m.clause) if m.observation == obs and m.value == POSITIVE else set()
            if said and body_sides and not said & body_sides:
                found.append(Contradiction(obs, OPPOSITE_SIDE, body_pos[0].sentence, m.sentence))
                break
    return found


# ----------------------------------------------------------------------------------------------
# Rates
# ----------------------------------------------------------------------------------------------
def consistency_flags(reports: Sequence[str]) -> dict[str, np.ndarray]:
    """Per report: ``{"repetition_rate": bool [n], "contradiction_rate": bool [n]}``."""
    if isinstance(reports, str):
        raise TypeError("give a sequence of reports, not one string")
    if len(reports) == 0:
        raise ValueError("no reports to check")
    return {"repetition_rate": np.array([bool(repetitions(r)) for r in reports], dtype=bool),
            "contradiction_rate": np.array([bool(contradictions(r)) for r in reports], dtype=bool)}


def consistency_rates(reports: Sequence[str]) -> dict[str, float]:
    """``{"repetition_rate": share, "contradiction_rate": share}`` over ``reports``."""
    return {key: float(flags.mean()) for key, flags in consistency_flags(reports).items()}
