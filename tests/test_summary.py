"""XrayGPT's report -> summary rules, one test per rule."""
from __future__ import annotations

import pytest

from xraygpt_lab.data.text import summary as S
from xraygpt_lab.data.text.summary import summarize_report, summarize_sections, summary_funnel

FINDINGS = "The heart is normal in size. The lungs are clear. There is no pleural effusion."


def test_extract_sections_mimic_style():
    report = (" FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n INDICATION: ___ with cough\n"
              " FINDINGS: \n\n Lungs are clear.\n More text here.\n IMPRESSION: \n No acute process.\n")
    sections = S.extract_sections(report)
    assert sections["FINDINGS"] == "Lungs are clear. More text here."
    assert sections["IMPRESSION"] == "No acute process."
    assert sections["INDICATION"] == "___ with cough"


def test_merge_findings_and_impression():
    result = summarize_report(f"FINDINGS: {FINDINGS}\nIMPRESSION: No acute disease.")
    assert result.kept and result.dropped is None
    assert result.text == f"{FINDINGS} No acute disease."


@pytest.mark.parametrize("report, reason", [
    ("", S.EMPTY_REPORT),
    ("IMPRESSION: No acute disease.", S.NO_FINDINGS),
    (f"FINDINGS: {FINDINGS}", S.NO_IMPRESSION),
    ("FINDINGS: Lungs are clear.\nIMPRESSION: No acute disease.", S.SHORT_FINDINGS),
    (f"FINDINGS: {FINDINGS}\nIMPRESSION: Normal.", S.SHORT_IMPRESSION),
])
def test_drop_rules_return_their_reason(report, reason):
    result = summarize_report(report)
    assert result.text is None and result.dropped == reason


def test_word_thresholds_are_inclusive():
    nine = "one two three four five six seven eight nine."
    assert summarize_sections(nine, "No disease.").dropped == S.SHORT_FINDINGS
    assert summarize_sections(nine.replace("nine.", "nine ten."), "No disease.").kept


def test_comparison_sentences_are_removed():
    findings = FINDINGS + " Compared to the prior study, the heart is unchanged. Stable scarring."
    result = summarize_sections(findings, "No acute disease. Interval resolution of effusion.")
    assert "prior" not in result.text and "Stable" not in result.text
    assert "Interval" not in result.text
    assert len(result.removed) == 3


def test_deidentification_blanks_removed():
    result = summarize_sections(FINDINGS + " Dr. ___ was notified.", "There are no XXXX of effusion.")
    assert "___" not in result.text and "XXXX" not in result.text
    assert "Dr. was notified." in result.text and "There are no of effusion." in result.text


def test_view_mentions_removed():
    result = summarize_sections("PA and lateral views of the chest were obtained. " + FINDINGS
                                + " A nodule is seen on the lateral view.", "Small nodule.")
    assert "views" not in result.text and "lateral" not in result.text
    assert "A nodule is seen." in result.text


def test_sentences_keep_decimals_and_list_numbers():
    assert S.split_sentences("A 1.5 cm nodule. 2. No effusion.") == ["A 1.5 cm nodule.", "2. No effusion."]
    result = summarize_sections(FINDINGS, "1. No acute disease. 2. Small nodule.")
    assert result.text.endswith("No acute disease. Small nodule.")


def test_everything_removed_is_dropped():
    result = summarize_sections("Compared to the prior study there is no change in the lungs or heart.",
                                "Stable chest.")
    assert result.dropped == S.NOTHING_LEFT


def test_docstring_examples():
    import doctest

    from xraygpt_lab.data.readers import xraygpt as read_xraygpt
    from xraygpt_lab.data.text import labeler
    from xraygpt_lab.data.text import openi_reports as openi

    for module in (S, labeler, openi, read_xraygpt):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_examination_view_sentence_and_empty_brackets_removed():
    result = summarize_sections("The examination consists of frontal and lateral radiographs of the "
                                "chest. " + FINDINGS + " Discussed with Dr. <XXXX> by telephone.",
                                "No acute disease.")
    assert "examination" not in result.text and "<" not in result.text


def test_funnel_counts_every_reason():
    results = [summarize_report(r) for r in ["", "IMPRESSION: x y", f"FINDINGS: {FINDINGS}\nIMPRESSION: No disease."]]
    funnel = summary_funnel(results)
    assert funnel["reports"] == 3 and funnel["kept"] == 1
    assert funnel[S.EMPTY_REPORT] == 1 and funnel[S.NO_FINDINGS] == 1
    assert sum(funnel[r] for r in S.DROP_REASONS) + funnel["kept"] == funnel["reports"]


def test_a_view_sentence_keeps_its_finding_and_prior_means_a_study():
    """XrayGPT's dataset example: "PA and lateral views of the chest provided demonstrating no focal
    consolidation, effusion or pneumothorax." keeps its finding; "prior" and "since" mark a
    comparison only where they refer to an earlier study."""
    findings = ("PA and lateral views of the chest provided demonstrating no focal consolidation, effusion "
                "or pneumothorax. Status post prior median sternotomy. Since the patient is rotated, the "
                "mediastinum is difficult to assess. Heart size is similar to prior. There has been no "
                "change since the prior study.")
    result = summarize_sections(findings, "No acute intrathoracic process.")
    assert result.text.startswith("No focal consolidation, effusion or pneumothorax. Status post prior median "
                                  "sternotomy. Since the patient is rotated")
    assert "similar to prior" not in result.text and "since the prior study" not in result.text
    assert S.is_comparison("Compared with the prior radiograph, the effusion is smaller.")
    assert not S.is_comparison("History of prior tuberculosis.")
    assert S.summarize_sections("PA and lateral views of the chest were obtained. " + FINDINGS,
                                "No acute disease.").findings == FINDINGS
