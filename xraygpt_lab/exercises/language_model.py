"""Exercises for notebook 02 (language model): RMSNorm and rotary position embeddings.

Both are checked against the code the 7B model runs (``transformers``' LLaMA):

* :func:`check_rms_norm` — ``rms_norm(x [..., d], weight [d], eps) -> [..., d]``:
  ``x / sqrt(mean(x²) + eps) · weight`` over the last dimension (Zhang & Sennrich 2019;
  ``LlamaRMSNorm``). No mean subtraction and no bias, unlike LayerNorm.
* :func:`check_rope` — ``apply_rope(x [B, heads, T, d_head], position_ids [B, T], base) -> same``:
  rotate each pair of dimensions ``(i, i + d/2)`` by the angle ``position · base^(-2i/d)``
  (Su et al. 2021; ``LlamaRotaryEmbedding`` + ``apply_rotary_pos_emb``, LLaMA's "rotate half"
  pairing, not the interleaved pairs ``(2i, 2i+1)`` of the paper).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .checking import Case, CheckResult, Mistake, run_check


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Reference: ``transformers``' ``LlamaRMSNorm`` with ``weight`` and ``eps``."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(x.shape[-1], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def apply_rope(x: torch.Tensor, position_ids: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Reference: ``LlamaRotaryEmbedding`` (cos, sin) + ``apply_rotary_pos_emb`` on ``x``."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    heads, d_head = x.shape[1], x.shape[-1]
    config = LlamaConfig(hidden_size=heads * d_head, num_attention_heads=heads, num_key_value_heads=heads,
                         rope_theta=float(base))
    cos, sin = LlamaRotaryEmbedding(config)(x, position_ids)  # [B, T, d_head] each
    return apply_rotary_pos_emb(x, x, cos, sin)[0]


def _rms_cases() -> list[Case]:
    cases = []
    for seed, shape, eps in [(0, (2, 3, 8), 1e-6), (1, (4, 16), 1e-5), (2, (1, 5, 6), 0.5)]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(*shape, generator=g) * 3 + 1  # not centred: shows LayerNorm ≠ RMSNorm
        weight = torch.rand(shape[-1], generator=g) + 0.5
        cases.append(Case(f"x of shape {list(shape)}, eps={eps}", (x, weight, eps)))
    return cases


def check_rms_norm(answer: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], *,
                   strict: bool = False) -> CheckResult:
    """Check ``answer(x, weight, eps)`` against ``LlamaRMSNorm``."""
    ms = lambda x, dim=-1: x.pow(2).mean(dim, keepdim=True)  # noqa: E731
    mistakes = [
        Mistake("you subtracted the mean (that is LayerNorm); RMSNorm only divides by the root mean square",
                lambda x, w, e: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + e) * w),
        Mistake("you forgot the square root: divide by sqrt(mean(x²) + eps)", lambda x, w, e: x / (ms(x) + e) * w),
        Mistake("the weight (gain) is missing: multiply by weight at the end", lambda x, w, e: x * torch.rsqrt(ms(x) + e)),
        Mistake("eps belongs inside the square root: sqrt(mean(x²) + eps)",
                lambda x, w, e: x / (torch.sqrt(ms(x)) + e) * w),
        Mistake("normalise over the last dimension (the features, dim=-1), not over the batch/sequence",
                lambda x, w, e: x * torch.rsqrt(ms(x, 0) + e) * w),
        Mistake("use the mean of the squares, not their sum", lambda x, w, e: x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + e) * w),
        Mistake("you used the standard deviation of x; RMS is sqrt(mean(x²)), with no centring",
                lambda x, w, e: x / torch.sqrt(x.var(-1, keepdim=True) + e) * w),
    ]
    return run_check("RMSNorm", answer, rms_norm, _rms_cases(), mistakes, strict=strict,
                     hint="x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight")


def _rope_cases() -> list[Case]:
    cases = []
    for seed, (b, h, t, d), base, offset in [(0, (1, 2, 5, 8), 10000.0, 0), (1, (2, 3, 4, 16), 10000.0, 7),
                                            (2, (1, 1, 6, 4), 100.0, 0)]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(b, h, t, d, generator=g)  # [B, heads, T, d_head]
        position_ids = (torch.arange(t) + offset).expand(b, t).clone()  # [B, T]
        label = f"x [{b}, {h}, {t}, {d}], base {base:g}" + (f", positions from {offset}" if offset else "")
        cases.append(Case(label, (x, position_ids, base)))
    return cases


def check_rope(answer: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], *,
               strict: bool = False) -> CheckResult:
    """Check ``answer(x, position_ids, base)`` against LLaMA's rotary embedding."""

    def angles(x, pos, base, exponent_scale=1.0):
        d = x.shape[-1]
        inv_freq = 1.0 / (base ** (exponent_scale * torch.arange(0, d, 2).float() / d))  # [d/2]
        return pos[..., None].float() * inv_freq  # [B, T, d/2]

    def halves(x, pos, base, sign=1.0, exponent_scale=1.0):
        theta = angles(x, pos, base, exponent_scale)
        cos, sin = torch.cat([theta.cos()] * 2, -1)[:, None], torch.cat([theta.sin()] * 2, -1)[:, None]
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return x * cos + sign * torch.cat([-x2, x1], -1) * sin

    def interleaved(x, pos, base):
        theta = angles(x, pos, base)[:, None]  # [B, 1, T, d/2]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = torch.stack([even * theta.cos() - odd * theta.sin(), even * theta.sin() + odd * theta.cos()], -1)
        return out.flatten(-2)

    mistakes = [
        Mistake("you rotated in the opposite direction: rotate_half(x) is cat(-x2, x1), and the result "
                "is x·cos + rotate_half(x)·sin", lambda x, p, b: halves(x, p, b, sign=-1.0)),
        Mistake("you paired neighbouring dimensions (2i, 2i+1) as in the RoFormer paper; LLaMA's code pairs "
                "dimension i with i + d/2 (rotate_half)", interleaved),
        Mistake("the frequencies are base^(-2i/d) for i = 0 … d/2-1 (torch.arange(0, d, 2) / d), "
                "not base^(-i/d)", lambda x, p, b: halves(x, p, b, exponent_scale=0.5)),
        Mistake("use the given position_ids, not 0 … T-1 (a continued sequence starts later)",
                lambda x, p, b: halves(x, torch.arange(x.shape[2]).expand_as(p), b)),
        Mistake("you rotated without the sine term (only x·cos)",
                lambda x, p, b: x * torch.cat([angles(x, p, b).cos()] * 2, -1)[:, None]),
    ]
    return run_check("rotary position embedding (RoPE)", answer, apply_rope, _rope_cases(), mistakes,
                     strict=strict, hint="θ = position · base^(-2i/d); cos/sin repeated twice along d; "
                                         "x·cos + cat(-x[d/2:], x[:d/2])·sin")


__all__ = ["apply_rope", "check_rms_norm", "check_rope", "rms_norm"]
