"""The cheap benchmarks run end to end at toy sizes and return their keys (no timing thresholds)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: A toy LLM and Swin (the tiny profile's layouts, smaller) on the smallest synthetic image.
TOY_LLM = {"vocab_size": 320, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
           "num_attention_heads": 2, "max_position_embeddings": 256}
TOY_ENCODER = {"patch_size": 8, "embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2], "window_size": 2,
               "projection_dim": 16}
TOY = {"image_size": 32, "llm_sizes": TOY_LLM, "encoder_sizes": TOY_ENCODER}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_lists_our_benchmarks_under_their_keys():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        run_all = load("run_all")
    finally:
        sys.path.remove(str(BENCHMARKS))
    keys = {key: module for key, module, *_ in run_all.BENCHMARKS}
    assert keys["kv_cache_speedup"] == "kv_cache"
    assert keys["feature_cache_ratio"] == "feature_cache"
    assert keys["walkthrough_s"] == "walkthrough_time"


def test_kv_cache_generates_exactly_the_requested_tokens_on_both_paths():
    result = load("kv_cache").run(new_tokens=10, repeats=1, **TOY)
    assert result["new_tokens"] == 10  # run() raises when a path produced another count
    assert result["cached_s"] > 0 and result["uncached_s"] > 0
    assert result["kv_cache_speedup"] > 0 and result["torch_threads"] == 1
    assert isinstance(result["same_tokens"], bool)
    assert result["prompt_tokens"] > 1  # image tokens + template


def test_kv_cache_rejects_a_context_overflow():
    with pytest.raises(ValueError, match="exceed the context"):
        load("kv_cache").run(new_tokens=300, repeats=1, **TOY)


def test_feature_cache_epochs_compute_the_same_training():
    result = load("feature_cache").run(n_images=6, batch_size=3, **TOY,
                                       repeats=1)
    assert result["batches"] == 2
    assert result["cache_misses"] == 6 and result["cache_hits"] == 6  # filled once, read once
    assert result["loss_cached"] == pytest.approx(result["loss_uncached"], abs=1e-4)
    assert result["feature_cache_ratio"] > 0 and result["cache_fill_s"] >= 0  # rounded: 0.0 when fast
    assert result["torch_threads"] == 1  # the default, restored afterwards


def test_threads_are_restored_after_a_benchmark():
    import torch

    before = torch.get_num_threads()
    with load("kv_cache").torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with load("feature_cache").torch_threads(0):
            pass


def test_walkthrough_timer_times_a_command_and_reports_failures(tmp_path):
    bench = load("walkthrough_time")
    seconds, status, tail = bench.time_command([sys.executable, "-c", "print('hello')"])
    assert status == 0 and tail.strip() == "hello" and seconds > 0
    command = bench.walkthrough_command(tmp_path / "run", "tiny", 3)
    assert command[1:4] == ["-m", "xraygpt_lab", "walkthrough"] and "--quiet" in command
    with pytest.raises(RuntimeError, match="status 2"):
        bench.run(profile="no-such-profile", out=str(tmp_path / "run"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        bench.run(out=str(tmp_path / "full"))


def test_chat_yes_no_reads_answers_and_scores_both_classes():
    bench = load("chat_yes_no")
    assert bench.answer_is_yes("Yes. A large left pleural effusion is present.", "Pleural Effusion")
    assert not bench.answer_is_yes("No, there is no pleural effusion.", "Pleural Effusion")
    assert bench.answer_is_yes("A small right pneumothorax is present.", "Pneumothorax")  # labeler decides
    assert not bench.answer_is_yes("The lungs are clear.", "Pneumothorax")
    rows = [{"truth": True, "yes": True}, {"truth": True, "yes": False}, {"truth": False, "yes": False}]
    assert bench.rates(rows) == {"n_pos": 2, "n_neg": 1, "sensitivity": 0.5, "specificity": 1.0,
                                 "balanced_accuracy": 0.75}
    assert bench.rates(rows[:2])["specificity"] is None  # no negatives: no rate, not NaN
    # a first word that the rest of the answer contradicts
    assert bench.self_contradicts("Yes. The heart is normal in size.", "Cardiomegaly")
    assert bench.self_contradicts("No, there is a moderate left pneumothorax.", "Pneumothorax")
    assert not bench.self_contradicts("No. The heart is normal in size.", "Cardiomegaly")
    assert not bench.self_contradicts("Yes. There is a small right pleural effusion.", "Pleural Effusion")
    assert not bench.self_contradicts("Yes.", "Pleural Effusion")  # nothing after the first word
    assert not bench.self_contradicts("Yes. Bilateral perihilar haziness from pulmonary edema.", "Pneumothorax")
    both = [{"truth": True, "yes": True, "contradicts": True}, {"truth": False, "yes": False, "contradicts": False}]
    assert bench.rates(both)["self_contradicting"] == 0.5 and "self_contradicting" not in bench.rates(rows)


def test_explain_pointing_names_each_finding_as_a_user_would():
    from types import SimpleNamespace

    bench = load("explain_pointing")
    nodule = SimpleNamespace(findings=[SimpleNamespace(observation="Lung Lesion", detail={"kind": "mass"})])
    assert bench.plain_name(nodule, "Lung Lesion") == "mass"
    assert bench.plain_name(nodule, "Pleural Effusion") == "pleural effusion"
    rows = [{"hit": True, "written": True, "random": 0.1}, {"hit": False, "written": False, "random": 0.1}]
    assert bench._rates(rows) == {"n": 2, "pointing": 0.5, "written": 0.5, "pointing_when_written": 1.0, "random": 0.1}


def test_encoder_head_best_f1_is_the_best_threshold():
    import numpy as np

    best_f1 = load("encoder_head").best_f1
    truth = np.array([1, 1, 0, 0, 0, 0])
    assert best_f1(np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.0]), truth) == pytest.approx(1.0)
    # scores ranked backwards: the best threshold calls everything positive, F1 = 2·2 / (6 + 2)
    assert best_f1(np.array([0.0, 0.1, 0.9, 0.8, 0.7, 0.6]), truth) == pytest.approx(0.5)
    assert np.isnan(best_f1(np.array([0.5, 0.4]), np.array([0, 0])))


def test_encoder_head_refuses_a_run_without_its_label_head():
    with pytest.raises(SystemExit, match="no token label head"):
        load("encoder_head").run("reference", n=4)


def test_labeler_conventions_scores_every_case_and_most_agree():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        result = load("labeler_conventions").run()
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert result["cases"] >= 400
    assert result["share_agreeing"] >= 0.85, result  # 0.90 measured; MeSH-side choices account for most of the rest


def test_lesion_misses_splits_written_missed_and_negative_films():
    bench = load("lesion_misses")
    assert bench.auc([0.9, 0.8], [0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert bench.auc([0.2], [0.2, 0.1]) == pytest.approx(0.75)  # a tie counts half
    assert bench.auc([], [0.1]) is None
    lesion = {"positive": True, "oracle": True, "kind": "nodule", "size_mm": 16, "seed": 1, "image_id": "a"}
    rows = [{**lesion, "score": 0.8, "written": True, "peak": 0.20, "with_findings": []},
            {**lesion, "score": 0.3, "written": False, "peak": 0.11, "with_findings": ["Atelectasis"]},
            {"positive": False, "score": 0.25, "written": False, "oracle": False, "seed": 1, "image_id": "b"},
            {"positive": False, "score": 0.5, "written": True, "oracle": False, "seed": 1, "image_id": "c"}]
    summary = bench.summarize(rows)
    assert (summary["recall"], summary["oracle_recall"], summary["false_lesions"]) == (0.5, 1.0, 1)
    assert summary["slot_score_auc"] == 0.75
    assert [b["recall"] for b in summary["recall_by_peak"]] == [0.0, None, 1.0]
    assert (summary["recall_alone"], summary["recall_with_other_findings"]) == (1.0, 0.0)
    assert [m["image_id"] for m in summary["missed"]] == ["a"] and summary["missed"][0]["peak"] == 0.11
    only_lesions = bench.summarize(rows[:2])  # no film without a lesion: no AUC, not a perfect 0
    assert only_lesions["slot_score_auc"] is None and only_lesions["lesions"] == 2


def test_lesion_misses_reads_the_reference_slot():
    """On the shipped reference the slot score separates lesions from the rest, and the LLM told the
    true concepts names every lesion (what the design notes' reading of the misses rests on)."""
    result = load("lesion_misses").run("reference", seeds=(1357,), n=100, log=lambda _: None)
    assert result["films"] == 100 and result["lesions"] >= 5
    assert result["slot_score_auc"] > 0.8
    assert result["oracle_recall"] >= 0.9 and result["oracle_recall"] >= result["recall"]
