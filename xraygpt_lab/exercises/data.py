"""Exercises for notebook 00b (real data): XrayGPT's report → summary rules.

XrayGPT's README-DATASET (and ``data.summary``) drops reports whose findings have fewer than 10
words or whose impression has fewer than 2, and removes sentences that compare with a prior
study. Two exercises rebuild those rules:

* :func:`check_keep_report` — ``keep_report(findings, impression) -> bool`` (rule 1-2: sections
  present, word counts with ``data.summary.word_count``).
* :func:`check_drop_comparisons` — ``drop_comparisons(section) -> str`` (rule 3, comparisons only:
  split with ``data.summary.split_sentences``, test with ``data.summary.is_comparison``).
"""
from __future__ import annotations

from collections.abc import Callable

from ..data.text.summary import (MIN_FINDINGS_WORDS, MIN_IMPRESSION_WORDS, NO_FINDINGS, NO_IMPRESSION, EMPTY_REPORT,
                            SHORT_FINDINGS, SHORT_IMPRESSION, clean_section, is_comparison, split_sentences,
                            summarize_sections, word_count)
from .checking import Case, CheckResult, Mistake, run_check

_LENGTH_RULES = (EMPTY_REPORT, NO_FINDINGS, NO_IMPRESSION, SHORT_FINDINGS, SHORT_IMPRESSION)


def keep_report(findings: str | None, impression: str | None) -> bool:
    """Reference: does the report pass XrayGPT's section and length rules? (``data.summary``)."""
    return summarize_sections(findings, impression).dropped not in _LENGTH_RULES


def drop_comparisons(section: str) -> str:
    """Reference: the section without its comparison sentences, sentences joined by one space.

    Equals ``data.summary.clean_section(section)[0]`` on text without view mentions or blanks.
    """
    return clean_section(section)[0]


_FINDINGS_12 = "The heart size is normal and the lungs are clear bilaterally today."  # 12 words
_TEN_WORDS = "Heart size normal. Lungs clear. No effusion or pneumothorax seen."  # 10 words
_NINE_WORDS = "Heart size normal. Lungs clear. No effusion or pneumothorax."  # 9 words


def _keep_cases() -> list[Case]:
    assert word_count(_TEN_WORDS) == MIN_FINDINGS_WORDS and word_count(_NINE_WORDS) == MIN_FINDINGS_WORDS - 1
    return [
        Case("a normal report (12-word findings, 4-word impression)", (_FINDINGS_12, "No acute cardiopulmonary process.")),
        Case("findings of exactly 10 words (kept: the rule drops < 10)", (_TEN_WORDS, "No acute disease.")),
        Case("findings of 9 words (dropped)", (_NINE_WORDS, "No acute disease.")),
        Case("an impression of exactly 2 words (kept: the rule drops < 2)", (_FINDINGS_12, "Normal chest.")),
        Case("a one-word impression (dropped)", (_FINDINGS_12, "Normal.")),
        Case("no impression section (None)", (_FINDINGS_12, None)),
        Case("no findings section (None)", (None, "No acute disease.")),
        Case("a hyphenated word ('x-ray' counts as 2 words with word_count)",
             ("Chest x-ray shows clear lungs and normal heart size.", "No acute disease.")),
        Case("a long impression but 3-word findings (dropped)", ("Lungs are clear.", "No acute cardiopulmonary process identified.")),
    ]


def check_keep_report(answer: Callable[[str | None, str | None], bool], *, strict: bool = False) -> CheckResult:
    """Check ``answer(findings, impression) -> bool`` against :func:`keep_report`."""

    def rule(f_min: int, i_min: int, strict_lt: bool = True, count: Callable[[str], int] = word_count):
        def decide(findings: str | None, impression: str | None) -> bool:
            if not findings or not impression:
                return False
            if strict_lt:
                return count(findings) >= f_min and count(impression) >= i_min
            return count(findings) > f_min and count(impression) > i_min
        return decide

    mistakes = [
        Mistake("off by one: the rule drops findings with *fewer than* 10 words, so exactly 10 is kept "
                "(use >= 10, not > 10)", rule(MIN_FINDINGS_WORDS, MIN_IMPRESSION_WORDS, strict_lt=False)),
        Mistake("the two thresholds are swapped: findings need >= 10 words, the impression >= 2",
                rule(MIN_IMPRESSION_WORDS, MIN_FINDINGS_WORDS)),
        Mistake("you counted characters, not words: use data.summary.word_count(text)",
                rule(MIN_FINDINGS_WORDS, MIN_IMPRESSION_WORDS, count=len)),
        Mistake("you split on spaces; the summary rules count runs of letters/digits with "
                "data.summary.word_count ('x-ray' is 2 words, 'clear.' is 1)",
                rule(MIN_FINDINGS_WORDS, MIN_IMPRESSION_WORDS, count=lambda t: len(t.split()))),
        Mistake("a missing section (None) must drop the report before any word is counted",
                test=lambda got, exp, case: got is True and None in case.args),
    ]
    return run_check("keep a report? (length rules)", answer, keep_report, _keep_cases(), mistakes,
                     strict=strict, hint="keep iff both sections exist, findings have >= 10 words and "
                                         "the impression >= 2 (data.summary.word_count)")


_SECTIONS = [
    ("a section with one comparison sentence",
     "The heart is normal in size. Compared to the prior study, the effusion is smaller. The lungs are clear."),
    ("a section with no comparison", "Mild cardiomegaly. Small left pleural effusion. No pneumothorax."),
    ("comparisons hidden in words like 'stable' and 'unchanged'",
     "Stable mild cardiomegaly. Right basilar opacity is unchanged. New small left effusion. Lungs otherwise clear."),
    ("a section that is all comparison", "Unchanged from prior. Interval improvement of edema."),
    ("numbers and decimals (1.5 cm must not split a sentence)",
     "A 1.5 cm nodule in the right upper lobe. It has increased since the previous radiograph."),
]


def check_drop_comparisons(answer: Callable[[str], str], *, strict: bool = False) -> CheckResult:
    """Check ``answer(section) -> str`` against :func:`drop_comparisons`."""
    cases = [Case(label, (text,)) for label, text in _SECTIONS]
    mistakes = [
        Mistake("the test is inverted: you kept the comparison sentences and dropped the others",
                lambda t: " ".join(s for s in split_sentences(t) if is_comparison(s))),
        Mistake("join the kept sentences with a single space: ' '.join(kept)",
                lambda t: "".join(s for s in split_sentences(t) if not is_comparison(s))),
        Mistake("join the kept sentences with a single space: ' '.join(kept)",
                lambda t: "\n".join(s for s in split_sentences(t) if not is_comparison(s))),
        Mistake("you dropped the whole section when any sentence compares; drop only those sentences",
                lambda t: "" if any(is_comparison(s) for s in split_sentences(t)) else " ".join(split_sentences(t))),
        Mistake("you split sentences on every '.', which breaks '1.5 cm'; use data.summary.split_sentences",
                lambda t: " ".join(s.strip() + "." for s in t.split(".") if s.strip() and not is_comparison(s))),
        Mistake("a comparison sentence survived: your keyword list misses some (stable, unchanged, "
                "interval, since, increased …); use data.summary.is_comparison",
                test=lambda got, exp, case: isinstance(got, str) and any(
                    is_comparison(s) and s in got for s in split_sentences(case.args[0]))),
    ]
    return run_check("drop comparison sentences", answer, drop_comparisons, cases, mistakes, strict=strict,
                     hint="split_sentences(section), keep the sentences where is_comparison is False, join with ' '")


__all__ = ["check_drop_comparisons", "check_keep_report", "drop_comparisons", "keep_report"]
