"""Radiology report -> XrayGPT "summary", by rules.

XrayGPT (arXiv 2306.07971, Sec. 3.2 and README-DATASET) turns each free-text report into a
training target with these rules, applied here in this order:

1. Extract the FINDINGS and IMPRESSION sections (``extract_sections``).
2. Drop the report when a section is missing, the findings have fewer than 10 words or the
   impression fewer than 2 words. Words are counted on the sections as written: on the 3,955
   OpenI reports this keeps 3,400, against the 3,403 OpenI summaries XrayGPT reports
   (counting after cleaning would keep about 3,230).
3. Clean each section: drop sentences that compare with a prior study, remove the
   de-identification blanks (``___`` in MIMIC-CXR, ``XXXX`` in OpenI) and mentions of the views.
4. Merge findings + impression into one summary (dropped if cleaning left nothing).

XrayGPT then had ChatGPT rewrite the merged text into an "interactive summary"; we stop at the
rule-based merge, which is reproducible offline. Every drop returns its reason so a funnel can
be counted (``summary_funnel``).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Drop reasons, in the order the rules are checked (also the order of ``summary_funnel``).
EMPTY_REPORT = "empty report"
NO_FINDINGS = "no findings"
NO_IMPRESSION = "no impression"
SHORT_FINDINGS = "findings under 10 words"
SHORT_IMPRESSION = "impression under 2 words"
NOTHING_LEFT = "nothing left after cleaning"
DROP_REASONS: tuple[str, ...] = (EMPTY_REPORT, NO_FINDINGS, NO_IMPRESSION, SHORT_FINDINGS,
                                 SHORT_IMPRESSION, NOTHING_LEFT)

MIN_FINDINGS_WORDS = 10  # README-DATASET: "findings < 10 words" are dropped
MIN_IMPRESSION_WORDS = 2  # README-DATASET: "impression < 2 words" are dropped

# A heading is an upper-case label at the start of a line followed by a colon, e.g.
# "FINDINGS:", "IMPRESSION:", "WET READ:", "PA AND LATERAL CHEST:".
_HEADING = re.compile(r"^[ \t]*([A-Z][A-Z /()&,-]{1,40}?)[ \t]*:", re.MULTILINE)
_FINDINGS_NAMES = {"FINDINGS", "FINDING", "FINDINGS AND IMPRESSION"}
_IMPRESSION_NAMES = {"IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS"}


@dataclass(frozen=True)
class Summary:
    """Outcome of the rules on one report.

    ``text`` is the merged summary, or None when the report is dropped, with ``dropped`` saying
    why (one of ``DROP_REASONS``). ``findings``/``impression`` are the cleaned sections and
    ``removed`` the sentences rule 2 took out (for teaching and debugging).
    """

    text: str | None
    dropped: str | None = None
    findings: str = ""
    impression: str = ""
    removed: tuple[str, ...] = field(default=())

    @property
    def kept(self) -> bool:
        return self.text is not None


# --------------------------------------------------------------------------- sections


def extract_sections(report: str) -> dict[str, str]:
    """Split a report into ``{HEADING: body}`` by its upper-case ``HEADING:`` lines.

    >>> extract_sections("FINDINGS: Clear lungs.\\nIMPRESSION: Normal.")
    {'FINDINGS': 'Clear lungs.', 'IMPRESSION': 'Normal.'}

    Bodies are whitespace-normalised; a repeated heading keeps its bodies joined.
    """
    sections: dict[str, str] = {}
    matches = list(_HEADING.finditer(report))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(report)
        name = re.sub(r"\s+", " ", match.group(1)).strip()
        body = _squash(report[match.end():end])
        sections[name] = f"{sections[name]} {body}".strip() if name in sections else body
    return sections


def findings_and_impression(report: str) -> tuple[str | None, str | None]:
    """The FINDINGS and IMPRESSION bodies of a report (None when absent or empty)."""
    sections = extract_sections(report)
    findings = next((sections[n] for n in sections if n in _FINDINGS_NAMES and sections[n]), None)
    impression = next((sections[n] for n in sections if n in _IMPRESSION_NAMES and sections[n]),
                      None)
    return findings, impression


# --------------------------------------------------------------------------- sentences

_SENTENCE_END = re.compile(
    r"(?<!\b\d\.)(?<!\b\d\d\.)(?<=[.!?])\s+(?=[^a-z])"  # ". Next" but not "2. item"
    r"|\s*\n\s*\n\s*"                                    # blank line
    r"|(?<=\S)\s+(?=\d{1,2}\.\s)"                           # before "1. ", "2. "
)


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at ``. ! ?`` followed by a space and a non-lower-case letter,
    at blank lines and before numbered items ("1. ..."); decimals such as ``1.5 cm`` stay intact.

    >>> split_sentences("Heart is normal. No effusion.  1. Clear lungs.")
    ['Heart is normal.', 'No effusion.', '1. Clear lungs.']
    """
    parts = (_squash(part) for part in _SENTENCE_END.split(text))
    return [part for part in parts if part]


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def word_count(text: str) -> int:
    """Number of words (runs of letters or digits): ``"Normal chest x-."`` has 3."""
    return len(re.findall(r"[A-Za-z0-9]+", text))


# --------------------------------------------------------------------------- rule 2: cleaning

#: Sentences that compare with a prior study, e.g. "Compared to the prior study, the heart is
#: unchanged." or "Stable left basilar scarring." or "Interval resolution of the effusion."
#: "prior" and "since" count only where they refer to an earlier study: "status post prior
#: sternotomy", "a history of prior tuberculosis" and "since the patient is rotated" compare nothing.
_STUDY = r"(?:study|studies|exam\w*|radiograph\w*|films?|images?|ct|x-?rays?|cxr|chest|one|comparison)"
_COMPARISON = re.compile(
    r"\b(compar(?:ed|ison|able)|prior(?= (?:[\w-]+ )?" + _STUDY + r"\b)|(?:from|with|to|than|on) (?:the )?"
    r"prior\b|previous(?:ly)?|preceding|earlier (?:study|exam|film|radiograph)|interval(?:ly)?|"
    r"since (?:the |a |an |at |on )?(?:prior|previous|last|earlier|recent|preceding|comparison|admission|"
    + _STUDY + r"\b|"
    r"yesterday|\d|X{2,}|_{2,})|again (?:seen|noted|demonstrated|identified|visualized)|"
    r"re-?demonstrat\w*|re-?identified|unchanged|(?:no|without) (?:significant |substantial |appreciable )?"
    r"change|stable|stably|as before|persist\w*|improv\w*|worsen\w*|resolv\w*|resolution|"
    r"(?:has|have) (?:increased|decreased|developed|enlarged|progressed|cleared|grown|diminished))\b",
    re.IGNORECASE,
)

#: Sentences about the views obtained, e.g. "PA and lateral views of the chest were obtained."
_VIEW_WORD = r"(?:(?-i:PA|AP)|frontal|lateral|portable|upright|supine|semi-?upright|oblique|decubitus)"
_VIEW_NOUN = (r"(?:views?|projections?|radiographs?|images?|films?|exams?|examination|"
              r"x-?rays?)")
_VIEW_SENTENCE = re.compile(rf"{_VIEW_WORD}\b[^.]*?\b{_VIEW_NOUN}\b", re.IGNORECASE)
_ACQUISITION = re.compile(r"\b(?:obtained|provided|performed|submitted|taken|acquired|reviewed|"
                          r"consists? of|consisting of)\b", re.IGNORECASE)
#: A sentence made only of view words, e.g. "PA and lateral chest radiographs."
_VIEW_ONLY = re.compile(
    rf"^(?:(?:the|two|2|single|one|and|of|chest|{_VIEW_WORD}|{_VIEW_NOUN}|were|was|are|is)"
    r"[\s,/]*)+\.?$", re.IGNORECASE)
#: View phrases inside a sentence, e.g. "seen on the lateral view" -> "seen".
_VIEW_PHRASE = re.compile(
    rf"\s*\b(?:on|in|at) (?:the |a |both )?{_VIEW_WORD}(?: and {_VIEW_WORD})?"
    r"(?: (?:views?|projections?|images?|radiographs?|films?)|(?=\s*[.,;]))",
    re.IGNORECASE,
)
#: A view sentence that goes on to a finding: "PA and lateral views of the chest provided
#: demonstrating no focal consolidation." keeps "No focal consolidation." (the view is removed,
#: the finding is not).
_VIEW_THEN_FINDING = re.compile(
    r"\b(?:obtained|provided|performed|submitted|taken|acquired)\b[^.]*?\b(?:which |that )?"
    r"(?:demonstrat\w*|show\w*|reveal\w*)\s+(?P<finding>.+)$", re.IGNORECASE)
_LIST_NUMBER = re.compile(r"^\(?\d{1,2}[.)]\s+")  # "1. No acute disease." -> "No acute disease."
#: De-identification blanks: ``___`` (MIMIC-CXR) and ``XXXX`` (OpenI).
_BLANK = re.compile(r"_{2,}|\bX{2,}\b")


def remove_blanks(text: str) -> str:
    """Remove de-identification blanks and tidy spaces.

    >>> remove_blanks("There are no XXXX of a pleural effusion. Dr. ___ was paged.")
    'There are no of a pleural effusion. Dr. was paged.'
    """
    text = _BLANK.sub("", text)
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    text = re.sub(r"\(\s*\)|<\s*>|\[\s*\]", "", text)
    return _squash(text)


def is_comparison(sentence: str) -> bool:
    """True for a sentence that compares with a prior study.

    >>> is_comparison("Heart size is unchanged from prior."), is_comparison("Heart size is normal.")
    (True, False)
    """
    return _COMPARISON.search(sentence) is not None


def is_view_mention(sentence: str) -> bool:
    """True for a sentence that only states which views were taken.

    >>> is_view_mention("PA and lateral views of the chest were obtained.")
    True
    """
    if _VIEW_ONLY.match(sentence):
        return True
    return _VIEW_SENTENCE.search(sentence) is not None and _ACQUISITION.search(sentence) is not None


def remove_view_phrases(sentence: str) -> str:
    """Remove view mentions inside a sentence.

    >>> remove_view_phrases("A nodule is seen on the lateral view.")
    'A nodule is seen.'
    """
    return _squash(_VIEW_PHRASE.sub("", sentence))


def clean_section(text: str) -> tuple[str, list[str]]:
    """Apply rule 2 to one section; return (cleaned text, removed sentences)."""
    kept: list[str] = []
    removed: list[str] = []
    for sentence in split_sentences(text):
        if is_view_mention(sentence):
            finding = _VIEW_THEN_FINDING.search(sentence)
            if finding is None or word_count(finding.group("finding")) < 2:
                removed.append(sentence)
                continue
            rest = finding.group("finding")
            sentence = rest[0].upper() + rest[1:]
        if is_comparison(sentence):
            removed.append(sentence)
            continue
        cleaned = remove_blanks(remove_view_phrases(_LIST_NUMBER.sub("", sentence)))
        if word_count(cleaned) == 0:
            removed.append(sentence)
            continue
        kept.append(cleaned)
    return " ".join(kept), removed


# --------------------------------------------------------------------------- the summary


def summarize_sections(findings: str | None, impression: str | None) -> Summary:
    """Rules 2-4 on already-extracted sections (OpenI stores them as separate XML fields)."""
    findings = _squash(findings or "")
    impression = _squash(impression or "")
    if not findings and not impression:
        return Summary(None, EMPTY_REPORT)
    if not findings:
        return Summary(None, NO_FINDINGS, impression=impression)
    if not impression:
        return Summary(None, NO_IMPRESSION, findings=findings)
    if word_count(findings) < MIN_FINDINGS_WORDS:
        return Summary(None, SHORT_FINDINGS, findings, impression)
    if word_count(impression) < MIN_IMPRESSION_WORDS:
        return Summary(None, SHORT_IMPRESSION, findings, impression)
    clean_findings, removed_f = clean_section(findings)
    clean_impression, removed_i = clean_section(impression)
    removed = tuple(removed_f + removed_i)
    merged = f"{clean_findings} {clean_impression}".strip()
    if not merged:
        return Summary(None, NOTHING_LEFT, clean_findings, clean_impression, removed)
    return Summary(merged, None, clean_findings, clean_impression, removed)


def summarize_report(report: str | None) -> Summary:
    """All four rules on a free-text report with ``FINDINGS:`` / ``IMPRESSION:`` headings.

    >>> summarize_report("FINDINGS: The heart is normal in size. The lungs are clear without "
    ...     "effusion. Compared to prior, no change.\\nIMPRESSION: No acute disease.").text
    'The heart is normal in size. The lungs are clear without effusion. No acute disease.'
    """
    if report is None or not report.strip():
        return Summary(None, EMPTY_REPORT)
    findings, impression = findings_and_impression(report)
    return summarize_sections(findings, impression)


def summary_funnel(summaries: Iterable[Summary]) -> dict[str, int]:
    """Counts for a funnel table: ``{"reports": N, <reason>: n, ..., "kept": k}``."""
    counts: Counter[str] = Counter()
    total = 0
    for summary in summaries:
        total += 1
        counts[summary.dropped or "kept"] += 1
    return {"reports": total, **{reason: counts[reason] for reason in DROP_REASONS},
            "kept": counts["kept"]}
