"""Attention through the released XrayGPT's vision path: EVA ViT → ln_vision → Q-Former → query tokens.

The tiny model's LLM reads Swin tokens laid out on a grid. The released model's LLM reads 32
learned query tokens (BLIP-2, Li et al. 2023, Sec. 3.1), each of which gathers the image through
the Q-Former's cross-attention (every second layer) to the ViT's ``1 + P`` tokens ([CLS] and the
16 × 16 patches). So a query token has no place on the image of its own; two readings give it one:

* **Cross-attention, rolled out** (:func:`cross_attention_maps`): each query's cross-attention to
  the ViT tokens (heads averaged, then cross-attention layers averaged), carried back to the input
  patches through the ViT's own attention (rollout, Abnar & Zuidema 2020), [CLS] dropped and
  normalised to sum 1 over the patches: ``[Q, rows, cols]``. Target-free: where each query reads.
  The toolkit places a query token on the image this way (LLM attention to the queries, layer IG
  on the projection).
* **Relevance** (:func:`query_relevance`): the rules of Chefer, Gur & Wolf 2021 ("Generic
  Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers",
  ICCV) for a stream with self- and cross-attention::

      ViT self-attention        R_ii ← R_ii + Ā·R_ii                        (Eq. 6; R_ii starts at I)
      Q-Former self-attention   R_qq ← R_qq + Ā·R_qq,  R_qi ← R_qi + Ā·R_qi   (Eqs. 6–7; I and 0)
      Q-Former cross-attention  R_qi ← R_qi + R̄_qqᵀ·Ā·R̄_ii                  (Eq. 10)

  with ``R̄ = rownorm(R − I) + I`` (Eqs. 8–9, their handling of the residual). ``Ā`` is the head
  mean of the attention (``"attention"``: a target-free rollout) or of ``(∇A ⊙ A)⁺`` for a target
  (``"gradient"``, Eq. 5). The image's map is ``R_qi`` summed over the queries, [CLS] column dropped.

Approximations, as in both papers: LayerNorms, MLPs and the value/output projections are ignored;
with attention weights the ViT part is Abnar & Zuidema's rollout up to a factor per layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .hooks import eager_attention

KINDS: tuple[str, ...] = ("vision", "query", "cross")


@dataclass
class StackAttention:
    """Attention weights of one image through ViT and Q-Former (CPU float copies, heads kept).

    ``weights["vision"]``: per ViT block ``[H, T, T]`` (``T = 1 + P``); ``weights["query"]``: per
    Q-Former layer ``[H, Q, Q]``; ``weights["cross"]``: per cross-attention layer ``[H, Q, T]``.
    ``grads`` holds the gradients of a target's score in the same layout (``None`` where unused).
    """

    weights: dict[str, list[torch.Tensor]]
    grid: tuple[int, int]  # (rows, cols) of ViT patches
    cross_layers: tuple[int, ...]  # the Q-Former layers with cross-attention (0, 2, 4, … in BLIP-2)
    grads: dict[str, list[torch.Tensor | None]] | None = field(default=None, repr=False)


def _attention_modules(encoder: nn.Module) -> dict[str, list[nn.Module]]:
    """The attention modules whose forward returns ``(output, weights)``, by kind, in order."""
    layers = encoder.qformer.encoder.layer
    return {"vision": [layer.self_attn for layer in encoder.vision.encoder.layers],
            "query": [layer.attention.attention for layer in layers],
            "cross": [layer.crossattention.attention for layer in layers if layer.has_cross_attention]}


def record_attention(encoder: nn.Module, pixel_values: torch.Tensor, target=None) -> StackAttention:
    """Run the released encoder (or ``target``, whose forward runs it) on one image, keeping every
    attention map; with ``target`` also the gradients of ``target(pixels)`` with respect to them."""
    if pixel_values.dim() != 4 or pixel_values.shape[0] != 1:
        raise ValueError(f"pixel_values must be one image [1, C, S, S], got {list(pixel_values.shape)}")
    modules = _attention_modules(encoder)
    captured: dict[str, list[torch.Tensor]] = {kind: [] for kind in KINDS}
    handles = []
    for kind, group in modules.items():
        for module in group:
            def hook(_module, _inputs, output, kind=kind):
                if output[1] is None:
                    raise RuntimeError("the encoder returned no attention weights (needs eager attention)")
                captured[kind].append(output[1])  # [1, H, q, k]
            handles.append(module.register_forward_hook(hook))
    grads = None
    try:
        with eager_attention(encoder.vision), eager_attention(encoder.qformer):
            if target is None:
                with torch.no_grad():
                    encoder.encode_tokens(pixel_values)
            else:
                pixels = pixel_values.detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    score = target(pixels).sum()
                    # the first Q-Former self-attention reads only the learned queries: no gradient there
                    flat = [w for kind in KINDS for w in captured[kind] if w.requires_grad]
                    found = iter(torch.autograd.grad(score, flat, allow_unused=True))
                grads = {kind: [_cpu(next(found)) if w.requires_grad else None for w in captured[kind]]
                         for kind in KINDS}
    finally:
        for handle in handles:
            handle.remove()
    for kind, group in modules.items():
        if len(captured[kind]) != len(group):
            raise RuntimeError(f"expected {len(group)} {kind} attention maps from one pass, got {len(captured[kind])}")
    weights = {kind: [_cpu(w) for w in captured[kind]] for kind in KINDS}
    crosses = tuple(i for i, layer in enumerate(encoder.qformer.encoder.layer) if layer.has_cross_attention)
    return StackAttention(weights=weights, grid=tuple(encoder.patch_grid), cross_layers=crosses, grads=grads)


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """One image's ``[H, q, k]`` as a CPU float copy (``None`` stays ``None``)."""
    return None if tensor is None else tensor.detach().float().cpu()[0]


def _weighted(attention: StackAttention, kind: str, index: int, mode: str) -> torch.Tensor:
    """``Ā`` of one layer: head mean of ``A`` (``"attention"``) or of ``(∇A ⊙ A)⁺`` (``"gradient"``)."""
    a = attention.weights[kind][index].double()  # [H, q, k]
    if mode == "attention":
        return a.mean(dim=0)
    if mode != "gradient":
        raise ValueError(f"mode must be 'attention' or 'gradient', got {mode!r}")
    if attention.grads is None:
        raise ValueError("gradient relevance needs attention recorded with a target")
    g = attention.grads[kind][index]
    return torch.zeros_like(a[0]) if g is None else (g.double() * a).clamp(min=0).mean(dim=0)


def _without_residual(relevance: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s ``R̄``: ``R − I`` normalised to rows of sum 1 (rows of zeros stay zero), ``+ I``."""
    eye = torch.eye(relevance.shape[0], dtype=relevance.dtype)
    extra = relevance - eye
    sums = extra.sum(dim=-1, keepdim=True)
    extra = torch.where(sums > 0, extra / sums.clamp(min=1e-300), torch.zeros_like(extra))
    return extra + eye


def vision_relevance(attention: StackAttention, mode: str = "attention") -> torch.Tensor:
    """``R_ii`` ``[T, T]`` after every ViT block (row: an output token; column: an input token)."""
    t = attention.weights["vision"][0].shape[-1]
    relevance = torch.eye(t, dtype=torch.float64)
    for index in range(len(attention.weights["vision"])):
        relevance = relevance + _weighted(attention, "vision", index, mode) @ relevance
    return relevance


def query_relevance(attention: StackAttention, mode: str = "attention") -> torch.Tensor:
    """``R_qi`` ``[Q, T]``: relevance of each ViT input token (column) for each query (row)."""
    image = _without_residual(vision_relevance(attention, mode))  # [T, T]
    q = attention.weights["query"][0].shape[-1]
    r_qq = torch.eye(q, dtype=torch.float64)
    r_qi = torch.zeros(q, image.shape[0], dtype=torch.float64)
    for layer in range(len(attention.weights["query"])):
        a = _weighted(attention, "query", layer, mode)  # [Q, Q]
        r_qq, r_qi = r_qq + a @ r_qq, r_qi + a @ r_qi
        if layer in attention.cross_layers:
            c = _weighted(attention, "cross", attention.cross_layers.index(layer), mode)  # [Q, T]
            r_qi = r_qi + _without_residual(r_qq).T @ c @ image
    return r_qi


def patch_maps(rows_over_tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[Q, T]`` over ViT tokens → ``[Q, rows, cols]`` over patches ([CLS], column 0, dropped)."""
    rows, cols = grid
    return rows_over_tokens[:, 1:].reshape(-1, rows, cols).float()


def cross_attention_maps(attention: StackAttention) -> torch.Tensor:
    """Each query's cross-attention, rolled out through the ViT to the patches: ``[Q, rows, cols]``,
    each map summing to 1 (see the module docstring)."""
    crosses = [_weighted(attention, "cross", i, "attention") for i in range(len(attention.weights["cross"]))]
    reading = torch.stack(crosses).mean(dim=0)  # [Q, T]
    rolled = reading @ _without_residual(vision_relevance(attention))  # [Q, T]
    maps = patch_maps(rolled, attention.grid)  # [Q, rows, cols]
    return maps / maps.sum(dim=(1, 2), keepdim=True).clamp(min=1e-12)
