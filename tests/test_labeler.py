"""The rule-based CheXpert-style labeler: negation, uncertainty, aggregation, synthetic recall."""
from __future__ import annotations

import pytest

from xraygpt_lab.data.findings import CHEXPERT_OBSERVATIONS
from xraygpt_lab.data.text.labeler import find_mentions, label_report, label_reports


def test_keys_are_the_14_chexpert_names():
    labels = label_report("Normal chest.")
    assert tuple(labels) == CHEXPERT_OBSERVATIONS
    assert labels["No Finding"] == 1 and all(v is None for k, v in labels.items() if k != "No Finding")


SENTENCES = [
    ("There is a small left pleural effusion.", "Pleural Effusion", 1),
    ("No pleural effusion.", "Pleural Effusion", 0),
    ("No focal consolidation, pleural effusion, or pneumothorax.", "Pneumothorax", 0),
    ("The lungs are clear without consolidation.", "Consolidation", 0),
    ("The lungs are free of focal airspace disease.", "Lung Opacity", 0),
    ("Interval resolution of the right pneumothorax.", "Pneumothorax", 0),
    ("The left pleural effusion has resolved.", "Pleural Effusion", 0),
    ("Pneumothorax is not seen.", "Pneumothorax", 0),
    ("Negative for fracture.", "Fracture", 0),
    ("The endotracheal tube has been removed.", "Support Devices", 0),
    ("Possible small right pleural effusion.", "Pleural Effusion", -1),
    ("Opacity may represent atelectasis.", "Atelectasis", -1),
    ("Pneumonia cannot be excluded.", "Pneumonia", -1),
    ("Cannot exclude a small pneumothorax.", "Pneumothorax", -1),
    ("Atelectasis versus pneumonia.", "Atelectasis", -1),
    ("Atelectasis versus pneumonia.", "Pneumonia", -1),
    # the opacity is seen; "versus" weighs its causes, after a comma
    ("Patchy bibasilar opacities, atelectasis versus pneumonia.", "Lung Opacity", 1),
    ("Patchy bibasilar opacities, atelectasis versus pneumonia.", "Atelectasis", -1),
    ("Findings suspicious for pneumonia.", "Pneumonia", -1),
    ("Heart size is normal.", "Cardiomegaly", 0),
    ("The heart is not enlarged.", "Cardiomegaly", 0),
    ("The heart is moderately enlarged.", "Cardiomegaly", 1),
    ("Borderline heart size.", "Cardiomegaly", -1),
    ("Normal cardiomediastinal silhouette.", "Enlarged Cardiomediastinum", 0),
    ("The mediastinum is widened.", "Enlarged Cardiomediastinum", 1),
    ("No change in the small left effusion.", "Pleural Effusion", 1),
    ("There is no pneumothorax but there is a small effusion.", "Pleural Effusion", 1),
    ("No pneumothorax; left basilar atelectasis.", "Atelectasis", 1),
    ("Right chest port with tip in the SVC.", "Support Devices", 1),
    ("Old healed left rib fractures.", "Fracture", 1),
    ("Mild pulmonary vascular congestion.", "Edema", 1),
    ("Stable 1.5 cm right upper lobe nodule.", "Lung Lesion", 1),
    ("Bony lesion in the humerus.", "Lung Lesion", None),
    ("Small pericardial effusion.", "Pleural Effusion", None),
    ("Residuals of prior granulomatous infection.", "Pneumonia", None),
    ("Left hydropneumothorax.", "Pneumothorax", 1),
]


# Errors found by reading OpenI reports where the labeler and OpenI's MeSH terms disagree; each
# sentence is a paraphrase of the real wording, with the value the rule now gives.
REAL_REPORT_SENTENCES = [
    # a sentence that starts in lower case is still a sentence: the negation stops at its end
    ("No pleural effusions or pneumothoraces. cardiomegaly.", "Cardiomegaly", 1),
    ("no pneumothorax . the heart is mildly enlarged .", "Cardiomegaly", 1),
    ("Atelectasis vs. pneumonia.", "Pneumonia", -1),  # an abbreviation is no sentence end
    # uncertainty right after the mention, also without "is"
    ("Small bilateral pleural effusions suspected.", "Pleural Effusion", -1),
    ("Mild interstitial edema, likely.", "Edema", -1),
    ("Patchy opacity likely atelectasis.", "Lung Opacity", 1),
    ("A pneumonia superimposed on emphysema and scarring would be a consideration.",
     "Pneumonia", -1),
    ("Atypical infection is another consideration.", "Pneumonia", -1),
    # a hedge on the cause is no hedge on the finding
    ("Streaky left basilar opacities are favored to represent scarring.", "Lung Opacity", 1),
    ("Opacities in the left base may be compatible with scarring.", "Lung Opacity", 1),
    # missing uncertainty cues
    ("Patchy opacity within the lingula favored as atelectasis.", "Atelectasis", -1),
    ("Maybe due to pulmonary fibrosis, scarring and/or atelectasis.", "Atelectasis", -1),
    ("Possibility of left rib 7 anterior nondisplaced fracture.", "Fracture", -1),
    # cues that are not uncertainty about the finding
    ("Age-indeterminate fracture of the right lateral 9th rib.", "Fracture", 1),
    ("Several rib fractures of indeterminate age.", "Fracture", 1),
    ("Considering technical factors stable mild cardiomegaly.", "Cardiomegaly", 1),
    ("Limited evaluation of the aortoiliac stent.", "Support Devices", 1),
    ("Recommend further evaluation of this nodule with chest CT.", "Lung Lesion", 1),
    ("Recommend chest CT to evaluate for a nodule.", "Lung Lesion", -1),
    # an uncertain adjective qualifies the words after it, not the next item of a list
    ("Heart size borderline enlarged, tracheostomy tube tip 4 cm above the carina.",
     "Support Devices", 1),
    ("There is questionable right lower lobe opacity.", "Lung Opacity", -1),
    ("Questionable old left posterior third and fourth rib fractures.", "Fracture", -1),
    # negation scope: a shared verb negates a whole list; a closed negation stops
    ("Consolidation, atelectasis, and blunting in the left lower lobe have cleared.",
     "Atelectasis", 0),
    ("Consolidation, atelectasis, and blunting in the left lower lobe have cleared.",
     "Consolidation", 0),
    ("Endotracheal tube and NG tube have been removed.", "Support Devices", 0),
    ("There has been clearing of left base airspace opacities.", "Lung Opacity", 0),
    ("No definite pleural effusion seen, dense nodule in the left lung.", "Lung Lesion", 1),
    ("The nodule in the right lower lobe is not well-seen on today's study.", "Lung Lesion", 0),
    # partly resolved is still there
    ("COPD with almost completely resolved right apical pneumothorax.", "Pneumothorax", 1),
    ("The left pleural effusion has nearly resolved.", "Pleural Effusion", 1),
    # missed phrasings
    ("There is a marked interval increase in heart size.", "Cardiomegaly", 1),
    ("Stable mild heart enlargement.", "Cardiomegaly", 1),
    ("Heart size XXXX large.", "Cardiomegaly", 1),
    ("The heart XXXX is slightly large.", "Cardiomegaly", 1),
    ("The heart is borderline in size.", "Cardiomegaly", -1),
    ("Large masslike opacity in the right lung base.", "Lung Lesion", 1),
    ("Minimal apical capping, greater on the left.", "Pleural Other", 1),
    ("Tracheostomy tip approximately 5 cm above the carina.", "Support Devices", 1),
    ("Neurostimulator overlying the thoracic spine.", "Support Devices", 1),
    ("Atrial septal occluder.", "Support Devices", 1),
    ("Prosthetic right shoulder.", "Support Devices", 1),
    ("Multiple overlying leads.", "Support Devices", 1),
    ("Right humeral internal fixation is noted.", "Support Devices", 1),
    ("Leads terminating in the right atrium and right ventricle.", "Support Devices", 1),
    # not in the lung, not a bone
    ("Expansile lesion of the right posterior 9th rib.", "Lung Lesion", None),
    ("Lucent lesion with a sclerotic margin in the right humeral head.", "Lung Lesion", None),
    ("Nodular densities over the posterior 9th ribs are consistent with nipple shadows.",
     "Lung Lesion", None),
    ("Nodular densities over the posterior 9th ribs are consistent with nipple shadows.",
     "Lung Opacity", None),
    ("Multiple round calcific densities represent old granulomatous disease.",
     "Lung Opacity", None),
    ("Oval sclerotic density projecting over the inferior right glenoid.", "Lung Opacity", None),
    ("Opacities are related to overlying soft tissues.", "Lung Opacity", None),
    ("Small retrocardiac density which may be secondary to a hiatal hernia.", "Lung Opacity", -1),
    ("Fractured sternotomy wires.", "Fracture", None),
    ("The lateral most screw is fractured.", "Fracture", None),
    ("Left central venous catheter fracture at the level of the first rib.", "Fracture", None),
    ("Fracture of the left clavicle with plate fixation.", "Fracture", 1),
    # ... but an attribution stays in its clause, and a device nearby is no broken device
    ("Patchy opacity in the right lower lobe and degenerative changes of the osseous structures.",
     "Lung Opacity", 1),
    ("Left upper lobe nodule is unchanged, and there are degenerative changes of the osseous structures.",
     "Lung Lesion", 1),
    ("There is a right lower lobe opacity as well as a left nipple shadow.", "Lung Opacity", 1),
    ("Opacity likely from atelectasis rather than external compression.", "Lung Opacity", 1),
    ("Rib fracture near the chest tube.", "Fracture", 1),
    ("Acute right 5th rib fracture adjacent to chest tube.", "Fracture", 1),
    ("No pneumothorax detected, moderate cardiomegaly.", "Cardiomegaly", 1),  # the closing verb is no cue
    ("Support devices: none.", "Support Devices", 0),  # a heading answered "none"
    ("Lines and tubes: None.", "Support Devices", 0),
    ("Support devices: right internal jugular catheter.", "Support Devices", 1),
]


#: MIMIC-CXR-style wording, values as CheXpert's conventions give them.
MIMIC_STYLE_SENTENCES = [
    # a double negative of uncertainty doubts the finding it names, not the one before it
    ("Left lower lobe atelectasis, cannot exclude pneumonia.", "Atelectasis", 1),
    ("Left lower lobe atelectasis, cannot exclude pneumonia.", "Pneumonia", -1),
    ("Bibasilar atelectasis, pneumonia not excluded.", "Atelectasis", 1),
    ("Bibasilar atelectasis, pneumonia not excluded.", "Pneumonia", -1),
    ("Small bilateral effusions, cannot exclude mild edema.", "Pleural Effusion", 1),
    ("Infiltrates, pulmonary edema difficult to entirely exclude.", "Edema", -1),
    # a hedge on what the finding is, or on its size, leaves the finding itself
    ("Opacity at the right base is likely atelectasis.", "Lung Opacity", 1),
    ("Opacity at the right base is likely atelectasis.", "Atelectasis", -1),
    ("Left pleural effusion is likely small.", "Pleural Effusion", 1),
    ("The effusion is likely loculated.", "Pleural Effusion", 1),
    ("A small effusion is likely.", "Pleural Effusion", -1),
    ("Opacity may be present at the left base.", "Lung Opacity", -1),
    ("No focal consolidation, though evaluation of the left base is limited by overlying effusion.",
     "Pleural Effusion", 1),
    # a negation stops before a new finding after a comma, not inside a list
    ("No pneumothorax, small left effusion.", "Pleural Effusion", 1),
    ("No effusion or pneumothorax, mild cardiomegaly.", "Cardiomegaly", 1),
    ("No focal consolidation, large pleural effusion, or pneumothorax.", "Pleural Effusion", 0),
    ("No evidence of consolidation, large pleural effusion/pneumothorax.", "Pneumothorax", 0),
    ("There is no longer a left pleural effusion.", "Pleural Effusion", 0),
    ("No increased opacity.", "Lung Opacity", 0),
    ("No interval increase in the small left effusion.", "Pleural Effusion", 1),
    ("Known left lung mass is not well seen on this study.", "Lung Lesion", -1),
    ("Possible small left effusion and definite right lower lobe consolidation.", "Consolidation", 1),
    ("Possible small left effusion and definite right lower lobe consolidation.", "Pleural Effusion", -1),
    ("Right upper lobe is collapsed.", "Atelectasis", 1),
    # heart and mediastinum, written tersely
    ("Heart size may be mildly enlarged.", "Cardiomegaly", -1),
    ("No effusion. Heart enlarged.", "Cardiomegaly", 1),
    ("Heart size is at the upper limits of normal.", "Cardiomegaly", 0),
    ("Heart and mediastinum within normal limits.", "Enlarged Cardiomediastinum", 0),
    ("The mediastinal and hilar contours are normal.", "Enlarged Cardiomediastinum", 0),
    ("Widening of the superior mediastinum.", "Enlarged Cardiomediastinum", 1),
    # ... and none of these rules reaches further than it should
    ("No pneumothorax, mild cardiomegaly, with no effusion or edema.", "Cardiomegaly", 1),
    ("No focal consolidation, large pleural effusion, pneumothorax.", "Pleural Effusion", 0),
    ("No focal consolidation, large pleural effusion and pneumothorax.", "Pleural Effusion", 0),
    ("No effusion, large heart.", "Cardiomegaly", 1),
    ("Infection may be superimposed.", "Pneumonia", -1),
    ("Pneumonia could be developing.", "Pneumonia", -1),
    ("Pneumonia is difficult to exclude in this patient.", "Pneumonia", -1),
    ("Mild pulmonary edema and small effusions cannot be entirely excluded.", "Edema", -1),
    ("Cardiomegaly, cannot exclude a small pericardial effusion.", "Cardiomegaly", 1),
    ("Evaluation of the left lung base is limited by a possible small effusion.", "Pleural Effusion", -1),
    ("No pleural effusion, left costophrenic angle not well seen.", "Pleural Effusion", 0),
    ("Known right upper lobe mass, not well seen.", "Lung Lesion", -1),
    ("Heart size is enlarged beyond the upper limits of normal.", "Cardiomegaly", 1),
    ("Heart size is slightly above the upper limits of normal.", "Cardiomegaly", None),
    ("There is no longer pleural effusion.", "Pleural Effusion", 0),
    # devices by their short names
    ("The ETT terminates 3 cm above the carina.", "Support Devices", 1),
    ("Dobhoff terminates in the duodenum.", "Support Devices", 1),
    ("Lines and tubes are unchanged.", "Support Devices", 1),
    ("Intra-aortic balloon pump tip 2 cm below the aortic knob.", "Support Devices", 1),
    ("Endobronchial valves in the left upper lobe.", "Support Devices", 1),
]


@pytest.mark.parametrize("sentence, observation, value",
                         SENTENCES + REAL_REPORT_SENTENCES + MIMIC_STYLE_SENTENCES)
def test_sentence_values(sentence, observation, value):
    assert label_report(sentence)[observation] == value, find_mentions(sentence)


def test_aggregation_positive_beats_uncertain_beats_negative():
    labels = label_report("No effusion on the right. Possible left effusion. Small left effusion.")
    assert labels["Pleural Effusion"] == 1
    assert label_report("No right effusion. Possible left effusion.")["Pleural Effusion"] == -1


@pytest.mark.parametrize("report", ["Emphysema.", "Moderate hiatal hernia. Lungs are clear.",
                                    "Degenerative changes of the thoracic spine.", "Calcified granuloma.",
                                    "Elevation of the right hemidiaphragm.", "Pneumomediastinum."])
def test_no_finding_is_blank_when_another_abnormality_is_named(report):
    """CheXpert: an abnormality outside the 13 observations also rules out "No Finding"."""
    labels = label_report(report)
    assert labels["No Finding"] is None
    assert all(labels[name] in (None, 0) for name in CHEXPERT_OBSERVATIONS if name != "No Finding")


def test_a_denied_or_normal_other_abnormality_keeps_no_finding():
    assert label_report("No hiatal hernia. Lungs are clear.")["No Finding"] == 1
    assert label_report("Heart size normal. No emphysema.")["No Finding"] == 1
    assert label_report("Lungs clear. Interstitial markings within normal limits.")["No Finding"] == 1
    assert label_report("Normal interstitial markings.")["No Finding"] == 1


def test_no_finding_rule_ignores_support_devices():
    assert label_report("Endotracheal tube in place. Lungs are clear.")["No Finding"] == 1
    assert label_report("Endotracheal tube in place. Possible pneumonia.")["No Finding"] is None
    assert label_report("Mild cardiomegaly.")["No Finding"] is None


def test_only_findings_and_impression_are_read_when_headed():
    report = "INDICATION: eval for pneumonia.\nFINDINGS: Lungs are clear.\nIMPRESSION: Normal chest."
    assert label_report(report)["Pneumonia"] is None
    assert label_report("eval for pneumonia")["Pneumonia"] == -1


def test_deidentification_blanks_do_not_break_negation():
    assert label_report("There are no XXXX of a pleural effusion.")["Pleural Effusion"] == 0


def test_label_reports_keeps_order_and_rejects_non_text():
    out = label_reports(["Cardiomegaly.", "No cardiomegaly."])
    assert [o["Cardiomegaly"] for o in out] == [1, 0]
    with pytest.raises(TypeError):
        label_report(None)  # type: ignore[arg-type]


def test_recovers_synthetic_ground_truth():
    """Macro-F1 >= 0.98 on the synthetic world's labelled observations (positive class).

    The synthetic world's "No Finding" is 1 only when nothing at all is drawn (devices
    included); CheXpert's rule lets Support Devices through, so the reference for "No Finding"
    is recomputed from the other synthetic labels with CheXpert's rule.
    """
    synthetic = pytest.importorskip("xraygpt_lab.data.synthetic.world")
    cases = list(synthetic.generate_cases(200, size=48, seed=11))
    scores = {}
    for observation in cases[0].labels:
        tp = fp = fn = 0
        for case in cases:
            truth = case.labels[observation] == 1
            if observation == "No Finding":
                truth = not any(v == 1 for k, v in case.labels.items()
                                if k not in ("No Finding", "Support Devices"))
            predicted = label_report(case.report)[observation] == 1
            tp += truth and predicted
            fp += predicted and not truth
            fn += truth and not predicted
        assert tp + fn > 0, f"no positive {observation} in 200 synthetic cases"
        scores[observation] = 2 * tp / (2 * tp + fp + fn)
    macro = sum(scores.values()) / len(scores)
    assert macro >= 0.98, scores


def test_runs_of_punctuation_stay_fast():
    """The sentence splitter tries a run of full stops once, not once per stop (quadratic before)."""
    import time

    start = time.perf_counter()
    label_report("effusion" + "." * 40_000 + "a")
    assert time.perf_counter() - start < 1.5


def test_a_text_without_punctuation_reads_each_mention_in_a_bounded_window():
    """Thousands of words in one "clause": each mention's cues are read within ``CUE_WINDOW``
    characters either side (linear, not quadratic), and a real list still shares its negation."""
    from xraygpt_lab.data.text.labeler import CUE_WINDOW, find_mentions

    mentions = find_mentions("effusion " * 3000)
    assert len(mentions) == 3000 and all(m.value == 1 for m in mentions)
    assert max(len(m.clause) for m in mentions) <= 2 * CUE_WINDOW + len("effusion")
    listed = label_report("No focal consolidation, pleural effusion, pneumothorax, pulmonary edema, "
                          "displaced rib fracture or suspicious pulmonary nodule is seen.")
    assert all(listed[name] == 0 for name in ("Consolidation", "Pleural Effusion", "Pneumothorax",
                                              "Edema", "Fracture", "Lung Lesion")), listed
