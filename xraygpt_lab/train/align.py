"""Alignment stages 1 and 2: train the one linear layer on (image, summary) pairs.

XrayGPT (arXiv 2306.07971, Sec. 3.2, 4.1): stage 1 on ~114k MIMIC-CXR summaries, stage 2 on
~3k OpenI summaries, both with the encoder and the LLM frozen. Each training sample gets one of
the 15 alignment instructions at random (``data.instructions``). Encoder features come from
``train.feature_cache`` so that the frozen encoder runs once per image.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.text.instructions import ALIGNMENT_INSTRUCTIONS
from ..models.conversation import xraygpt_prompt
from ..models.xraygpt import XrayGPT
from .loop import StageResult, train_stage
from .schedule import StageConfig


@dataclass
class AlignmentSet:
    """Cached encoder tokens and their target summaries."""

    features: torch.Tensor  # [M, N, d_vision]
    targets: list[str]

    def __post_init__(self) -> None:
        if self.features.dim() != 3:
            raise ValueError(f"features must be [images, tokens, dim], got {list(self.features.shape)}")
        if len(self.targets) != self.features.shape[0]:
            raise ValueError(f"{self.features.shape[0]} images but {len(self.targets)} targets")
        if not self.targets:
            raise ValueError("an alignment set needs at least one image")

    def __len__(self) -> int:
        return len(self.targets)


def alignment_batches(data: AlignmentSet, batch_size: int,
                      instructions: Sequence[str] = ALIGNMENT_INSTRUCTIONS):
    """``make_batch(step, rng)``: ``batch_size`` random images, each with a random instruction."""
    def make_batch(step: int, rng: random.Random) -> dict[str, Any]:
        picks = [rng.randrange(len(data)) for _ in range(batch_size)]
        return {
            "prompts": [xraygpt_prompt(rng.choice(instructions)) for _ in picks],
            "targets": [data.targets[i] for i in picks],
            "features": data.features[picks],  # [B, N, d_vision]
        }
    return make_batch


def align_stage(model: XrayGPT, data: AlignmentSet, stage: StageConfig,
                checkpoint: str | Path | None = None, **train_kwargs: Any) -> StageResult:
    """Train ``model.projection`` (and whatever else is left trainable) on ``data``."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("nothing to train: the projection is frozen")
    return train_stage(model, stage, alignment_batches(data, stage.batch_size), checkpoint, **train_kwargs)
