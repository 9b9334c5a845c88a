"""Report metrics: ROUGE, BLEU, clinical efficacy and bootstrap intervals."""
from __future__ import annotations

import math

import pytest

from xraygpt_lab.eval.consistency import consistency_rates
from xraygpt_lab.eval.metrics import (bleu, bleu_from_statistics, bleu_statistics, bootstrap_ci,
                                     bootstrap_intervals, clinical_efficacy, report_metrics, rouge, tokenize)

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


# Fixed report pairs: exact copy, paraphrase, partial, unrelated, a 3-word hypothesis (no 4-gram).
PREDS = ["There is a small left pleural effusion. No pneumothorax.",
         "Moderate cardiomegaly; the lungs are clear.",
         "Mild pulmonary edema with bilateral perihilar haziness.",
         "No acute cardiopulmonary process.",
         "Right upper-lobe consolidation"]
REFS = ["There is a small left pleural effusion. No pneumothorax.",
        "The heart is moderately enlarged. The lungs are clear.",
        "Severe pulmonary edema with bilateral perihilar haziness. Small effusions.",
        "A 13 mm left middle lung nodule.",
        "Consolidation in the right upper lobe, concerning for pneumonia."]


def test_bleu4_is_nltk_corpus_bleu_on_fixed_texts():
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    hyps, refs = [tokenize(p) for p in PREDS], [[tokenize(r)] for r in REFS]
    assert tokenize("Right upper-lobe consolidation.") == ["right", "upper-lobe", "consolidation"]
    smooth = SmoothingFunction().method1
    for n in range(1, 5):
        expected = corpus_bleu(refs, hyps, weights=(1 / n,) * n, smoothing_function=smooth)
        assert bleu(PREDS, REFS)[f"bleu{n}"] == expected
    # the bootstrap's summed counts give the same number, to the last bit, on every subset
    stats = bleu_statistics(PREDS, REFS)
    for idx in ([0, 1, 2, 3, 4], [1, 1, 3], [4], [2, 4, 4, 0], [3]):
        sub = corpus_bleu([refs[i] for i in idx], [hyps[i] for i in idx], smoothing_function=smooth)
        assert bleu_from_statistics(stats[idx]) == sub == bleu([PREDS[i] for i in idx], [REFS[i] for i in idx])["bleu4"]
    assert bleu(["a b c d e"], ["x y z w v"]) == {"bleu1": 0.0, "bleu2": 0.0, "bleu3": 0.0, "bleu4": 0.0}
    assert bleu_from_statistics(bleu_statistics(["a b c d e"], ["x y z w v"])) == 0.0


def test_bleu4_by_hand():
    """hyp "the cat sat on the mat" vs ref "the cat sat on a mat": 6 words each (no brevity
    penalty); clipped matches 5/6 unigrams, 3/5 bigrams (the cat, cat sat, sat on), 2/4 trigrams,
    1/3 4-grams; BLEU-4 = (5/6 · 3/5 · 2/4 · 1/3) ** (1/4) = (1/12) ** (1/4)."""
    out = bleu(["The cat sat on the mat."], ["the cat sat on a mat"])
    assert math.isclose(out["bleu1"], 5 / 6)
    assert math.isclose(out["bleu2"], math.sqrt(5 / 6 * 3 / 5))
    assert math.isclose(out["bleu4"], (1 / 12) ** 0.25)
    # shorter hypothesis: brevity penalty exp(1 - 6/3), and no 4-gram: method1 counts 0.1 of 1
    short = bleu(["the cat sat"], ["the cat sat on a mat"])
    assert math.isclose(short["bleu4"], math.exp(1 - 6 / 3) * (1 * 1 * 1 * 0.1) ** 0.25)


def test_report_metrics_intervals_are_bootstrap_intervals():
    labels = [{"Pleural Effusion": 1}, {"Cardiomegaly": 1}, {}, {"Cardiomegaly": 0}, {"Pneumothorax": 1}]
    out = report_metrics(PREDS, REFS, labels, labels[::-1], OBS, n_boot=40, seed=7)
    assert out["ci"] == bootstrap_intervals(PREDS, REFS, labels, labels[::-1], OBS, 40, seed=7)
    assert set(out["ci"]) == {"rougeL", "bleu4", "ce_f1_macro", "ce_f1_micro", "repetition_rate",
                              "contradiction_rate"}
    assert "ci" not in report_metrics(PREDS, REFS, labels, labels, OBS, n_boot=0)


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
    for key in ("rouge1", "rouge2", "rougeL", "bleu4", "ce_f1_macro", "ce_f1_micro", "per_observation", "ci",
                "repetition_rate", "contradiction_rate"):
        assert key in out
    low, high = out["ci"]["rougeL"]
    assert low <= out["rougeL"] <= high


def test_report_metrics_rates_are_the_consistency_rates():
    preds = ["There is a small left pleural effusion. No pleural effusion.",
             "The heart is normal in size. The heart is normal in size.", "Clear lungs.", "No pneumothorax."]
    labels = [{}] * 4
    out = report_metrics(preds, preds, labels, labels, OBS, n_boot=30)
    assert out["repetition_rate"] == 0.25 and out["contradiction_rate"] == 0.25
    assert out["repetition_rate"] == consistency_rates(preds)["repetition_rate"]
    low, high = out["ci"]["contradiction_rate"]
    assert 0.0 <= low <= 0.25 <= high <= 1.0
