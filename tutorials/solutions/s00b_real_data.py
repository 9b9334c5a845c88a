"""Solutions for notebook 00b: XrayGPT's report filters."""
from __future__ import annotations

from xraygpt_lab.data.text.summary import is_comparison, split_sentences, word_count


def keep_report(findings: str | None, impression: str | None) -> bool:
    """Keep a report iff both sections exist, findings >= 10 words and impression >= 2 words."""
    if not findings or not impression:
        return False
    return word_count(findings) >= 10 and word_count(impression) >= 2


def drop_comparisons(section: str) -> str:
    """The section without sentences that compare with a prior study."""
    return " ".join(s for s in split_sentences(section) if not is_comparison(s))
