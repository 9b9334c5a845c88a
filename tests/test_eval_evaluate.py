"""One evaluation of a model and its three baselines (eval.evaluate), on a toy model and data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS
from xraygpt_lab.eval.baselines import NORMAL_REPORT
from xraygpt_lab.eval.consistency import consistency_rates
from xraygpt_lab.eval.evaluate import (SYSTEMS, EvalData, RetrievalPool, encode, evaluate_systems,
                                       generate_reports, retrieval_pool, score_reports, score_system,
                                       synthetic_eval_data, training_pool)
from xraygpt_lab.models.conversation import xraygpt_prompt
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.llm import tiny_llm, train_tokenizer
from xraygpt_lab.models.xraygpt import XrayGPT

SIZE = 32  # smallest image the synthetic world renders


@pytest.fixture(scope="module")
def data() -> EvalData:
    return synthetic_eval_data(8, SIZE, seed=4321)


@pytest.fixture(scope="module")
def model(data) -> XrayGPT:
    tokenizer = train_tokenizer(data.references * 3 + [xraygpt_prompt("Describe the image.")], vocab_size=320)
    llm = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    encoder = VisionEncoder(EncoderConfig(image_size=SIZE, patch_size=8, embed_dim=16, depths=[1, 1],
                                          num_heads=[2, 2], window_size=2, projection_dim=16))
    return XrayGPT(encoder, llm, tokenizer).eval()


@pytest.fixture(scope="module")
def evaluation(model, data):
    # the pool is the evaluation set itself: retrieval must find each image's own report
    pool = retrieval_pool(model.encoder, data.pixel_values, data.references)
    return evaluate_systems(model, data, pool, n_boot=30, max_new_tokens=6, batch_size=4)


def test_synthetic_eval_data_has_truth_for_every_rendered_observation(data):
    assert data.pixel_values.shape == (8, 1, SIZE, SIZE)
    assert len(set(data.image_ids)) == 8
    assert all(set(t) == set(RENDERED_OBSERVATIONS) for t in data.ground_truth)


def test_eval_data_rejects_mismatched_inputs():
    pixels = torch.zeros(2, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="2 images but 1 reference"):
        EvalData(pixels, ["a"])
    with pytest.raises(ValueError, match="non-empty"):
        EvalData(pixels, ["a", "  "])
    with pytest.raises(ValueError, match="ground-truth"):
        EvalData(pixels, ["a", "b"], ground_truth=[{}])
    with pytest.raises(ValueError, match=r"\[images, 1, S, S\]"):
        EvalData(torch.zeros(2, SIZE, SIZE), ["a", "b"])
    with pytest.raises(ValueError, match="retrieval pool"):
        RetrievalPool(torch.zeros(3, 4), ["a"])


def test_encode_returns_projection_input_and_unit_embeddings(model, data):
    tokens, embeddings = encode(model.encoder, data.pixel_values, batch_size=3)
    assert torch.allclose(tokens, model.encode_image(data.pixel_values), atol=1e-5)
    assert embeddings.shape[0] == 8
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(8), atol=1e-5)


def test_scoring_uses_the_metrics_intervals(evaluation, data):
    """One bootstrap: score_system's and score_reports' ``ci`` are report_metrics' (same seed)."""
    from xraygpt_lab.eval.metrics import bootstrap_intervals, report_metrics

    preds = evaluation.reports["xraygpt"][:5] + data.references[5:]  # some overlap, some none
    refs, ref_labels = data.references, evaluation.labels["reference"]
    metrics, pred_labels = score_system(preds, refs, ref_labels, n_boot=15, seed=3)
    direct = report_metrics(preds, refs, pred_labels, ref_labels, RENDERED_OBSERVATIONS, n_boot=15, seed=3)
    assert metrics["ci"] == direct["ci"] == bootstrap_intervals(preds, refs, pred_labels, ref_labels,
                                                                RENDERED_OBSERVATIONS, 15, seed=3)
    assert score_reports(preds, refs, n_boot=15)["ci"] == score_system(preds, refs, ref_labels, n_boot=15)[0]["ci"]


def test_train_evaluation_reexports_the_eval_functions():
    from xraygpt_lab.train import evaluation

    assert evaluation.generate_reports is generate_reports and evaluation.score_reports is score_reports


def test_every_system_has_a_report_per_image_and_intervals_contain_the_value(evaluation):
    assert evaluation.systems == list(SYSTEMS)
    for system in SYSTEMS:
        m = evaluation.metrics[system]
        assert len(evaluation.reports[system]) == 8
        intervals = list(m["ci"].values()) + list(m["vs_ground_truth"]["ci"].values())
        assert len(intervals) == 8
        assert m["repetition_rate"] == consistency_rates(evaluation.reports[system])["repetition_rate"]
        assert m["contradiction_rate"] == consistency_rates(evaluation.reports[system])["contradiction_rate"]
        assert all(0.0 <= low <= high <= 1.0 for low, high in intervals)
    assert evaluation.reports["always_normal"] == [NORMAL_REPORT] * 8


def test_nearest_neighbour_on_its_own_pool_retrieves_the_reference(evaluation, data):
    nn = evaluation.metrics["nearest_neighbour"]
    assert evaluation.reports["nearest_neighbour"] == data.references
    assert nn["rougeL"] == pytest.approx(1.0)
    assert nn["ce_f1_macro"] == pytest.approx(1.0)  # same text → same labeler output
    assert nn["repetition_rate"] == nn["contradiction_rate"] == 0.0  # the synthetic reports are consistent
    # vs ground truth it can only be as good as the labeler reading the reference
    assert nn["vs_ground_truth"]["ce_f1_macro"] == pytest.approx(evaluation.labeler_ceiling["ce_f1_macro"])


def test_always_normal_precision_is_the_share_of_normal_studies(evaluation, data):
    truth = evaluation.metrics["always_normal"]["vs_ground_truth"]
    normal = sum(t["No Finding"] == 1 for t in data.ground_truth)
    abnormal_positives = sum(t[o] == 1 for t in data.ground_truth for o in RENDERED_OBSERVATIONS if o != "No Finding")
    assert truth["ce_precision_micro"] == pytest.approx(normal / 8)
    assert truth["ce_recall_micro"] == pytest.approx(normal / (normal + abnormal_positives))
    errors = evaluation.errors("always_normal")
    assert errors["n_missed"].sum() == abnormal_positives
    assert errors["n_invented"].sum() == 8 - normal


def test_tables_have_one_row_per_system_and_observation(evaluation):
    table = evaluation.metrics_table()
    assert list(table.index) == list(SYSTEMS)
    assert table.loc["nearest_neighbour", "rougeL"] > table.loc["always_normal", "rougeL"]
    assert {"rougeL_low", "rougeL_high", "truth_f1_macro_low", "repetition_rate", "contradiction_rate",
            "contradiction_rate_high"} <= set(table.columns)
    per = evaluation.per_observation_table("truth")
    assert len(per) == len(SYSTEMS) * len(RENDERED_OBSERVATIONS)
    assert set(per.columns) >= {"system", "observation", "precision", "recall", "f1", "support"}
    assert "side_agreement" in table.columns
    # the neighbour's report is each image's own reference here: every side it names agrees
    assert evaluation.metrics["nearest_neighbour"]["side_pairs"] > 0
    assert evaluation.metrics["nearest_neighbour"]["side_agreement"] == 1.0
    assert evaluation.metrics["always_normal"]["side_agreement"] is None  # names nothing with a side
    assert evaluation.metrics["nearest_neighbour"]["grade_agreement"] in (None, 1.0)
    assert "grade_agreement" in table.columns
    own = evaluation.errors("nearest_neighbour")
    assert own["wrong_side"].map(len).sum() == own["wrong_grade"].map(len).sum() == 0
    worst = evaluation.failures("always_normal", k=3)
    assert len(worst) <= 3 and (worst["n_errors"].diff().dropna() <= 0).all()


def test_failures_show_each_kind_of_error_before_repeating_one(evaluation, monkeypatch):
    import pandas as pd

    rows = [  # (missed, invented) per film, in test order
        ([], ["No Finding"]), ([], ["No Finding"]), (["Lung Lesion"], []), ([], ["No Finding"]),
        ([], ["Lung Lesion"]), (["Edema", "Fracture"], []), ([], []),
    ]
    table = pd.DataFrame([{"image_id": f"f{i}", "index": i, "n_missed": len(m), "n_invented": len(v),
                           "missed": m, "invented": v, "generated": "", "reference": ""}
                          for i, (m, v) in enumerate(rows)])
    monkeypatch.setattr(evaluation, "errors", lambda system="xraygpt", reference="truth": table.copy())
    # the two-error film first; then one film of each one-error kind in test order; repeats last
    assert list(evaluation.failures("xraygpt", k=6)["index"]) == [5, 0, 2, 4, 1, 3]
    assert list(evaluation.failures("xraygpt", k=3)["index"]) == [5, 0, 2]
    assert "repeat" not in evaluation.failures("xraygpt").columns


def test_paired_comparison(evaluation):
    same = evaluation.compare("xraygpt", "xraygpt", "ce_f1_macro")
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0}
    better = evaluation.compare("nearest_neighbour", "always_normal", "rougeL")
    assert better["difference"] > 0 and better["low"] > 0
    with pytest.raises(ValueError, match="metric"):
        evaluation.compare("xraygpt", "always_normal", "bleu4")
    with pytest.raises(ValueError, match="unknown system"):
        evaluation.compare("xraygpt", "oracle")


def test_json_has_the_metrics_json_shape(evaluation):
    out = json.loads(json.dumps(evaluation.to_json(n_examples=2)))
    assert out["n"] == 8 and out["system"] == "xraygpt"
    assert out["rougeL"] == pytest.approx(evaluation.metrics["xraygpt"]["rougeL"])
    assert set(out["baselines"]) == set(SYSTEMS) - {"xraygpt"}
    assert out["baselines"]["image_blind"]["how"].startswith("same model")
    assert out["vs_ground_truth"]["labeler_ceiling_f1_macro"] == pytest.approx(
        evaluation.labeler_ceiling["ce_f1_macro"])
    assert len(out["examples"]) == 2 and "always_normal" in out["examples"][0]
    assert isinstance(out["ci"]["rougeL"], list)
    assert set(out["consistency_metrics"]) == {"repetition_rate", "contradiction_rate"}
    assert out["contradiction_rate"] == evaluation.metrics["xraygpt"]["contradiction_rate"]


def test_training_pool_redraws_the_stage1_cases(model):
    model.run_config, model.image_size = {"seeds": {"stage1": 11}}, SIZE
    try:
        pool = training_pool(model, n=3)
    finally:
        del model.run_config, model.image_size
    assert pool.reports == synthetic_eval_data(3, SIZE, seed=11).references
    with pytest.raises(ValueError, match="stage-1 seed"):
        training_pool(model, n=3)


def test_bad_requests_fail_clearly(model, data):
    with pytest.raises(ValueError, match="retrieval pool"):
        evaluate_systems(model, data, None, systems=["nearest_neighbour"])
    with pytest.raises(ValueError, match="unknown systems"):
        evaluate_systems(model, data, None, systems=["oracle"])


def test_without_ground_truth_only_the_labeler_reference(model, data):
    blind = EvalData(data.pixel_values[:3], data.references[:3])
    result = evaluate_systems(model, blind, systems=["always_normal"], n_boot=0)
    assert "vs_ground_truth" not in result.metrics["always_normal"] and result.labeler_ceiling is None
    with pytest.raises(ValueError, match="no ground-truth"):
        result.errors("always_normal", reference="truth")
    assert np.isfinite(result.metrics["always_normal"]["rougeL"])
