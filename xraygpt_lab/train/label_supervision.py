"""Label supervision for the encoder's patch tokens: a per-token head pooled as multiple-instance
learning (MIL), trained with binary cross-entropy.

MedCLIP (Wang et al. 2022, Sec. 3.2) already uses the labels — its semantic-matching targets are
built from them — but only through the *pooled* embedding. XrayGPT's linear layer reads the
*tokens*, one 32 × 32-pixel region each at tiny size, so the tiny profile also asks every token
to say which findings it sees: ``logit_token = W · token + b`` per token, and the image-level
logit is a smooth maximum over the N tokens,

    ``logit_image = logsumexp_n(logit_token) − log N``

(log-sum-exp pooling, Pinheiro & Collobert 2015, "From Image-level to Pixel-level Labeling with
Convolutional Networks"; a finding present anywhere makes the image positive). Rare findings get
``pos_weight = ((1 − p) / p)^γ`` (clamped), the usual BCE re-weighting with ``p`` the training
prevalence.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class TokenLabelHead(nn.Module):
    """``Linear(d, L)`` on every token, pooled over tokens by log-sum-exp − log N."""

    def __init__(self, token_dim: int, num_labels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(token_dim, num_labels)

    def token_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, d]`` → ``[B, N, L]``."""
        return self.linear(tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, d]`` → image-level logits ``[B, L]``."""
        logits = self.token_logits(tokens)  # [B, N, L]
        return torch.logsumexp(logits, dim=1) - math.log(logits.shape[1])


def positive_weights(labels: torch.Tensor, power: float = 0.75, cap: float = 15.0) -> torch.Tensor:
    """``((1 − p) / p).clamp(max=cap) ** power`` per label column ``[L]`` (``p`` from ``labels [N, L]``)."""
    p = labels.float().mean(0).clamp(min=1.0 / max(1, labels.shape[0]))  # [L]
    return ((1 - p) / p).clamp(min=1.0, max=cap) ** power


def label_loss(head: TokenLabelHead, tokens: torch.Tensor, labels: torch.Tensor,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """MIL binary cross-entropy of ``head`` on ``tokens [B, N, d]`` against multi-hot ``labels [B, L]``."""
    return nn.functional.binary_cross_entropy_with_logits(head(tokens), labels.to(tokens), pos_weight=pos_weight)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Roll the batch by one random ``(dy, dx)`` in ``[−max_shift, max_shift]`` pixels.

    No flips: a horizontal flip would swap the patient's left and right, which the labels name.
    """
    if max_shift <= 0:
        return images
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=(dy, dx), dims=(2, 3))  # [B, 1, S, S]
