"""Solution for notebook 10: the feature score (mean over levels of Mahalanobis² / width)."""
from __future__ import annotations


def feature_score(levels, means, precisions):
    total = 0
    for features, mean, precision in zip(levels, means, precisions):  # features [B, d], mean [d], precision [d, d]
        centred = features.double() - mean  # [B, d]
        squared = ((centred @ precision) * centred).sum(dim=-1)  # [B]: (f − μ)ᵀ P (f − μ)
        total = total + squared / mean.shape[0]
    return total / len(means)  # [B]
