"""Solution for notebook 09: where each Q-Former query token reads in the image."""
from __future__ import annotations

import torch


def query_maps(vision: list[torch.Tensor], cross: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Cross-attention ``[Q, T]`` rolled out through the ViT's attentions ``[T, T]`` (first layer
    first), [CLS] dropped, laid out on ``grid`` and normalised per query: ``[Q, rows, cols]``."""
    t = cross.shape[1]
    eye = torch.eye(t, dtype=cross.dtype)
    relevance = eye.clone()
    for a in vision:  # R ← (I + A_l) R: the later layer on the left
        relevance = (eye + a) @ relevance
    extra = relevance - eye
    r_bar = extra / extra.sum(dim=-1, keepdim=True) + eye  # Chefer et al. 2021, Eqs. 8-9
    maps = (cross @ r_bar)[:, 1:].reshape(cross.shape[0], *grid)  # column 0 is [CLS]
    return maps / maps.sum(dim=(1, 2), keepdim=True)
