"""Swin attention rollout (Abnar & Zuidema 2020) and its gradient-weighted variant (Chefer, Gur &
Wolf 2021, "Transformer Interpretability Beyond Attention Visualization", Eq. 5–6), for the tiny
model's Swin encoder (notebook 06).

How Swin is adapted, and what is an approximation:

1. *Windows* — exact. Each block attends inside ``w × w`` windows; its weights
   ``[B·windows, H, w², w²]`` are scattered into a full token×token matrix ``[n, n]`` at that
   stage's resolution (zero between windows).
2. *Shifted windows* — exact. Odd blocks roll the grid by ``−⌊w/2⌋`` before partitioning; we map
   each window position back through the roll, so cross-window mixing appears where it happens.
   The shift mask's ``−100`` leaves weights of about ``e^-100`` between regions, kept as computed.
3. *Patch merging* — approximation. A merged token is a learned linear map of its 2 × 2 children;
   rollout treats it as their plain average (a ``[n/4, n]`` matrix of 1/4).
4. *Residual, LayerNorm, MLP* — approximation (as in Abnar & Zuidema): the residual stream is
   modelled as ``0.5·A + 0.5·I``; LayerNorm and the MLP are treated as token-wise and ignored.
5. *Pooling* — MedCLIP mean-pools the last tokens, so the image's rollout is the mean of the
   final tokens' rows. Heads are averaged (rollout) or gradient-weighted then averaged (Chefer).

The result lives on the FIRST stage's patch grid (tiny: 16 × 16 patches of 8 px), finer than the
last stage's grid the LLM sees (tiny: 4 × 4 tokens of 32 px).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .hooks import eager_attention


@dataclass
class BlockAttention:
    """Attention of one Swin block: ``weights`` ``[B·windows, heads, w², w²]`` on an ``h × w`` grid."""

    stage: int
    block: int
    resolution: tuple[int, int]
    window: int
    shift: int
    weights: torch.Tensor
    grad: torch.Tensor | None = None

    def window_index(self) -> torch.Tensor:
        """``[windows, w²]``: the (unshifted) token index of each window slot, row-major."""
        h, w = self.resolution
        ws, s = self.window, self.shift
        if h % ws or w % ws:
            raise ValueError(f"stage {self.stage}: grid {h}x{w} is not a multiple of window {ws} (padding is not supported)")
        i = torch.arange(h)[:, None].expand(h, w)
        j = torch.arange(w)[None, :].expand(h, w)
        original = ((i + s) % h) * w + (j + s) % w  # rolled position (i, j) holds this token (torch.roll by -s)
        windows = original.reshape(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3)  # [h/ws, w/ws, ws, ws]
        return windows.reshape(-1, ws * ws)

    def full_matrix(self, values: torch.Tensor | None = None, image: int = 0) -> torch.Tensor:
        """Scatter per-window ``[windows, w², w²]`` values (default: head-mean weights) into ``[n, n]``."""
        h, w = self.resolution
        index = self.window_index()  # [nW, w²]
        n_windows = index.shape[0]
        if values is None:
            values = self.weights[image * n_windows:(image + 1) * n_windows].mean(dim=1)  # [nW, w², w²]
        full = torch.zeros(h * w, h * w, dtype=values.dtype)
        full[index[:, :, None], index[:, None, :]] = values.detach().cpu()
        return full  # [n, n]


def merge_matrix(resolution: tuple[int, int]) -> torch.Tensor:
    """Swin patch merging as averaging: ``[(h/2)(w/2), h·w]`` with 1/4 on each 2 × 2 child."""
    h, w = resolution
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    m = torch.zeros(h2 * w2, h * w)
    for i in range(h):
        for j in range(w):
            m[(i // 2) * w2 + j // 2, i * w + j] = 0.25
    return m


def swin_attention_blocks(encoder: nn.Module, pixel_values: torch.Tensor, target=None) -> list[BlockAttention]:
    """Run ``encoder`` (or ``target``, whose forward runs it) and record every block's attention.

    With ``target`` the weights' gradients of ``target(pixels).sum()`` are filled in too. The
    records hold CPU copies (weights and gradients), whichever device the encoder runs on.
    """
    records: list[BlockAttention] = []
    handles = []
    for s, stage in enumerate(encoder.backbone.encoder.layers):
        for b, block in enumerate(stage.blocks):
            def hook(module, inputs, output, s=s, b=b):
                weights = output[1]  # [B·nW, H, w², w²]
                if weights is None:
                    raise RuntimeError("Swin returned no attention weights (needs eager attention)")
                res = tuple(int(v) for v in inputs[1])
                records.append(BlockAttention(stage=s, block=b, resolution=res, window=int(module.window_size),
                                              shift=int(module.shift_size), weights=weights))
            handles.append(block.register_forward_hook(hook))
    try:
        with eager_attention(encoder.backbone):
            if target is None:
                with torch.no_grad():
                    encoder(pixel_values)
            else:
                pixels = pixel_values.detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    score = target(pixels).sum()
                    grads = torch.autograd.grad(score, [r.weights for r in records], allow_unused=True)
                for r, g in zip(records, grads):
                    r.grad = None if g is None else g.detach().cpu()
    finally:
        for h in handles:
            h.remove()
    for r in records:
        r.weights = r.weights.detach().cpu()
    return records


def _first_resolution(records: list[BlockAttention]) -> tuple[int, int]:
    return records[0].resolution


def _final_rows(r: torch.Tensor) -> np.ndarray:
    return r.mean(dim=0)


def attention_rollout(encoder: nn.Module, pixel_values: torch.Tensor, residual: float = 0.5) -> np.ndarray:
    """Abnar & Zuidema rollout through windows, shifts and merges: ``[h0, w0]`` patch-grid map.

    ``pixel_values`` ``[1, 1, S, S]``. Each block contributes ``(1 − residual)·A + residual·I``.
    """
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    records = swin_attention_blocks(encoder, pixel_values)
    h0, w0 = _first_resolution(records)
    rollout = torch.eye(h0 * w0)
    stage = 0
    for r in records:
        if r.stage != stage:  # the previous stage ended with a patch merge
            rollout = merge_matrix(records_resolution(records, stage)) @ rollout
            stage = r.stage
        a = r.full_matrix()  # [n, n]
        a = (1 - residual) * a + residual * torch.eye(a.shape[0])
        rollout = (a / a.sum(dim=-1, keepdim=True)) @ rollout  # [n, n0]
    rollout = _merge_tail(encoder, records, rollout)
    return _final_rows(rollout).reshape(h0, w0).numpy()


def records_resolution(records: list[BlockAttention], stage: int) -> tuple[int, int]:
    return next(r.resolution for r in records if r.stage == stage)


def _merge_tail(encoder: nn.Module, records: list[BlockAttention], rollout: torch.Tensor) -> torch.Tensor:
    """Apply the last stage's merge when the backbone downsamples after its final stage."""
    last = records[-1].stage
    stages = encoder.backbone.encoder.layers
    if stages[last].downsample is not None:
        rollout = merge_matrix(records_resolution(records, last)) @ rollout
    return rollout


def gradient_rollout(target, pixel_values: torch.Tensor) -> np.ndarray:
    """Chefer et al. 2021 (Eq. 5–6) for Swin: ``R ← R + mean_h((∇A ⊙ A)⁺) R`` block by block.

    The merges' identity-only chain is subtracted at the end, so the map shows what attention
    added, not the uniform share every patch has in its own token. ``[h0, w0]``.
    """
    encoder = target.encoder
    records = swin_attention_blocks(encoder, pixel_values, target=target)
    h0, w0 = _first_resolution(records)
    relevance = torch.eye(h0 * w0)
    identity_chain = torch.eye(h0 * w0)
    stage = 0
    for r in records:
        if r.stage != stage:
            m = merge_matrix(records_resolution(records, stage))
            relevance, identity_chain = m @ relevance, m @ identity_chain
            stage = r.stage
        if r.grad is None:
            continue
        weighted = (r.grad * r.weights).clamp(min=0).mean(dim=1)  # [nW, w², w²]
        a_bar = r.full_matrix(values=weighted)  # [n, n]
        relevance = relevance + a_bar @ relevance
    relevance = _merge_tail(encoder, records, relevance)
    identity_chain = _merge_tail(encoder, records, identity_chain)
    return _final_rows(relevance - identity_chain).reshape(h0, w0).numpy()
