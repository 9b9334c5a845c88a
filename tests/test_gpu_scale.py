"""benchmarks/gpu_scale.py runs end to end on a CPU at the small shape."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_scale.py"


def load_module():
    spec = importlib.util.spec_from_file_location("gpu_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_7b_shape_is_llama_7b() -> None:
    shape = load_module().SHAPES["7b"]
    assert shape == dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, intermediate_size=11008, vocab_size=32000)


def test_small_shape_runs_on_cpu_and_trains_only_the_projection(tmp_path) -> None:
    module = load_module()
    checkpointing = True
    result = module.main(
        ["--shape", "small", "--steps", "2", "--batch", "2", "--device", "cpu", "--decode-tokens", "3",
         "--target-tokens", "20", "--json", str(tmp_path / "r.json")]
        + (["--gradient-checkpointing"] if checkpointing else [])
    )
    assert (tmp_path / "r.json").is_file()
    assert result["device"] == "cpu" and result["gradient_checkpointing"] is checkpointing
    assert result["trainable_parameters"] == 768 * 64 + 64  # only Linear(768, hidden)
    assert result["image_tokens"] == 49  # MedCLIP swin-tiny: 7 × 7
    assert result["sequence_length"] == 1 + module.PROMPT_TOKENS + 49 + 20
    assert result["tokens_per_step"] == 2 * result["sequence_length"]
    assert result["projection_updated"] and result["losses_finite"]
    # ~ln(vocab) for a random LM on random targets
    assert abs(result["loss_first"] - math.log(512)) < 1.5
    for key in ("samples_per_second", "peak_matmul_flops", "first_token_seconds", "decode_seconds_per_token",
                "decode_seconds_per_token_no_autocast"):
        assert result[key] > 0
    assert result["decode_kernels_per_token"] is None  # the kernel count is a CUDA profile
    assert result["mfu"] == pytest.approx(
        4 * result["llm_parameters"] * result["tokens_per_step"] / result["step_seconds"] / result["peak_matmul_flops"]
    )
    assert 0 < result["mfu"] < 5  # CPU timings are noisy; the formula is what is checked above


def test_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown shape"):
        load_module().run(shape="70b", device="cpu")


def test_build_llm_is_frozen_and_checkpointing_is_switchable() -> None:
    import torch

    module = load_module()
    plain = module.build_llm("small", torch.device("cpu"), torch.float32, gradient_checkpointing=False)
    assert not any(p.requires_grad for p in plain.parameters())
    assert not any(getattr(m, "gradient_checkpointing", False) for m in plain.modules())
    checkpointed = module.build_llm("small", torch.device("cpu"), torch.float32, gradient_checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) for m in checkpointed.modules())
    assert checkpointed.training


def test_gpu_bench_runs_on_cpu_at_the_small_shape(tmp_path) -> None:
    """benchmarks/gpu_bench.py: the MFU sweep and the static-cache decode, at a CPU-sized shape."""
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT.with_name("gpu_bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--shape", "small", "--device", "cpu", "--batches", "2", "--steps", "1",
                          "--decode-tokens", "8", "--json", str(tmp_path / "b.json")])
    assert (tmp_path / "b.json").is_file()
    runs = result["alignment"]
    assert [(r["batch"], r["autocast"]) for r in runs] == [(2, True), (2, False)]
    best = result["alignment_best"]
    assert best["mfu"] == pytest.approx(
        4 * result["llm_parameters"] * best["tokens_per_step"] / best["step_seconds"] / result["peak_matmul_flops"])
    assert best["losses_finite"] and abs(best["loss_first"] - math.log(512)) < 1.5
    decode = result["decode"]
    assert decode["tokens_match_dynamic"] and decode["matching_prefix"] == 8  # static cache = dynamic cache
    assert not decode["cuda_graph"] and decode["static_seconds_per_token"] > 0
