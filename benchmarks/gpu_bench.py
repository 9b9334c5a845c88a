"""GPU benchmark at LLaMA-7B shape: alignment MFU by batch size, and batch-1 chat decoding.

One 7B-shaped ``LlamaForCausalLM`` (random weights, bf16; Touvron et al. 2023 Table 2) is built
once and measured two ways:

* **alignment** (XrayGPT stage 1 on cached image features: ``Linear(768, 4096)`` → spliced into
  the prompt → frozen LLaMA → cross-entropy on the target; arXiv 2306.07971 Sec. 3) at several
  batch sizes, with and without autocast, and, optionally, with each decoder layer compiled
  (``torch.compile`` on the repeated block). MFU = ``4 · N · tokens / step time`` over the bf16
  matmul peak measured in the same run (forward 2N + backward through the activations 2N; the
  frozen weights get no gradient, so the usual third 2N is absent). The best setting is
  profiled: GPU time in matrix multiplies, attention and everything else, against the wall time
  of a step, which is what bounds it.
* **decoding** (batch 1, greedy, the chat case): Hugging Face's dynamic cache, eager (the
  baseline), against ``models.static_decode`` (static KV cache + one captured CUDA graph per
  step): milliseconds per token, first-token latency after warm-up, and kernels per token.

Run on a GPU: ``python benchmarks/gpu_bench.py --json out.json``. ``--shape small`` runs the
same code on a CPU in seconds (tests).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_scale import PROMPT_TOKENS, TARGET_TOKENS, build_llm, measure_matmul_peak  # noqa: E402

from xraygpt_lab.device import resolve_device, synchronize  # noqa: E402
from xraygpt_lab.models.static_decode import StaticDecoder, cache_argument, greedy_tokens  # noqa: E402

N_IMAGE = 49  # MedCLIP swin-tiny at 224 px: 7 × 7 tokens
D_VISION = 768


def _categorise(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("gemm", "cutlass", "nvjet", "xmma", "cublas", "matmul", "wgmma", "sm90_")):
        return "matmul"
    if any(k in n for k in ("flash", "fmha", "attention", "sdpa", "softmax")):
        return "attention"
    return "other"


def cuda_profile(fn, dev: torch.device, repeats: int = 1) -> dict:
    """Kernels, GPU-busy time by category and wall time of ``repeats`` calls of ``fn`` (CUDA only)."""
    if dev.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    synchronize(dev)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        synchronize(dev)
    wall = (time.perf_counter() - start) / repeats
    busy = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    kernels = 0
    for e in prof.key_averages():
        if e.device_type.name != "CUDA":
            continue
        kernels += e.count
        busy[_categorise(e.key)] += e.self_device_time_total / 1e6
    total = sum(busy.values()) / repeats
    return {"kernels": kernels // repeats, "gpu_busy_seconds": total, "wall_seconds": wall,
            "busy_share": {k: v / repeats / total if total else 0.0 for k, v in busy.items()},
            "gpu_idle_share": max(0.0, 1 - total / wall) if wall else 0.0}


def alignment(llm: nn.Module, batch: int, steps: int, dev: torch.device, dtype: torch.dtype,
              autocast: bool, peak: float, profile: bool = False, seed: int = 0) -> dict:
    """Stage-1 steps at ``batch``: the projection trains, the LLM is frozen (XrayGPT Sec. 3)."""
    torch.manual_seed(seed)
    hidden, vocab = llm.config.hidden_size, llm.config.vocab_size
    n_llm = sum(p.numel() for p in llm.parameters())
    embed = llm.get_input_embeddings()
    projection = nn.Linear(D_VISION, hidden).to(dev)  # fp32 master weights
    optimizer = torch.optim.AdamW(projection.parameters(), lr=1e-4, weight_decay=0.05,
                                  fused=dev.type == "cuda")
    features = torch.randn(batch, N_IMAGE, D_VISION, device=dev)  # [B, 49, 768] cached encoder tokens
    prompt = torch.randint(3, vocab, (batch, PROMPT_TOKENS), device=dev)  # [B, P]
    target = torch.randint(3, vocab, (batch, TARGET_TOKENS), device=dev)  # [B, T]
    bos = torch.ones(batch, 1, dtype=torch.long, device=dev)  # [B, 1]
    half = PROMPT_TOKENS // 2
    seq = 1 + PROMPT_TOKENS + N_IMAGE + TARGET_TOKENS
    labels = torch.full((batch, seq), -100, dtype=torch.long, device=dev)  # [B, L]
    labels[:, -TARGET_TOKENS:] = target
    with torch.no_grad():
        before = embed(torch.cat([bos, prompt[:, :half]], 1))  # [B, 1+P/2, hidden]
        after = embed(torch.cat([prompt[:, half:], target], 1))  # [B, P/2+T, hidden]
    context = torch.autocast(dev.type, dtype=dtype) if autocast and dev.type == "cuda" else nullcontext()

    def step() -> torch.Tensor:
        with context:
            image = projection(features).to(before.dtype)  # [B, 49, hidden]
            inputs = torch.cat([before, image, after], 1)  # [B, L, hidden]
            loss = llm(inputs_embeds=inputs, labels=labels, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    first = float(step())  # warm-up (and compile, if the layers are compiled)
    step()
    synchronize(dev)
    start = time.perf_counter()
    losses = [step() for _ in range(steps)]
    synchronize(dev)
    seconds = (time.perf_counter() - start) / steps
    tokens = batch * seq
    result = {"batch": batch, "autocast": autocast, "sequence_length": seq, "tokens_per_step": tokens,
              "step_seconds": seconds, "samples_per_second": batch / seconds,
              "mfu": 4 * n_llm * tokens / seconds / peak, "loss_first": first,
              "losses_finite": all(math.isfinite(float(x)) for x in losses),
              "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None}
    if profile:
        result["profile"] = cuda_profile(step, dev, repeats=2)
    return result


def decode(llm: nn.Module, dev: torch.device, tokens: int, seed: int = 0) -> dict:
    """Batch-1 greedy decoding after a prompt of BOS + prompt + 49 image tokens."""
    torch.manual_seed(seed)
    hidden = llm.config.hidden_size
    dtype = llm.get_input_embeddings().weight.dtype
    prefix = torch.randn(1, 1 + PROMPT_TOKENS + N_IMAGE, hidden, device=dev, dtype=dtype) * 0.02  # [1, P, h]
    result: dict = {"prompt_tokens": prefix.shape[1], "decode_tokens": tokens}
    llm.eval()

    # baseline: Hugging Face's dynamic cache, one Python-launched kernel at a time
    name = cache_argument(llm)
    with torch.no_grad():
        def dynamic(n: int) -> tuple[float, list[int]]:
            synchronize(dev)
            start = time.perf_counter()
            out = llm(inputs_embeds=prefix, use_cache=True, logits_to_keep=1)
            ids = [int(out.logits[:, -1].argmax(-1))]
            cache = getattr(out, name)
            for _ in range(n - 1):
                out = llm(input_ids=torch.tensor([[ids[-1]]], device=dev), use_cache=True, logits_to_keep=1,
                          **{name: cache})
                cache = getattr(out, name)
                ids.append(int(out.logits[:, -1].argmax(-1)))
            synchronize(dev)
            return time.perf_counter() - start, ids

        dynamic(4)
        n_dyn = min(tokens, 32)
        seconds, dyn_ids = dynamic(n_dyn)
        result["dynamic_seconds_per_token"] = seconds / n_dyn

    # static cache + CUDA graph (models.static_decode): what the chat panel and CLI use on a GPU
    decoder = StaticDecoder(llm, max_cache_len=prefix.shape[1] + tokens + 8)
    start = time.perf_counter()
    list(greedy_tokens(decoder, prefix, 4))  # warm-up: prefill, capture
    synchronize(dev)
    result["static_setup_seconds"] = time.perf_counter() - start
    result["cuda_graph"] = decoder._graph is not None
    result["cuda_graph_error"] = decoder.graph_error
    synchronize(dev)
    start = time.perf_counter()
    logits = decoder.prefill(prefix)
    token = int(logits.argmax(-1))
    result["first_token_seconds"] = time.perf_counter() - start
    ids = [token]
    synchronize(dev)
    start = time.perf_counter()
    for _ in range(tokens - 1):
        token = int(decoder.step(token).argmax(-1))
        ids.append(token)
    synchronize(dev)
    per_token = (time.perf_counter() - start) / (tokens - 1)
    result["static_seconds_per_token"] = per_token
    result["static_tokens_per_second"] = 1 / per_token
    result["tokens_match_dynamic"] = ids[:n_dyn] == dyn_ids
    result["matching_prefix"] = next((i for i, (a, b) in enumerate(zip(ids, dyn_ids)) if a != b), n_dyn)
    if dev.type == "cuda":
        result["static_step_profile"] = cuda_profile(lambda: decoder.step(token), dev, repeats=4)
        with torch.no_grad():
            cache = getattr(llm(inputs_embeds=prefix, use_cache=True, logits_to_keep=1), name)
            next_id = torch.tensor([[ids[0]]], device=dev)
            result["dynamic_step_profile"] = cuda_profile(
                lambda: llm(input_ids=next_id, use_cache=True, logits_to_keep=1, **{name: cache}), dev)
        result["kernels_per_token"] = result["static_step_profile"]["kernels"]
        result["launches_per_token"] = 1 if result["cuda_graph"] else result["kernels_per_token"]
        weights = sum(p.numel() * p.element_size() for p in llm.parameters())
        result["weight_bytes"] = weights
        result["bandwidth_bound_seconds_per_token"] = weights / 4.3e12  # H200: ~4.3 TB/s measured copy rate
    return result


def run(shape: str = "small", device: str | None = None, batches: tuple[int, ...] = (2,), steps: int = 2,
        decode_tokens: int = 16, compile_layers: bool = False) -> dict:
    """The whole measurement; a dict for ``bench.json``'s ``gpu`` entry."""
    dev = resolve_device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    started = time.perf_counter()
    peak = measure_matmul_peak(dev, dtype)
    llm = build_llm(shape, dev, dtype, gradient_checkpointing=False)
    llm.train()  # dropout is 0 in LLaMA; train mode as in a real alignment stage
    out: dict = {"shape": shape, "device": str(dev),
                 "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "peak_matmul_flops": peak,
                 "llm_parameters": sum(p.numel() for p in llm.parameters()), "alignment": []}
    for batch in batches:
        for autocast in (True, False):
            try:
                out["alignment"].append(alignment(llm, batch, steps, dev, dtype, autocast, peak))
            except torch.OutOfMemoryError as exc:
                out["alignment"].append({"batch": batch, "autocast": autocast, "error": str(exc).splitlines()[0]})
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    ok = [r for r in out["alignment"] if "mfu" in r]
    best = max(ok, key=lambda r: r["mfu"])
    out["alignment_best"] = alignment(llm, best["batch"], steps, dev, dtype, best["autocast"], peak,
                                      profile=True)
    if compile_layers:
        for layer in llm.model.layers:  # one compiled block, reused by all 32 layers
            layer.compile()
        start = time.perf_counter()
        try:
            out["alignment_compiled"] = alignment(llm, best["batch"], steps, dev, dtype, best["autocast"], peak,
                                                  profile=True)
        except Exception as exc:  # a compile failure is reported, the decode still runs
            out["alignment_compiled"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
        out["alignment_compiled"]["wall_with_compile_seconds"] = time.perf_counter() - start
        llm = build_llm(shape, dev, dtype, gradient_checkpointing=False)  # decode without compiled layers
    out["decode"] = decode(llm, dev, decode_tokens)
    out["seconds"] = time.perf_counter() - started
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("7b", "small"), default="7b")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batches", default="3,8,16,24", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--compile-layers", action="store_true", help="also measure with each layer compiled")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.shape, args.device, tuple(int(b) for b in args.batches.split(",")), args.steps,
                 args.decode_tokens, args.compile_layers)
    best, d = result["alignment_best"], result["decode"]
    print(f"alignment: best MFU {best['mfu']:.1%} at batch {best['batch']} (autocast {best['autocast']}); "
          f"decode: {d['static_seconds_per_token'] * 1e3:.2f} ms/token static+graph "
          f"({d['dynamic_seconds_per_token'] * 1e3:.2f} dynamic), first token {d['first_token_seconds'] * 1e3:.1f} ms",
          flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
