"""Learning-rate schedule and per-stage hyper-parameters.

XrayGPT trains with MiniGPT-4's ``linear_warmup_cosine_lr``: the rate rises linearly from
``warmup_lr`` to ``init_lr`` over ``warmup_steps``, then follows a cosine down to ``min_lr``.
XrayGPT's values (arXiv 2306.07971, Sec. 4.1) are the stages of ``config.FULL_RECIPE``;
:data:`XRAYGPT_STAGE1` / :data:`XRAYGPT_STAGE2` are those stages as :class:`StageConfig`.

Difference, stated: MiniGPT-4 lowers the rate once per epoch along the cosine; here the cosine
runs per step over the stage's steps after warm-up (the same curve, sampled more finely).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from ..config import FULL_RECIPE
from ..recipe import AlignStage, LLMStage


@dataclass(frozen=True)
class StageConfig:
    """Hyper-parameters of one training stage (schedule, batch, optimiser, checkpointing)."""

    name: str
    steps: int
    batch_size: int
    init_lr: float
    min_lr: float
    warmup_lr: float
    warmup_steps: int
    weight_decay: float = 0.05
    grad_clip: float | None = None
    seed: int = 0
    save_every: int = 100

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"stage {self.name!r}: steps and batch_size must be >= 1")
        if not 0 <= self.min_lr <= self.init_lr:
            raise ValueError(f"stage {self.name!r}: need 0 <= min_lr <= init_lr, got {self.min_lr}, {self.init_lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"stage {self.name!r}: warmup_steps must be >= 0")

    def scaled(self, **changes) -> "StageConfig":
        """A copy with some fields changed (e.g. fewer steps for the tiny profile)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def stage_config(stage: AlignStage | LLMStage, name: str, seed: int = 0, save_every: int = 100) -> StageConfig:
    """The :class:`StageConfig` of a recipe stage (its schedule, batch and weight decay)."""
    return StageConfig(name=name, steps=stage.steps, batch_size=stage.batch, init_lr=stage.lr, min_lr=stage.min_lr,
                       warmup_lr=stage.warmup_lr, warmup_steps=stage.warmup, weight_decay=stage.weight_decay,
                       seed=seed, save_every=save_every)


#: XrayGPT stage 1 on MIMIC-CXR (``config.FULL_RECIPE.stage1``): 4 × 5000 iterations.
XRAYGPT_STAGE1 = stage_config(FULL_RECIPE.stage1, "stage1", save_every=1000)
#: XrayGPT stage 2 on OpenI (``config.FULL_RECIPE.stage2``): 1 × 2501 iterations.
XRAYGPT_STAGE2 = stage_config(FULL_RECIPE.stage2, "stage2", save_every=500)


def warmup_cosine_lr(step: int, stage: StageConfig) -> float:
    """Learning rate before optimiser step ``step`` (0-based) of ``stage``."""
    if step < stage.warmup_steps:
        return stage.warmup_lr + (stage.init_lr - stage.warmup_lr) * step / stage.warmup_steps
    span = max(stage.steps - stage.warmup_steps, 1)
    progress = min((step - stage.warmup_steps) / span, 1.0)
    return stage.min_lr + (stage.init_lr - stage.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, stage: StageConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`warmup_cosine_lr`; the optimiser's base lr must be ``init_lr``."""
    for group in optimizer.param_groups:
        group["lr"] = stage.init_lr
        group["initial_lr"] = stage.init_lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_lr(step, stage) / stage.init_lr
    )
