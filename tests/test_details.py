"""Side and grade agreement between a generated and a reference report (eval.details)."""
from __future__ import annotations

import pytest

from xraygpt_lab.eval.details import (detail_agreement, grade_agreement, grade_mismatches, grades, named_grades,
                                      named_sides, side_agreement, side_mismatches)

REFERENCE = ("No focal consolidation is seen. A 22 mm nodule is seen in the left lower lung. "
             "Moderate right-sided pleural effusion, with a meniscus, obscuring the right hemidiaphragm. "
             "There is a small left apical pneumothorax. The heart is normal in size. "
             "There is a displaced fracture of the left eighth posterior rib.")
GENERATED = ("No focal consolidation is seen. A large right pleural effusion is present. "
             "There is a small right apical pneumothorax. The cardiac silhouette is normal in size. "
             "There is a displaced fracture of the left fourth posterior rib.")


def test_named_sides_reads_each_asserted_finding_and_its_side():
    found = named_sides(REFERENCE)
    assert found == {"Lung Lesion": {"left"}, "Pleural Effusion": {"right"}, "Pneumothorax": {"left"},
                     "Fracture": {"left"}}  # denied consolidation and an unsided heart are absent
    both = named_sides("Bilateral perihilar haziness from moderate pulmonary edema. "
                       "Left pectoral pacemaker generator with a lead in the right ventricle.")
    assert both["Edema"] == {"left", "right"} and "Support Devices" not in both
    assert "Lung Opacity" not in both  # "haziness" shares the edema's phrase: its detail is the edema's
    assert named_sides("There is a small pneumothorax. No left pleural effusion.") == {}


def test_a_finding_on_the_wrong_side_is_found_where_ce_sees_none():
    assert side_mismatches(GENERATED, REFERENCE) == ["Pneumothorax"]
    assert side_mismatches(REFERENCE, REFERENCE) == []
    result = side_agreement([GENERATED, REFERENCE], [REFERENCE, REFERENCE])
    # effusion, pneumothorax and fracture in the first pair; all four findings in the second
    assert result["side_pairs"] == 7 and result["side_agreement"] == pytest.approx(6 / 7)
    assert result["side_per_observation"]["Pneumothorax"] == {"pairs": 2, "agree": 1}
    assert "Lung Lesion" in result["side_per_observation"]  # only where both name it
    one_side = side_agreement(["Bilateral pleural effusions."], ["Small left pleural effusion."])
    assert one_side["side_agreement"] == 0.0  # both sides against one is not agreement


def test_side_agreement_without_sided_findings_is_none_and_bad_input_is_refused():
    assert side_agreement(["The heart is normal in size."], ["No acute findings."]) == {
        "side_agreement": None, "side_pairs": 0, "side_per_observation": {}}
    with pytest.raises(ValueError, match="2 generated reports but 1 reference"):
        side_agreement(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="not one string"):
        side_agreement("a left effusion", ["a left effusion"])


def test_grades_put_size_and_severity_words_on_one_scale():
    assert grades("moderate right-sided pleural effusion") == {2}
    assert grades("the heart is mildly enlarged") == {1} and grades("massive left effusion") == {3}
    assert grades("there is a small left apical pneumothorax") == {1} and grades("no acute findings") == set()
    found = named_grades(REFERENCE)  # the nodule's "22 mm" and the fracture have no grade word
    assert found == {"Pleural Effusion": {2}, "Pneumothorax": {1}}
    assert named_grades("The heart is moderately enlarged. Severe pulmonary edema.") == {
        "Cardiomegaly": {2}, "Edema": {3}}


def test_a_wrong_size_is_found_and_counted_apart_from_the_side():
    assert grade_mismatches(GENERATED, REFERENCE) == ["Pleural Effusion"]  # large for moderate
    result = grade_agreement([GENERATED], [REFERENCE])
    assert (result["grade_agreement"], result["grade_pairs"]) == (0.5, 2)  # pneumothorax small in both
    both = detail_agreement([GENERATED], [REFERENCE])
    assert both["side_pairs"] == 3 and both["grade_pairs"] == 2 and set(both) == {
        "side_agreement", "side_pairs", "side_per_observation",
        "grade_agreement", "grade_pairs", "grade_per_observation"}
    assert grade_agreement(["Small pneumothorax."], ["Pneumothorax."])["grade_agreement"] is None
