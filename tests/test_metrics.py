"""Report metrics: ROUGE, BLEU, clinical efficacy and bootstrap intervals."""
from __future__ import annotations

import math

import pytest

from xraygpt_lab.eval.metrics import bleu, bootstrap_ci, clinical_efficacy, report_metrics, rouge

OBS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax"]


def test_rouge_identical_is_one_and_disjoint_is_zero():
    same = rouge(["the heart is enlarged"], ["the heart is enlarged"])
    assert all(math.isclose(v, 1.0) for v in same.values())
    none = rouge(["clear lungs"], ["large effusion"])
    assert all(v == 0.0 for v in none.values())


def test_rouge_orders_partial_overlap():
    ref = ["mild cardiomegaly with a small left pleural effusion"]
    close = rouge(["mild cardiomegaly and a small left pleural effusion"], ref)["rougeL"]
    far = rouge(["no acute cardiopulmonary process"], ref)["rougeL"]
    assert 0.5 < close < 1.0 and far < close


def test_bleu_ranges_and_orders():
    ref = ["there is a small left pleural effusion without pneumothorax"]
    exact = bleu(ref, ref)
    assert math.isclose(exact["bleu4"], 1.0)
    worse = bleu(["there is a large right pneumothorax"], ref)
    assert set(worse) == {"bleu1", "bleu2", "bleu3", "bleu4"}
    assert worse["bleu4"] < worse["bleu1"] < 1.0


def test_length_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge(["a", "b"], ["a"])


def test_clinical_efficacy_counts():
    pred = [{"Cardiomegaly": 1, "Pleural Effusion": 1}, {"Cardiomegaly": 0}, {"Pneumothorax": -1}]
    ref = [{"Cardiomegaly": 1, "Pleural Effusion": 0}, {"Cardiomegaly": 1}, {"Pneumothorax": None}]
    ce = clinical_efficacy(pred, ref, OBS)
    card = ce["per_observation"]["Cardiomegaly"]
    assert card["precision"] == 1.0 and card["recall"] == 0.5 and math.isclose(card["f1"], 2 / 3)
    eff = ce["per_observation"]["Pleural Effusion"]
    assert eff["f1"] == 0.0 and eff["support"] == 0  # claimed but absent
    # uncertain (-1) is not positive by default: Pneumothorax has nothing on either side
    assert ce["per_observation"]["Pneumothorax"]["f1"] is None
    assert math.isclose(ce["macro_f1"], (2 / 3 + 0.0) / 2)
    assert math.isclose(ce["micro_f1"], 2 * 1 / (2 * 1 + 1 + 1))
    ce_u = clinical_efficacy(pred, ref, OBS, uncertain_as_positive=True)
    assert ce_u["per_observation"]["Pneumothorax"]["f1"] == 0.0


def test_bootstrap_interval_brackets_the_estimate():
    import numpy as np

    values = np.linspace(0, 1, 101)
    low, high = bootstrap_ci(lambda idx: float(values[idx].mean()), len(values), n_boot=300)
    assert low < 0.5 < high and high - low < 0.3


def test_report_metrics_has_the_evaluate_keys():
    preds = ["small left pleural effusion", "normal heart size, clear lungs"]
    refs = ["small left pleural effusion", "the heart is enlarged"]
    labels_pred = [{"Pleural Effusion": 1}, {"Cardiomegaly": 0}]
    labels_ref = [{"Pleural Effusion": 1}, {"Cardiomegaly": 1}]
    out = report_metrics(preds, refs, labels_pred, labels_ref, OBS, n_boot=50)
    for key in ("rouge1", "rouge2", "rougeL", "bleu4", "ce_f1_macro", "ce_f1_micro", "per_observation", "ci"):
        assert key in out
    low, high = out["ci"]["rougeL"]
    assert low <= out["rougeL"] <= high
