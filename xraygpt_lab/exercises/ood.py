"""Exercise for notebook 10 (out of distribution): the feature score from per-level Gaussians.

For each level ``l`` of the frozen encoder the pooled features ``f_l`` ``[B, d_l]`` are compared
with a Gaussian (mean ``μ_l`` ``[d_l]``, precision ``P_l = Σ_l⁻¹`` ``[d_l, d_l]``): the squared
Mahalanobis distance ``(f − μ)ᵀ P (f − μ)`` divided by ``d_l``, averaged over the levels (Lee et al.,
NeurIPS 2018; ``models.ood.OODDetector.score_features``). The student writes

    feature_score(levels, means, precisions) -> scores [B]
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..models.ood import OODDetector
from .checking import Case, CheckResult, Mistake, run_check


def feature_score(levels: Sequence[torch.Tensor], means: Sequence[torch.Tensor],
                  precisions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Reference: :meth:`OODDetector.score_features`."""
    detector = OODDetector(list(means), list(precisions), 0.0, torch.empty(0), {})
    return detector.score_features(list(levels))


def _level_terms(levels, means, precisions, divide: bool = True, square: bool = True) -> list[torch.Tensor]:
    out = []
    for f, mu, p in zip(levels, means, precisions):
        c = f.double() - mu
        d2 = torch.einsum("bi,ij,bj->b", c, p, c)
        d2 = d2 if square else d2.clamp_min(0).sqrt()
        out.append(d2 / mu.numel() if divide else d2)
    return out


def _case(seed: int, batch: int, widths: tuple[int, ...], description: str) -> Case:
    g = torch.Generator().manual_seed(seed)
    levels, means, precisions = [], [], []
    for d in widths:
        a = torch.randn(d, d, generator=g, dtype=torch.float64)
        precisions.append(a @ a.T / d + torch.eye(d, dtype=torch.float64))  # symmetric, positive definite
        means.append(torch.randn(d, generator=g, dtype=torch.float64))
        levels.append(torch.randn(batch, d, generator=g, dtype=torch.float64) * 2)
    return Case(description, (levels, means, precisions))


def _cases() -> list[Case]:
    return [_case(0, 3, (4,), "one level of width 4, 3 images"),
            _case(1, 5, (8, 16, 32), "three levels of widths 8, 16, 32, 5 images"),
            _case(2, 2, (6, 6), "two levels of the same width, 2 images")]


def check_feature_score(answer: Callable[..., torch.Tensor], *, strict: bool = False) -> CheckResult:
    """Check ``answer(levels, means, precisions) -> [B]`` against ``OODDetector.score_features``."""
    mistakes = [
        Mistake("divide each level's squared distance by its width d_l, so that wide levels do not outweigh "
                "narrow ones", lambda l, m, p: torch.stack(_level_terms(l, m, p, divide=False)).mean(0)),
        Mistake("average the levels (mean), do not add them up",
                lambda l, m, p: torch.stack(_level_terms(l, m, p)).sum(0)),
        Mistake("the score uses the *squared* Mahalanobis distance (no square root)",
                lambda l, m, p: torch.stack(_level_terms(l, m, p, square=False)).mean(0)),
        Mistake("subtract the mean first: (f − μ)ᵀ P (f − μ), not fᵀ P f",
                lambda l, m, p: feature_score(l, [mu * 0 for mu in m], p)),
    ]
    return run_check("feature score (mean over levels of Mahalanobis² / width)", answer, feature_score, _cases(),
                     mistakes, strict=strict, hint="per level: c = f − μ; (c @ P * c).sum(-1) / d; then the "
                                                   "mean over levels")


__all__ = ["check_feature_score", "feature_score"]
