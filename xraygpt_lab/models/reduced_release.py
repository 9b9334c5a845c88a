"""A reduced-size, randomly initialised XrayGPT release written in the released files' key layouts.

The released model (``models.released``) is read from four things people download: EVA's
``eva_vit_g.pth`` (EVA's own key names, ``blocks.N.*``, one block more than BLIP-2 uses), BLIP-2's
``blip2_pretrained_flant5xxl.pth`` (``{"model": …}``: Q-Former with its text parts, query tokens,
``ln_vision``, BLIP-2's own T5 head), the XrayGPT checkpoint (``{"model": {"llama_proj.*"}}``)
and a Hugging Face LLaMA folder. :func:`write_reduced_release` writes all four at a size a CPU
runs in seconds, with random weights, so the loader, the command line and every explanation can
be exercised without the 15 GB of real files (tests, notebook 09). Random weights: maps made on
it show the mechanics of the path, not medicine.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..errors import XrayGPTLabError
from .conversation import xraygpt_prompt
from .llm import save_llm, tiny_llm, train_tokenizer

#: Texts the reduced LLM's tokenizer is trained on (it generates noise; these make phrases tokenise).
REDUCED_REPORTS: tuple[str, ...] = ("There is a small left pleural effusion.", "The heart is enlarged.",
                                    "Lungs are clear.")


@dataclass(frozen=True)
class ReducedLayout:
    """Sizes of a reduced release (the released values in comments)."""

    image: int = 224  # 224
    patch: int = 14  # 14
    vit_width: int = 64  # 1408
    vit_heads: int = 4  # 16
    vit_mlp: int = 160  # 6144
    vit_blocks: int = 5  # 40 stored, 39 used
    qf_width: int = 32  # 768
    qf_heads: int = 2  # 12
    qf_mlp: int = 48  # 3072
    qf_layers: int = 3  # 12, cross-attention every 2nd
    queries: int = 32  # 32
    llm_width: int = 32  # 4096
    llm_layers: int = 2  # 32
    llm_context: int = 1024  # 2048

    @property
    def heads(self) -> dict[str, int]:
        """Head counts for ``load_release`` / ``release init`` (no tensor stores them)."""
        return {"vision_heads": self.vit_heads, "qformer_heads": self.qf_heads}


def _rand(g: torch.Generator, *shape: int, scale: float = 0.3) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


def _norm(g: torch.Generator, prefix: str, width: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": 1.0 + _rand(g, width, scale=0.1), f"{prefix}.bias": _rand(g, width, scale=0.1)}


def _linear(g: torch.Generator, prefix: str, out: int, inp: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": _rand(g, out, inp, scale=1 / math.sqrt(inp)), f"{prefix}.bias": _rand(g, out, scale=0.1)}


def eva_state(layout: ReducedLayout, seed: int = 0) -> dict[str, torch.Tensor]:
    """EVA ViT in ``eva_vit_g.pth``'s own names (q/v biases, no k bias): ``vit_blocks`` blocks."""
    g = torch.Generator().manual_seed(seed)
    grid, d = layout.image // layout.patch, layout.vit_width
    sd = {"cls_token": _rand(g, 1, 1, d), "pos_embed": _rand(g, 1, grid * grid + 1, d),
          "patch_embed.proj.weight": _rand(g, d, 3, layout.patch, layout.patch, scale=0.05),
          "patch_embed.proj.bias": _rand(g, d, scale=0.1)}
    for i in range(layout.vit_blocks):
        p = f"blocks.{i}"
        sd |= _norm(g, f"{p}.norm1", d) | _norm(g, f"{p}.norm2", d)
        sd[f"{p}.attn.qkv.weight"] = _rand(g, 3 * d, d, scale=1 / math.sqrt(d))
        sd[f"{p}.attn.q_bias"] = _rand(g, d, scale=0.2)
        sd[f"{p}.attn.v_bias"] = _rand(g, d, scale=0.2)
        sd |= _linear(g, f"{p}.attn.proj", d, d)
        sd |= _linear(g, f"{p}.mlp.fc1", layout.vit_mlp, d) | _linear(g, f"{p}.mlp.fc2", d, layout.vit_mlp)
    return sd


def blip2_state(layout: ReducedLayout, seed: int = 1) -> dict[str, torch.Tensor]:
    """BLIP-2's pretrained file: Q-Former with its text parts, query tokens, ``ln_vision``, its T5 head."""
    g = torch.Generator().manual_seed(seed)
    b, w = "Qformer.bert", layout.qf_width
    sd = {f"{b}.embeddings.word_embeddings.weight": _rand(g, 50, w),
          f"{b}.embeddings.position_embeddings.weight": _rand(g, 16, w),
          f"{b}.embeddings.position_ids": torch.arange(16)[None],
          "query_tokens": _rand(g, 1, layout.queries, w, scale=1.0)}
    sd |= _norm(g, f"{b}.embeddings.LayerNorm", w) | _norm(g, "ln_vision", layout.vit_width)
    for i in range(layout.qf_layers):
        p = f"{b}.encoder.layer.{i}"
        for kind, kv_width in [("attention", w)] + ([("crossattention", layout.vit_width)] if i % 2 == 0 else []):
            sd |= _linear(g, f"{p}.{kind}.self.query", w, w)
            sd |= _linear(g, f"{p}.{kind}.self.key", w, kv_width)
            sd |= _linear(g, f"{p}.{kind}.self.value", w, kv_width)
            sd |= _linear(g, f"{p}.{kind}.output.dense", w, w)
            sd |= _norm(g, f"{p}.{kind}.output.LayerNorm", w)
        for ffn in ("", "_query"):  # text FFN (unused by MiniGPT-4) and query FFN
            sd |= _linear(g, f"{p}.intermediate{ffn}.dense", layout.qf_mlp, w)
            sd |= _linear(g, f"{p}.output{ffn}.dense", w, layout.qf_mlp) | _norm(g, f"{p}.output{ffn}.LayerNorm", w)
    sd |= _linear(g, "Qformer.cls.predictions.transform.dense", w, w)
    sd["Qformer.cls.predictions.bias"] = _rand(g, 50)
    sd |= _linear(g, "t5_proj", 24, w)
    return sd


def checkpoint_state(layout: ReducedLayout, seed: int = 2) -> dict[str, torch.Tensor]:
    """The XrayGPT checkpoint's ``llama_proj``."""
    return _linear(torch.Generator().manual_seed(seed), "llama_proj", layout.llm_width, layout.qf_width)


def write_reduced_release(folder: str | os.PathLike, layout: ReducedLayout = ReducedLayout(),
                          seed: int = 0) -> dict[str, Path]:
    """Write the four released things at ``layout``'s sizes into ``folder``; returns their paths
    (``vit``, ``qformer``, ``checkpoint``, ``llm``). Same ``seed``, same weights. Refuses a folder
    that already holds any of them (nothing is overwritten)."""

    folder = Path(folder)
    paths = {"vit": folder / "eva_vit_g.pth", "qformer": folder / "blip2_pretrained_flant5xxl.pth",
             "checkpoint": folder / "xraygpt.pth", "llm": folder / "vicuna"}
    taken = [p.name for p in paths.values() if p.exists()]
    if taken:
        raise XrayGPTLabError(f"{folder} already holds {', '.join(taken)}: give a new folder for the reduced release")
    states = {"vit": eva_state(layout, seed), "qformer": {"model": blip2_state(layout, seed + 1)},
              "checkpoint": {"model": checkpoint_state(layout, seed + 2)}}
    for role, state in states.items():
        atomic_write(paths[role], lambda tmp, state=state: torch.save(state, tmp))
    tokenizer = train_tokenizer(list(REDUCED_REPORTS) * 20 + [xraygpt_prompt("Describe the image.")] * 5,
                                vocab_size=320)
    llm = tiny_llm(tokenizer, seed=seed + 3, hidden_size=layout.llm_width, intermediate_size=2 * layout.llm_width,
                   num_hidden_layers=layout.llm_layers, num_attention_heads=2,
                   max_position_embeddings=layout.llm_context)
    save_llm(llm, tokenizer, paths["llm"])
    return paths
