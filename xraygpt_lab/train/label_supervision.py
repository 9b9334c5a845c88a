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

Where the region of each finding is known (the synthetic world's masks), every token can also be
told directly which findings overlap its cell (:func:`token_targets`, :func:`dense_label_loss`):
the same head, trained per token instead of only through the pooled maximum. Measured on the
tiny Swin (1,200 steps, 300 held-out images): the share of lesion-bearing tokens that fire rose
from 0.35 (MIL only) to 0.89, and the image-level macro-F1 of the head from 0.76 to 0.78 — the
tokens the LLM reads then say *where* a finding is, which the linear alignment and the
attribution maps of ``interpret`` both use.

A second head can read each graded finding's size or severity off the same cells
(:func:`grade_targets`, :func:`grade_loss`; ``EncoderStage.grade_weight``): ordinal targets (small
0, moderate 0.5, large 1) on the cells the finding covers, so that the tokens also keep the grade
that graded concepts (``train.grounding.GRADED``) ask the alignment to write.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
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


def finding_columns(finding: Any, columns: Sequence[tuple[str, str | None]]) -> list[int]:
    """Indices of the ``(observation, side)`` columns a finding turns on (side None: either side)."""
    return [j for j, (observation, side) in enumerate(columns)
            if observation == finding.observation and (side is None or side == finding.side)]


def token_targets(masks: dict[str, "np.ndarray"], findings: Sequence[Any],
                  columns: Sequence[tuple[str, str | None]], grid: tuple[int, int]) -> torch.Tensor:
    """Per-token multi-hot targets ``[rows * cols, L]`` (row-major, as Swin's tokens) for one image.

    ``masks``: observation → bool ``[H, W]`` region (``SyntheticCase.masks``); ``findings``: the
    case's findings (their sides pick the column); ``columns``: ``(observation, side)`` per label.
    A token is positive for a column when the finding's region overlaps the token's cell at all
    (``H`` and ``W`` must be multiples of the grid).
    """
    rows, cols = grid
    out = torch.zeros(rows * cols, len(columns))
    for f in findings:
        region = masks.get(f.observation)
        if region is None:
            continue
        h, w = region.shape
        if h % rows or w % cols:
            raise ValueError(f"mask of {h}×{w} pixels does not tile into a {rows}×{cols} token grid")
        cells = torch.from_numpy(np.ascontiguousarray(region)).reshape(rows, h // rows, cols, w // cols)
        hit = cells.any(dim=3).any(dim=1).flatten().float()  # [rows * cols]
        for j in finding_columns(f, columns):
            out[:, j] = torch.maximum(out[:, j], hit)
    return out


def dense_label_loss(head: TokenLabelHead, tokens: torch.Tensor, targets: torch.Tensor,
                     pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of every token's logits ``[B, N, L]`` against ``targets [B, N, L]``."""
    logits = head.token_logits(tokens)  # [B, N, L]
    if logits.shape != targets.shape:
        raise ValueError(f"token targets {list(targets.shape)} do not match token logits {list(logits.shape)}")
    return nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits), pos_weight=pos_weight)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Roll the batch by one random ``(dy, dx)`` in ``[−max_shift, max_shift]`` pixels.

    No flips: a horizontal flip would swap the patient's left and right, which the labels name.
    """
    if max_shift <= 0:
        return images
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=(dy, dx), dims=(2, 3))  # [B, 1, S, S]


def grade_targets(findings: Sequence[Any], columns: Sequence[tuple[str, str | None]],
                  grades: dict[str, Sequence[str]]) -> torch.Tensor:
    """One image's ordinal grade per label column ``[L]``: ``i / (k − 1)`` for the ``i``-th of the
    ``k`` grades in ``grades[observation]`` (small 0, moderate 0.5, large 1), −1 where the column's
    finding is absent or has no grade."""
    out = torch.full((len(columns),), -1.0)
    for f in findings:
        scale = grades.get(f.observation)
        if scale and f.severity in scale:
            out[finding_columns(f, columns)] = scale.index(f.severity) / (len(scale) - 1)
    return out


def grade_loss(head: TokenLabelHead, tokens: torch.Tensor, token_labels: torch.Tensor,
               grades: torch.Tensor) -> torch.Tensor:
    """Ordinal grade of each finding read off the tokens of its cells: binary cross-entropy of a
    second head's logits ``[B, N, L]`` against the soft target ``grades [B, L]`` (:func:`grade_targets`),
    on the cells ``token_labels [B, N, L]`` marks and the columns with a grade only (zero when a batch
    has none). Apart from the presence head, so the grade does not reweigh what the tokens say
    is there (a one-hot column per grade did: lung lesions and devices were lost)."""
    logits = head.token_logits(tokens)  # [B, N, L]
    if logits.shape != token_labels.shape or grades.shape != (logits.shape[0], logits.shape[2]):
        raise ValueError(f"token logits {list(logits.shape)}, token_labels {list(token_labels.shape)} and "
                         f"grades {list(grades.shape)} do not match ([B, N, L], [B, N, L], [B, L])")
    target = grades.to(logits)[:, None, :].expand_as(logits)  # [B, N, L]
    keep = (token_labels > 0) & (target >= 0)  # [B, N, L]
    if not bool(keep.any()):
        return logits.sum() * 0.0  # keeps the graph (and the head's gradient) defined
    return nn.functional.binary_cross_entropy_with_logits(logits[keep], target[keep])
