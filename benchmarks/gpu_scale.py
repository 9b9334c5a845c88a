"""GPU scale check: XrayGPT's alignment step at 7B shape, with random weights.

What it measures (XrayGPT, arXiv 2306.07971 Sec. 3: frozen MedCLIP Swin-T → one ``nn.Linear``
→ frozen Vicuna-7B; only the linear layer trains):

* **alignment throughput** — samples/s of training steps on cached image features
  ``[B, 49, 768]``: ``Linear(768, 4096)`` → spliced between prompt embeddings → frozen LLaMA →
  cross-entropy on the target tokens only;
* **MFU** — ``4 · N_llm · tokens_per_step / step_time`` over the bf16 matmul peak measured in the
  same run. ``4·N`` per token = forward ``2N`` + backward through the activations ``2N`` (the
  frozen weights get no gradients, so the usual third ``2N`` for weight gradients is absent);
* **latency** — first token (prefill of BOS + prompt + 49 image tokens, batch 1) and per-token
  decode with the KV cache, with and without bf16 autocast; on CUDA also the kernels launched and
  the GPU-busy time of one decode step (one H200: 1,461 kernels, 5.8 ms busy in a
  35–103 ms step — host-bound);
* the Swin-T encoder's images/s when caching features, and peak GPU memory.

Shapes: ``7b`` is LLaMA-7B / Vicuna-7B (hidden 4096, 32 layers, 32 heads, MLP 11008, vocab
32000; Touvron et al. 2023 Table 2) in bf16 with autocast; ``small`` is a toy LLaMA that runs
on a CPU in seconds (used by ``tests/test_gpu_scale.py``). The vision side is always MedCLIP's
swin-tiny layout (224 px → 7 × 7 = 49 tokens of 768).

Run:  ``python benchmarks/gpu_scale.py --shape 7b --steps 10 --batch 4``
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder  # noqa: E402

#: LLaMA-7B (= Vicuna-7B v1) sizes; small = a toy that keeps the same code path.
SHAPES: dict[str, dict[str, int]] = {
    "7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, intermediate_size=11008, vocab_size=32000),
    "small": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=172, vocab_size=512),
}
#: Length of ``###Patient: <Img>`` + ``</Img> {instruction} ###Doctor: `` in LLaMA tokens (about).
PROMPT_TOKENS = 32
#: XrayGPT's ``max_txt_len``.
TARGET_TOKENS = 160


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast on CUDA (what XrayGPT's AMP training does); nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=dtype)
    return nullcontext()


def _cache_argument(model: nn.Module) -> str:
    """``cache`` in transformers ≥ 5.2x, ``past_key_values`` before (same object either way)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of a large square matmul in ``dtype`` (the denominator of MFU)."""
    size = size or (8192 if device.type == "cuda" else 512)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    seconds = time.perf_counter() - start
    return 2 * size**3 * repeats / seconds


def build_llm(shape: str, device: torch.device, dtype: torch.dtype, gradient_checkpointing: bool) -> nn.Module:
    """A randomly initialised, frozen ``LlamaForCausalLM`` of the given shape on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=2048, attn_implementation="sdpa")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build directly in bf16: 7B fp32 would need 27 GB first
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.requires_grad_(False)
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()  # checkpointing is active only in train mode; dropout is 0 in LLaMA
    else:
        model.eval()
    model.config.use_cache = False
    return model


def _decode(llm: nn.Module, next_id: torch.Tensor, cache, cache_name: str, tokens: int,
            dev: torch.device) -> tuple[float, torch.Tensor, object]:
    """Greedy cached decoding of ``tokens`` tokens; returns (seconds per token, last id, cache)."""
    _sync(dev)
    start = time.perf_counter()
    for _ in range(tokens):
        out = llm(input_ids=next_id, use_cache=True, **{cache_name: cache})
        cache = getattr(out, cache_name)
        next_id = out.logits[:, -1].argmax(-1, keepdim=True)  # [1, 1]
    _sync(dev)
    return (time.perf_counter() - start) / tokens, next_id, cache


def _profile_decode_step(llm: nn.Module, next_id: torch.Tensor, cache, cache_name: str, dev: torch.device) -> dict:
    """Kernel launches and GPU-busy time of one cached decode step (``torch.profiler``; CUDA only).

    Few milliseconds of GPU time inside a much longer step means the step is bound by the host
    (Python + one launch per kernel), not by reading the weights."""
    if dev.type != "cuda":
        return {"decode_kernels_per_token": None, "decode_gpu_busy_seconds": None}
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        llm(input_ids=next_id, use_cache=True, **{cache_name: cache})
        _sync(dev)
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    return {"decode_kernels_per_token": sum(e.count for e in events),
            "decode_gpu_busy_seconds": sum(e.self_device_time_total for e in events) / 1e6}


def run(
    shape: str = "small",
    steps: int = 5,
    batch: int = 2,
    device: str | None = None,
    gradient_checkpointing: bool = False,
    target_tokens: int = TARGET_TOKENS,
    decode_tokens: int = 16,
    warmup: int = 1,
    seed: int = 0,
) -> dict:
    """Run the whole measurement and return a dict of results (also printed as JSON by ``main``)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}")
    if steps < 1 or batch < 1:
        raise ValueError("steps and batch must be ≥ 1")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    torch.manual_seed(seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        torch.backends.cuda.matmul.allow_tf32 = True

    peak = measure_matmul_peak(dev, dtype)

    # --- vision: MedCLIP's swin-tiny layout, frozen; cache features once ------------------
    encoder = VisionEncoder(EncoderConfig.full()).to(dev).freeze()
    images = torch.randn(batch, 1, 224, 224, device=dev)  # [B, 1, 224, 224]
    with torch.no_grad(), _autocast(dev, dtype):
        encoder.encode_tokens(images)  # warm-up
        _sync(dev)
        start = time.perf_counter()
        features = encoder.encode_tokens(images).float()  # [B, 49, 768]
        _sync(dev)
    encoder_images_per_s = batch / (time.perf_counter() - start)
    del encoder

    # --- LLM (frozen) + the one trainable layer ---------------------------------------------
    llm = build_llm(shape, dev, dtype, gradient_checkpointing)
    hidden = llm.config.hidden_size
    n_llm = sum(p.numel() for p in llm.parameters())
    projection = nn.Linear(features.shape[-1], hidden).to(dev)  # fp32 master weights
    trainable = sum(p.numel() for p in projection.parameters())
    optimizer = torch.optim.AdamW(projection.parameters(), lr=1e-4, weight_decay=0.05)  # XrayGPT stage 1
    vocab = llm.config.vocab_size
    embed = llm.get_input_embeddings()
    prompt_ids = torch.randint(3, vocab, (batch, PROMPT_TOKENS), device=dev)  # [B, P]
    target_ids = torch.randint(3, vocab, (batch, target_tokens), device=dev)  # [B, T]
    bos = torch.ones(batch, 1, dtype=torch.long, device=dev)  # [B, 1]  LLaMA BOS id 1
    half = PROMPT_TOKENS // 2
    n_image = features.shape[1]
    seq_len = 1 + PROMPT_TOKENS + n_image + target_tokens
    labels = torch.full((batch, seq_len), -100, dtype=torch.long, device=dev)  # [B, L]
    labels[:, -target_tokens:] = target_ids  # loss on the target only (-100 on BOS/prompt/image)

    def step() -> float:
        with _autocast(dev, dtype):
            image_embeds = projection(features)  # [B, 49, hidden]
            with torch.no_grad():
                before = embed(torch.cat([bos, prompt_ids[:, :half]], 1))  # [B, 1+P/2, hidden]
                after = embed(torch.cat([prompt_ids[:, half:], target_ids], 1))  # [B, P/2+T, hidden]
            inputs = torch.cat([before, image_embeds.to(before.dtype), after], 1)  # [B, L, hidden]
            loss = llm(inputs_embeds=inputs, labels=labels, use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    weight_before = projection.weight.detach().clone()
    for _ in range(warmup):
        step()
    _sync(dev)
    start = time.perf_counter()
    losses = [step() for _ in range(steps)]
    _sync(dev)
    step_time = (time.perf_counter() - start) / steps
    tokens_per_step = batch * seq_len
    achieved = 4 * n_llm * tokens_per_step / step_time
    projection_changed = not torch.equal(weight_before, projection.weight.detach())

    # --- latency: prefill (first token) and cached decode, batch 1 --------------------------
    llm.eval()
    with torch.no_grad(), _autocast(dev, dtype):
        prefix = torch.cat(
            [embed(bos[:1]), embed(prompt_ids[:1, :half]), projection(features[:1]).to(embed.weight.dtype),
             embed(prompt_ids[:1, half:])], 1
        )  # [1, 1+P+49, hidden]
        llm(inputs_embeds=prefix, use_cache=True)  # warm-up
        _sync(dev)
        start = time.perf_counter()
        out = llm(inputs_embeds=prefix, use_cache=True)
        next_id = out.logits[:, -1].argmax(-1, keepdim=True)  # [1, 1]
        _sync(dev)
        first_token_s = time.perf_counter() - start
        cache_name = _cache_argument(llm)
        cache = getattr(out, cache_name)
        decode_s, next_id, cache = _decode(llm, next_id, cache, cache_name, decode_tokens, dev)
    with torch.no_grad():  # the weights are bf16 already: autocast only adds casts
        decode_plain_s, next_id, cache = _decode(llm, next_id, cache, cache_name, decode_tokens, dev)
        kernels = _profile_decode_step(llm, next_id, cache, cache_name, dev)

    result = {
        "shape": shape,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "batch": batch,
        "steps": steps,
        "gradient_checkpointing": gradient_checkpointing,
        "llm_parameters": n_llm,
        "trainable_parameters": trainable,
        "image_tokens": n_image,
        "sequence_length": seq_len,
        "tokens_per_step": tokens_per_step,
        "step_seconds": step_time,
        "samples_per_second": batch / step_time,
        "tokens_per_second": tokens_per_step / step_time,
        "achieved_flops": achieved,
        "peak_matmul_flops": peak,
        "mfu": achieved / peak,
        "first_token_seconds": first_token_s,
        "decode_seconds_per_token": decode_s,
        "decode_seconds_per_token_no_autocast": decode_plain_s,
        **kernels,
        "encoder_images_per_second": encoder_images_per_s,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses_finite": all(math.isfinite(x) for x in losses),
        "projection_updated": projection_changed,
        "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--target-tokens", type=int, default=TARGET_TOKENS)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(
        shape=args.shape,
        steps=args.steps,
        batch=args.batch,
        device=args.device,
        gradient_checkpointing=args.gradient_checkpointing,
        target_tokens=args.target_tokens,
        decode_tokens=args.decode_tokens,
    )
    print(
        f"{result['shape']} on {result['device_name']}: {result['samples_per_second']:.2f} samples/s, "
        f"MFU {result['mfu']:.1%} (peak {result['peak_matmul_flops'] / 1e12:.1f} TFLOP/s), "
        f"first token {result['first_token_seconds'] * 1e3:.1f} ms, "
        f"decode {result['decode_seconds_per_token'] * 1e3:.1f} ms/token "
        f"({result['decode_seconds_per_token_no_autocast'] * 1e3:.1f} without autocast)"
        + (f", {result['decode_kernels_per_token']} kernels and {result['decode_gpu_busy_seconds'] * 1e3:.1f} ms "
           "of GPU time per token" if result["decode_kernels_per_token"] else "")
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
