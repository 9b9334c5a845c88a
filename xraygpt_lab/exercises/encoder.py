"""Exercise for notebook 01 (vision encoder): MedCLIP's soft-label contrastive loss.

MedCLIP (Wang et al. 2022, Sec. 3; ``train.contrastive.medclip_loss``) replaces CLIP's one-hot
targets by ``softmax(l_img @ l_txtᵀ)`` row-wise, so two studies with the same findings are not
pushed apart as false negatives, and averages the soft cross-entropy over image→text and
text→image. The student writes

    soft_label_loss(image_embeddings [B, p], text_embeddings [B', p], scale,
                    image_labels [B, L], text_labels [B', L]) -> scalar tensor

with unit-length embeddings and ``scale = exp(logit_scale)``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..train.contrastive import clip_loss, medclip_loss, soft_cross_entropy
from .checking import Case, CheckResult, Mistake, describe_difference, run_check


def soft_label_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, scale: torch.Tensor,
                    image_labels: torch.Tensor, text_labels: torch.Tensor) -> torch.Tensor:
    """Reference: the library's :func:`~xraygpt_lab.train.contrastive.medclip_loss`."""
    return medclip_loss(image_embeddings, text_embeddings, scale, image_labels, text_labels)


def _cases() -> list[Case]:
    cases = []
    plan = [(0, 4, 4, 5, "4 images × 4 texts, shared labels"), (1, 5, 5, 3, "5 × 5, different image and text labels"),
            (2, 3, 6, 4, "3 images × 6 texts (not square)"), (3, 6, 6, 5, "6 × 6 with two identical label rows")]
    for seed, b_img, b_txt, n_labels, label in plan:
        g = torch.Generator().manual_seed(seed)
        image = nn.functional.normalize(torch.randn(b_img, 8, generator=g), dim=-1)  # [B, p]
        text = nn.functional.normalize(torch.randn(b_txt, 8, generator=g), dim=-1)  # [B', p]
        image_labels = (torch.rand(b_img, n_labels, generator=g) < 0.4).float()  # [B, L]
        text_labels = (torch.rand(b_txt, n_labels, generator=g) < 0.4).float()  # [B', L]
        if "shared" in label:
            text_labels = image_labels.clone()
        if "identical" in label:
            image_labels[1] = image_labels[0]
            text_labels = image_labels.clone()
        scale = torch.tensor(1 / 0.07 if seed % 2 else 10.0)
        cases.append(Case(label, (image, text, scale, image_labels, text_labels)))
    return cases


def check_soft_label_loss(answer: Callable[..., torch.Tensor], *, strict: bool = False) -> CheckResult:
    """Check ``answer(image_embeddings, text_embeddings, scale, image_labels, text_labels)``."""

    def variant(direction: str = "both", target_dim: int = 1, use_scale: bool = True, sign: float = 1.0,
                normalise: str = "softmax", reduce: str = "mean", transpose_targets: bool = True):
        def loss(img, txt, scale, li, lt):
            logits = (scale if use_scale else 1.0) * img @ txt.T  # [B, B']
            sim = li @ lt.T  # [B, B']

            def targets(s: torch.Tensor) -> torch.Tensor:
                if normalise == "rowsum":
                    return s / s.sum(dim=1, keepdim=True).clamp_min(1e-12)
                return s.softmax(dim=target_dim)

            def ce(lg: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                per_row = -(t * lg.log_softmax(dim=-1)).sum(dim=-1)
                return per_row.sum() if reduce == "sum" else per_row.mean()

            t_img = targets(sim)
            t_txt = targets(sim.T) if transpose_targets else targets(sim).T
            if direction == "image":
                value = ce(logits, t_img)
            else:
                value = 0.5 * (ce(logits, t_img) + ce(logits.T, t_txt))
            return sign * value
        return loss

    mistakes = [
        Mistake("you used CLIP's one-hot targets (the diagonal) and ignored the labels: MedCLIP's targets are "
                "softmax(image_labels @ text_labels.T) row by row",
                lambda img, txt, s, li, lt: clip_loss(s * img @ txt.T)),
        Mistake("wrong sign: a cross-entropy is -Σ target · log p (it must be positive)", variant(sign=-1.0)),
        Mistake("only the image→text direction: average it with the text→image loss (logits.T)",
                variant(direction="image")),
        Mistake("the targets are normalised over the wrong dimension: softmax each row (dim=1) of the "
                "label similarity", variant(target_dim=0)),
        Mistake("the logits miss the temperature: multiply the cosine similarities by scale",
                variant(use_scale=False)),
        Mistake("the targets must be softmax(label_sim), not label_sim divided by its row sum", variant(normalise="rowsum")),
        Mistake("you summed over the batch; the cross-entropy is averaged over rows", variant(reduce="sum")),
        Mistake("for text→image the targets come from label_sim.T (rows = texts) softmaxed row-wise, "
                "not from the transposed image→text targets", variant(transpose_targets=False)),
        Mistake("return a 0-dimensional tensor (a scalar), e.g. loss.mean(), not a vector",
                test=lambda got, exp, case: isinstance(got, torch.Tensor) and got.dim() > 0),
    ]

    def compare(got, expected):
        if not isinstance(got, torch.Tensor):
            return f"expected a scalar torch.Tensor (so that .backward() works), got {type(got).__name__}"
        if got.dim() != 0:
            return f"expected a scalar (0-dimensional) tensor, got shape {list(got.shape)}"
        return describe_difference(got, expected, rtol=1e-4, atol=1e-5)

    return run_check("MedCLIP soft-label contrastive loss", answer, soft_label_loss, _cases(), mistakes,
                     compare=compare, strict=strict,
                     hint="logits = scale * img @ txt.T; targets = softmax(li @ lt.T, dim=1); "
                          "loss = ½ [CE(logits, targets) + CE(logits.T, softmax(lt @ li.T, dim=1))]")


__all__ = ["check_soft_label_loss", "soft_label_loss", "soft_cross_entropy"]
