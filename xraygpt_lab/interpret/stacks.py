"""One interface over the two vision paths an explanation may have to cross.

The tiny model's LLM reads Swin tokens that ARE grid cells; the released model's LLM reads Q-Former
query tokens that have no place on the image until their cross-attention gives them one. Every
map kind that needs to know this asks :func:`vision_stack` once, which dispatches on what the
encoder offers (a Q-Former's ``query_tokens``, or a Swin ``backbone``), and then speaks one
interface:

=========================  ================================  =======================================
                           :class:`SwinStack` (tiny)         :class:`QFormerStack` (released)
=========================  ================================  =======================================
``grid``                   last-stage token grid (4 × 4)     ViT patch grid (16 × 16)
``layout(pixels)``         ``None``: token n is cell n       each query's rolled-out cross-attention
``rollout(pixels)``        Swin rollout (patch grid)         ViT + Q-Former relevance, attention
``grad_rollout(t, px)``    Chefer et al. on Swin             ViT + Q-Former relevance, ∇A ⊙ A
``cross_attention(px)``    refused: Swin has none            mean of the queries' maps
=========================  ================================  =======================================
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .qformer_attention import cross_attention_maps, patch_maps, query_relevance, record_attention
from .swin_attention import attention_rollout, gradient_rollout


class SwinStack:
    """The tiny model's Swin encoder: the LLM's image tokens are the cells of the last stage's grid."""

    rollout_name = "none (attention rollout, residual 0.5)"

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.encoder.grid)

    @property
    def token_resolution(self) -> str:
        rows, cols = self.grid
        return f"token grid {rows}x{cols}"

    def layout(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """``None``: image token ``n`` is grid cell ``n`` (row-major)."""
        return None

    def tokens_to_grid(self, values: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per-image-token values ``[B, N]`` on the grid: ``[B, rows, cols]``."""
        return self.encoder.token_map(values)

    def rollout(self, pixel_values: torch.Tensor) -> np.ndarray:
        return attention_rollout(self.encoder, pixel_values)

    def grad_rollout(self, target, pixel_values: torch.Tensor) -> np.ndarray:
        return gradient_rollout(target, pixel_values)

    def cross_attention(self, pixel_values: torch.Tensor) -> np.ndarray:
        raise ValueError("cross_attention reads a Q-Former's cross-attention (the released XrayGPT); this "
                         "model's Swin encoder has none: its image tokens are grid cells (use attention or rollout)")


class QFormerStack:
    """The released EVA ViT + Q-Former: query tokens placed on the patch grid by their cross-attention."""

    rollout_name = "none (attention rollout through ViT and Q-Former, Chefer et al. 2021 rules)"

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.encoder.patch_grid)

    @property
    def token_resolution(self) -> str:
        rows, cols = self.grid
        return (f"patch grid {rows}x{cols} ({self.encoder.num_tokens} query tokens placed by their "
                "rolled-out cross-attention)")

    def layout(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[Q, rows, cols]`` for one image ``[1, C, S, S]``: where each query token reads."""
        return cross_attention_maps(record_attention(self.encoder, pixel_values))

    def tokens_to_grid(self, values: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per-query values ``[B, Q]`` spread over the patches by each image's layout: ``[B, rows, cols]``."""
        maps = [torch.einsum("q,qhw->hw", values[i].float().cpu(), self.layout(pixel_values[i:i + 1]))
                for i in range(values.shape[0])]
        return torch.stack(maps)

    def rollout(self, pixel_values: torch.Tensor) -> np.ndarray:
        relevance = query_relevance(record_attention(self.encoder, pixel_values), "attention")  # [Q, T]
        return patch_maps(relevance, self.grid).sum(dim=0).numpy()

    def grad_rollout(self, target, pixel_values: torch.Tensor) -> np.ndarray:
        relevance = query_relevance(record_attention(self.encoder, pixel_values, target=target), "gradient")
        return patch_maps(relevance, self.grid).sum(dim=0).numpy()

    def cross_attention(self, pixel_values: torch.Tensor) -> np.ndarray:
        return self.layout(pixel_values).mean(dim=0).numpy()


def vision_stack(encoder: nn.Module) -> SwinStack | QFormerStack:
    """The stack interface for ``encoder``, chosen by what it offers."""
    if hasattr(encoder, "query_tokens") and hasattr(encoder, "qformer"):
        return QFormerStack(encoder)
    if hasattr(encoder, "backbone") and hasattr(encoder, "grid"):
        return SwinStack(encoder)
    raise ValueError(f"no attention reader for a {type(encoder).__name__}: expected the toolkit's Swin "
                     "VisionEncoder or the released ViT + Q-Former encoder")
