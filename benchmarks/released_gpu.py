"""The released XrayGPT's whole stack at its real size: memory, first-token latency, one IG map.

EVA ViT-g (39 blocks used, 1408 wide, 16 heads, patch 14, 224 px) → ``ln_vision`` → BLIP-2 Q-Former
(12 layers, 32 queries, cross-attention every second layer) → ``llama_proj`` (768 → 4096) →
LLaMA-7B (Touvron et al. 2023, Table 2), built by ``models.released`` with random weights in the
released dtypes (ViT and LLM in bf16 on a GPU, Q-Former and projection in float32, as
``load_release`` loads them). Measured:

* peak GPU memory after loading, after a chat answer and during one IG map;
* image tokens (ViT + Q-Former + projection) for one image;
* first-token latency of a chat answer (prefill of template + 32 image tokens + instruction) and
  milliseconds per further token (``XrayGPT.generate``: static cache + CUDA graph on a GPU);
* one Integrated-Gradients map of a phrase through ViT-g + Q-Former + projection + LLaMA
  (``interpret.attribution.attribute``, 16 steps, 4 per batch).

Random weights show cost, not medicine. ``--reduced`` runs the same code at toy sizes on a CPU.
Run: ``python benchmarks/released_gpu.py --json out.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_scale import build_llm  # noqa: E402

from xraygpt_lab.device import resolve_device, synchronize  # noqa: E402
from xraygpt_lab.models.released import (ReleasedSizes, ReleasedVisionEncoder, _build_modules,  # noqa: E402
                                         LN_VISION_EPS)

#: The released sizes (MiniGPT-4 / BLIP-2; models.released.ReleasedSizes documents each).
RELEASED = ReleasedSizes(image_size=224, patch_size=14, vision_width=1408, vision_depth=39, vision_blocks_in_file=40,
                         vision_heads=16, vision_mlp=6144, qformer_width=768, qformer_layers=12, qformer_heads=12,
                         qformer_mlp=3072, cross_attention_frequency=2, num_query_tokens=32, llm_width=4096)
REDUCED = ReleasedSizes(image_size=56, patch_size=14, vision_width=64, vision_depth=2, vision_blocks_in_file=2,
                        vision_heads=4, vision_mlp=128, qformer_width=48, qformer_layers=2, qformer_heads=4,
                        qformer_mlp=96, cross_attention_frequency=2, num_query_tokens=8, llm_width=64)
PHRASE_ANSWER = "There is a small left pleural effusion. The heart size is normal."
PHRASE = "small left pleural effusion"


def _random_init(module: torch.nn.Module, seed: int) -> None:
    """Normal(0, 0.02) weights, unit LayerNorm gains, zero biases (BERT / ViT initialisation)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.dtype))


def build_stack(sizes: ReleasedSizes, shape: str, dev: torch.device):
    """The toolkit's ``XrayGPT`` over the released vision side, random weights, released dtypes."""
    from xraygpt_lab.models.conversation import XRAYGPT_SYSTEM
    from xraygpt_lab.models.llm import train_tokenizer
    from xraygpt_lab.models.xraygpt import XrayGPT

    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    vision, qformer = _build_modules(sizes, meta=False)
    _random_init(vision, 0)
    _random_init(qformer, 1)
    vision.post_layernorm.eps = LN_VISION_EPS
    queries = torch.randn(1, sizes.num_query_tokens, sizes.qformer_width) * 0.02  # [1, Q, H]
    encoder = ReleasedVisionEncoder(vision.to(dev, dtype), qformer.to(dev, torch.float32), queries.to(dev),
                                    sizes).freeze()
    llm = build_llm(shape, dev, dtype, gradient_checkpointing=False)
    llm.config.use_cache = True
    texts = [PHRASE_ANSWER, "No acute cardiopulmonary process.", "Describe the findings of this chest x-ray."] * 20
    tokenizer = train_tokenizer(texts, vocab_size=512, min_frequency=1)
    vocab = int(llm.config.vocab_size)  # LLaMA's 32,000: pad the stand-in tokenizer so every id decodes
    if len(tokenizer) < vocab:
        tokenizer.add_tokens([f"<unused_{i}>" for i in range(vocab - len(tokenizer))])
    model = XrayGPT(encoder, llm, tokenizer).to(dev)
    model.chat_system = XRAYGPT_SYSTEM
    model.image_size = sizes.image_size
    return model.eval()


def _timed(fn, dev: torch.device, repeats: int = 3) -> tuple[float, object]:
    fn()  # warm-up (kernels, graphs)
    synchronize(dev)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    synchronize(dev)
    return (time.perf_counter() - start) / repeats, out


def run(reduced: bool = False, device: str | None = None, decode_tokens: int = 64, ig_steps: int = 16) -> dict:
    """The whole measurement; a dict for ``bench.json``'s ``gpu`` entry."""
    from captum.attr import IntegratedGradients

    from xraygpt_lab.interpret.targets import phrase_target

    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    sizes = REDUCED if reduced else RELEASED
    started = time.perf_counter()
    model = build_stack(sizes, "small" if reduced else "7b", dev)
    out: dict = {"sizes": sizes.to_dict(), "device": str(dev),
                 "device_name": torch.cuda.get_device_name(dev) if cuda else "cpu",
                 "parameters": {"vision": sum(p.numel() for p in model.encoder.vision.parameters()),
                                "qformer": sum(p.numel() for p in model.encoder.qformer.parameters()),
                                "llm": sum(p.numel() for p in model.llm.parameters())},
                 "build_seconds": time.perf_counter() - started}
    gib = 2 ** 30
    if cuda:
        out["memory_loaded_gib"] = torch.cuda.memory_allocated(dev) / gib
    pixels = torch.randn(1, 3, sizes.image_size, sizes.image_size, device=dev)  # [1, 3, S, S]
    with torch.no_grad():
        out["image_tokens_ms"] = 1e3 * _timed(lambda: model.embed_image(pixels), dev)[0]
        instruction = "Describe the findings of this chest x-ray."
        first, _ = _timed(lambda: model.generate(instruction, pixels, max_new_tokens=1), dev)
        many, text = _timed(lambda: model.generate(instruction, pixels, max_new_tokens=decode_tokens), dev, repeats=2)
    n_tokens = len(model.tokenizer(text[0], add_special_tokens=False)["input_ids"]) if text[0] else 0
    out["first_token_ms"] = 1e3 * first
    out["answer"] = {"max_new_tokens": decode_tokens, "tokens": n_tokens, "seconds": many,
                     "ms_per_token_after_first": 1e3 * (many - first) / max(1, n_tokens - 1)}
    if cuda:
        out["memory_after_chat_peak_gib"] = torch.cuda.max_memory_allocated(dev) / gib
        torch.cuda.reset_peak_memory_stats(dev)
    target = phrase_target(model, PHRASE, PHRASE_ANSWER)

    def score(px: torch.Tensor) -> torch.Tensor:  # [k, 3, S, S] -> [k]: log P(phrase | image, answer so far)
        embeds = model.embed_image(features=model.encoder.encode_tokens(px))  # [k, Q, d_llm] float32
        return target.from_image_embeds(embeds.to(model.llm.dtype))

    synchronize(dev)
    start = time.perf_counter()
    attr = IntegratedGradients(score).attribute(pixels, baselines=torch.zeros_like(pixels), n_steps=ig_steps,
                                                internal_batch_size=4)  # [1, 3, S, S]
    synchronize(dev)
    out["ig_map"] = {"seconds": time.perf_counter() - start, "steps": ig_steps, "per_batch": 4,
                     "baseline": "zero (the CLIP-normalised mean image)",
                     "finite": bool(torch.isfinite(attr).all()), "nonzero": bool(attr.abs().sum() > 0)}
    if cuda:
        out["ig_map"]["peak_gib"] = torch.cuda.max_memory_allocated(dev) / gib
    out["seconds"] = time.perf_counter() - started
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reduced", action="store_true", help="toy sizes (runs on a CPU in seconds)")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    result = run(args.reduced, args.device, args.decode_tokens, args.ig_steps)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text)
    return result


if __name__ == "__main__":
    main()
