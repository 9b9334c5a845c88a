"""Repetition and contradiction checks on hand-written reports (eval.consistency)."""
from __future__ import annotations

import pytest

from xraygpt_lab.data.text.labeler import find_mentions
from xraygpt_lab.eval.consistency import (ASSERTED_AND_DENIED, OPPOSITE_SIDE, consistency_flags,
                                          consistency_rates, contradictions, normalize_unit, report_parts,
                                          repetitions, sentences, sides)

CONSISTENT = ("There is a small right pleural effusion, blunting the right costophrenic angle. "
              "No focal consolidation, pneumothorax or pulmonary edema. The heart is normal in size. "
              "To summarise: small right pleural effusion.")


def kinds(report: str) -> list[tuple[str, str]]:
    return [(c.observation, c.kind) for c in contradictions(report)]


# ---------------------------------------------------------------------------------- splitting
def test_sentences_split_whatever_the_case_and_keep_decimals():
    text = "Heart is enlarged, with a ratio of 0.63.  To summarise: moderate cardiomegaly. mild atelectasis. 1. Edema."
    assert sentences(text) == ["Heart is enlarged, with a ratio of 0.63.", "To summarise: moderate cardiomegaly.",
                               "mild atelectasis.", "Edema."]


def test_normalize_unit_ignores_case_whitespace_and_punctuation():
    assert normalize_unit("  No   PNEUMOTHORAX!") == normalize_unit("no pneumothorax.") == "no pneumothorax"
    assert normalize_unit("ratio of 0.63") == "ratio of 0.63"


def test_summary_starts_at_the_first_summary_cue_or_the_impression_section():
    body, summary = report_parts(CONSISTENT)
    assert len(body) == 3 and summary == ["To summarise: small right pleural effusion."]
    body, summary = report_parts("FINDINGS: Small left pleural effusion. No pneumothorax.\n\n"
                                 "IMPRESSION: Small left pleural effusion.")
    assert body == ["Small left pleural effusion.", "No pneumothorax."]
    assert summary == ["Small left pleural effusion."]
    assert report_parts("The lungs are clear.") == (["The lungs are clear."], [])


# ---------------------------------------------------------------------------------- repetition
def test_a_repeated_sentence_counts_whatever_its_case_and_punctuation():
    report = "The heart is normal in size. No pleural effusion. the heart is  normal in size!"
    assert repetitions(report) == ["the heart is normal in size"]


def test_a_repeated_clause_counts():
    report = ("There is a small left pleural effusion, blunting the left costophrenic angle. "
              "Mild atelectasis; blunting the left costophrenic angle.")
    assert repetitions(report) == ["blunting the left costophrenic angle"]


def test_short_shared_fragments_are_no_repetition():
    report = "In summary, the lungs are clear. In summary, the heart is normal. No pneumothorax, no."
    assert repetitions(report) == []
    assert repetitions("Heart normal, no. Lungs clear, no.") == []


def test_a_report_without_repeats_has_none():
    assert repetitions(CONSISTENT) == []
    assert repetitions("") == []


def test_the_summary_may_restate_the_body_once_but_not_loop():
    restated = "Moderate left pneumothorax. The heart is normal in size. To summarise: x. Moderate left pneumothorax."
    assert repetitions(restated) == []
    looping = ("There is a moderate left pneumothorax. To summarise: moderate left pneumothorax. "
               "moderate left pneumothorax. moderate left pneumothorax.")
    assert repetitions(looping) == ["moderate left pneumothorax"]
    sectioned = "FINDINGS: No pneumothorax. No pneumothorax.\n\nIMPRESSION: No pneumothorax."
    assert repetitions(sectioned) == ["no pneumothorax"]


# ---------------------------------------------------------------------------------- contradiction
def test_asserted_and_denied_in_the_body():
    assert kinds("There is a moderate left pneumothorax. No pneumothorax or pulmonary edema is seen.") == [
        ("Pneumothorax", ASSERTED_AND_DENIED)]


def test_a_summary_that_names_a_finding_the_body_denies():
    found = contradictions("The heart is normal in size. No pleural effusion. In summary: severe cardiomegaly.")
    assert [(c.observation, c.kind) for c in found] == [("Cardiomegaly", ASSERTED_AND_DENIED)]
    assert found[0].asserted == "In summary: severe cardiomegaly."
    assert found[0].other == "The heart is normal in size."


def test_a_summary_on_the_opposite_side():
    report = ("There is a displaced fracture of the left fourth posterior rib. No pleural effusion. "
              "To summarise: right seventh rib fracture.")
    assert kinds(report) == [("Fracture", OPPOSITE_SIDE)]
    sectioned = "FINDINGS: There is a small left pleural effusion.\n\nIMPRESSION: Small right pleural effusion."
    assert kinds(sectioned) == [("Pleural Effusion", OPPOSITE_SIDE)]


def test_the_example_from_the_tiny_model_is_caught_once_per_observation():
    report = ("There is a moderate left pneumothorax. The heart is normal in size. No pneumothorax or pulmonary "
              "edema is seen. In summary: moderate right pneumothorax.")
    assert kinds(report) == [("Pneumothorax", ASSERTED_AND_DENIED)]


def test_sides_are_read_in_the_clause_of_the_mention():
    # the sentence names both sides; the effusion's clause only the left one
    report = ("There is a small left pleural effusion and a moderate right pneumothorax. "
              "To summarise: small right pleural effusion.")
    assert kinds(report) == [("Pleural Effusion", OPPOSITE_SIDE)]
    effusion = [m for m in find_mentions(report) if m.observation == "Pleural Effusion"][0]
    assert "left" in effusion.clause and "right" not in effusion.clause
    summary_both_sides = ("There is a small left pleural effusion. There is a moderate left pneumothorax. "
                          "To summarise: small right pleural effusion and a moderate left pneumothorax.")
    assert kinds(summary_both_sides) == [("Pleural Effusion", OPPOSITE_SIDE)]
    denial_both_sides = "Small right pleural effusion. No left pleural effusion and there is a right pneumothorax."
    assert contradictions(denial_both_sides) == []


def test_a_consistent_report_with_negatives_for_other_observations():
    assert contradictions(CONSISTENT) == []
    assert contradictions("") == []


def test_a_denial_on_the_other_side_is_consistent_and_an_unsided_one_is_not():
    assert contradictions("Small right pleural effusion. No left pleural effusion.") == []
    assert kinds("Small right pleural effusion. No pleural effusion.") == [("Pleural Effusion", ASSERTED_AND_DENIED)]


def test_bilateral_covers_both_sides():
    assert sides("bilateral pleural effusions") == {"left", "right"}
    assert sides("left-sided pacemaker") == {"left"}
    assert contradictions("Bilateral pleural effusions. In summary: small left pleural effusion.") == []


def test_uncertain_wording_is_neither_asserted_nor_denied():
    assert contradictions("There is a possible small left pleural effusion. No pleural effusion is seen.") == []
    assert contradictions("Pneumothorax cannot be excluded. No pneumothorax is seen.") == []
    assert contradictions("There is a small left pneumothorax. In summary: possible right pneumothorax.") == []


def test_devices_have_no_side_check():
    report = "A right internal jugular central venous catheter is present. In summary: left-sided pacemaker."
    assert contradictions(report) == []


# ---------------------------------------------------------------------------------- rates
def test_rates_are_shares_of_reports():
    reports = [CONSISTENT, "No effusion. The heart is normal in size. The heart is normal in size.",
               "There is a moderate left pneumothorax. No pneumothorax.",
               "Left rib fracture. To summarise: right rib fracture."]
    assert consistency_rates(reports) == {"repetition_rate": 0.25, "contradiction_rate": 0.5}
    assert consistency_flags(reports)["contradiction_rate"].tolist() == [False, False, True, True]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no reports"):
        consistency_rates([])
    with pytest.raises(TypeError, match="sequence of reports"):
        consistency_rates("No pneumothorax.")
    with pytest.raises(TypeError, match="string"):
        repetitions(None)  # type: ignore[arg-type]
