"""Solution for notebook 06: attention rollout (Abnar & Zuidema 2020)."""
from __future__ import annotations

import torch


def rollout(attentions: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """``R = Ã_L ⋯ Ã_1`` with ``Ã_l = (1 − r)·A_l + r·I``, rows renormalised."""
    n = attentions[0].shape[-1]
    result = torch.eye(n, dtype=attentions[0].dtype)
    for a in attentions:
        a = (1 - residual) * a + residual * torch.eye(n, dtype=a.dtype)
        result = (a / a.sum(-1, keepdim=True)) @ result
    return result
