"""The full profile at real size on a GPU: MedCLIP's Swin-T + a LLaMA-7B-shaped LLM, end to end.

Skipped without CUDA (CI has none). On a GPU it writes stand-ins in the real file layouts —
MedCLIP's ``pytorch_model.bin`` (Swin-T, 768-d, legacy keys) and a LLaMA folder with
safetensors shards at LLaMA-7B's width and depth (random weights, a small synthetic-report
vocabulary) — and runs ``tutorials/full_scale_train.py`` on them: load → cache features →
align (bf16 autocast, gradient checkpointing) → save. ``XRAYGPT_GPU_TEST_LAYERS`` (default 32)
shrinks the LLM's depth when a GPU has less memory or time. What it measured is written to
``XRAYGPT_GPU_TEST_JSON`` when that is set (``benchmarks/gpu_session.sh`` collects it).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
import torch
from test_full_scale import _script  # loads tutorials/full_scale_train.py

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (full profile at 7B size)")

#: LLaMA-7B / Vicuna-7B sizes (Touvron et al. 2023, Table 2); the vocabulary is the stand-in tokenizer's.
LLAMA_7B = dict(hidden_size=4096, num_attention_heads=32, intermediate_size=11008, max_position_embeddings=2048)


def test_full_profile_trains_the_projection_of_a_7b_shaped_llm_on_gpu(tmp_path, capsys):
    from xraygpt_lab.data.synthetic.export import export_dataset
    from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
    from xraygpt_lab.models.llm import save_llm, tiny_llm, train_tokenizer
    from xraygpt_lab.models.medclip import MedCLIPModel, medclip_state_dict
    from xraygpt_lab.models.text_encoder import TextEncoder, TextEncoderConfig
    from xraygpt_lab.run_folder import load_weights

    layers = int(os.environ.get("XRAYGPT_GPU_TEST_LAYERS", "32"))
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # MedCLIP stand-in: the real Swin-T vision layout (no encoder_config file → the loader's default)
    torch.manual_seed(0)
    medclip = MedCLIPModel(VisionEncoder(EncoderConfig.full()),
                           TextEncoder(TextEncoderConfig(num_heads=1, masked_mean=False, projection_dim=512)))
    (tmp_path / "medclip").mkdir()
    torch.save(medclip_state_dict(medclip), tmp_path / "medclip" / "pytorch_model.bin")
    del medclip

    export_dataset(tmp_path / "data", n=24, size=224, seed=5, workers=1, progress=False)
    summaries = [json.loads(line)["summary"] for line in (tmp_path / "data" / "reports.jsonl").read_text().splitlines()]
    tokenizer = train_tokenizer(summaries * 4, vocab_size=512, min_frequency=1)

    # The LLM is built on the GPU in bf16 (7B in fp32 on the CPU would take 27 GB and minutes).
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            llm = tiny_llm(tokenizer, num_hidden_layers=layers, **LLAMA_7B)
    finally:
        torch.set_default_dtype(previous)
    n_llm = sum(p.numel() for p in llm.parameters())
    save_llm(llm, tokenizer, tmp_path / "llm")
    del llm
    torch.cuda.empty_cache()
    timings["write_stand_ins_s"] = time.perf_counter() - start

    torch.cuda.reset_peak_memory_stats()
    out = tmp_path / "run"
    steps, batch = 12, 3  # XrayGPT stage 1's batch size
    args = ["--medclip", str(tmp_path / "medclip"), "--llm", str(tmp_path / "llm"), "--data", str(tmp_path / "data"),
            "--out", str(out), "--steps", str(steps), "--batch-size", str(batch), "--quiet"]
    start = time.perf_counter()
    assert _script().main(args) == 0
    timings["train_script_s"] = time.perf_counter() - start
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    history = json.loads((out / "stage1_history.json").read_text())

    assert summary["steps_done"] == steps and summary["finished"] and summary["records"] == 24
    losses = [row["loss"] for row in history]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    assert abs(losses[0] - math.log(len(tokenizer))) < 2.0  # a random LM: about ln(vocab)
    weights, metadata = load_weights(out / "projection.safetensors")
    assert weights["weight"].shape == (4096, 768) and weights["weight"].dtype == torch.float32  # Linear(768 → 4096)
    assert metadata["stage"] == "1"
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    assert peak_gib < 2.5 * n_llm * 2 / 2**30  # bf16 weights + activations; the LLM is not copied in fp32

    # chat with the trained 7B-shaped model through the library: on a GPU ChatSession decodes with the
    # static KV cache and a captured CUDA graph per step (models.static_decode)
    from xraygpt_lab.data.readers.images import load_image, preprocess
    from xraygpt_lab.models.llm import load_llm
    from xraygpt_lab.models.medclip import load_medclip_vision
    from xraygpt_lab.models.xraygpt import ChatSession, XrayGPT

    encoder = load_medclip_vision(tmp_path / "medclip", device="cuda")
    llm, tok = load_llm(tmp_path / "llm", dtype=torch.bfloat16, device="cuda")
    model = XrayGPT(encoder, llm, tok).to("cuda")
    model.projection.load_state_dict({k: v.to("cuda") for k, v in weights.items()})
    image = sorted((tmp_path / "data").rglob("*.png"))[0]
    session = ChatSession(model, preprocess(load_image(image), 224)[None], max_new_tokens=48)
    session.ask("Describe the given chest x-ray image in detail.")  # warm-up: prefill, graph capture
    decode: dict[str, float] = {}
    for name, kwargs in (("static_graph", {}), ("dynamic_eager", {"static_cache": False})):
        session.reset()
        torch.cuda.synchronize()
        start = time.perf_counter()
        reply = session.ask("Describe the given chest x-ray image in detail.", **kwargs)
        torch.cuda.synchronize()
        n_tokens = max(1, len(tok(reply.text, add_special_tokens=False)["input_ids"]))
        decode[f"chat_{name}_seconds"] = time.perf_counter() - start
        decode[f"chat_{name}_tokens"] = n_tokens
    assert getattr(llm, "_xraygpt_static_decoder").graph_error is None

    report = {"llm_parameters": n_llm, "layers": layers, "steps": steps, "batch": batch, "losses": losses,
              "peak_memory_gib": peak_gib, "device_name": torch.cuda.get_device_name(), **timings,
              "script_seconds_in_loop": summary["seconds"], **decode}
    if os.environ.get("XRAYGPT_GPU_TEST_JSON"):
        Path(os.environ["XRAYGPT_GPU_TEST_JSON"]).write_text(json.dumps(report, indent=2))
