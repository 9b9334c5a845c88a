"""Alignment stages 1 and 2: train the one linear layer on (image, summary) pairs.

XrayGPT (arXiv 2306.07971, Sec. 3.2, 4.1): stage 1 on ~114k MIMIC-CXR summaries, stage 2 on
~3k OpenI summaries, both with the encoder and the LLM frozen. Each training sample gets one of
the 15 alignment instructions at random (``data.instructions``). Encoder features come from
``train.feature_cache`` so that the frozen encoder runs once per image. Not in XrayGPT: the
walkthrough's recipes also ask a share of the images one of their yes/no questions
(``yes_no_share``: half in stage 1, and in ``--long``'s stage 2), so that the projection carries
what a one-word answer reads.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.text.instructions import ALIGNMENT_INSTRUCTIONS
from ..models.conversation import xraygpt_prompt
from ..models.xraygpt import XrayGPT
from .grounding import polarity, yes_no_weights
from .loop import StageResult, train_stage
from .schedule import StageConfig


@dataclass
class AlignmentSet:
    """Cached encoder tokens and their target summaries; ``questions`` (optional): per image, its
    yes/no turns as ``(question, answer)`` pairs (:func:`yes_no_turns`)."""

    features: torch.Tensor  # [M, N, d_vision]
    targets: list[str]
    questions: list[list[tuple[str, str]]] | None = None

    def __post_init__(self) -> None:
        if self.features.dim() != 3:
            raise ValueError(f"features must be [images, tokens, dim], got {list(self.features.shape)}")
        if len(self.targets) != self.features.shape[0]:
            raise ValueError(f"{self.features.shape[0]} images but {len(self.targets)} targets")
        if not self.targets:
            raise ValueError("an alignment set needs at least one image")
        if self.questions is not None and len(self.questions) != len(self.targets):
            raise ValueError(f"{len(self.targets)} images but {len(self.questions)} question lists")

    def __len__(self) -> int:
        return len(self.targets)


def yes_no_turns(conversations: Sequence[Sequence[dict]]) -> list[list[tuple[str, str]]]:
    """Each case's turns whose answer starts with "Yes" or "No", as ``(question, answer)``."""
    return [[(t["question"].strip(), t["answer"].strip()) for t in turns if polarity(t["answer"]) is not None]
            for turns in conversations]


def alignment_batches(data: AlignmentSet, batch_size: int,
                      instructions: Sequence[str] = ALIGNMENT_INSTRUCTIONS, yes_no_share: float = 0.0,
                      draw_weights: Sequence[float] | None = None) -> Callable[[int, random.Random], dict[str, Any]]:
    """``make_batch(step, rng)``: ``batch_size`` random images, each with a random instruction and
    its summary, or (a share ``yes_no_share`` of them) one of its yes/no questions and the answer.
    ``draw_weights`` (one per image) draws some images more often than others (None: uniformly).

    The questions are drawn so that each is answered "Yes" as often as "No" over the images
    (``train.grounding.yes_no_weights``): the projection then has to carry what the answer depends
    on, since the question alone does not tell it.
    """
    if not 0 <= yes_no_share <= 1:
        raise ValueError(f"yes_no_share must be in [0, 1], got {yes_no_share}")
    if draw_weights is not None and (len(draw_weights) != len(data) or min(draw_weights) < 0
                                     or not sum(draw_weights) > 0):
        raise ValueError(f"draw_weights must be {len(data)} non-negative numbers, not all zero")
    turns = data.questions if yes_no_share > 0 else None
    if yes_no_share > 0 and not (turns and any(turns)):
        raise ValueError("yes_no_share > 0 needs an alignment set with yes/no questions")
    weights: list[list[float]] = []
    if turns:  # balanced over the images as they are drawn
        weigh = yes_no_weights([[{"question": q, "answer": a} for q, a in case] for case in turns],
                               case_weights=draw_weights)
        weights = [[weigh({"question": q, "answer": a}) for q, a in case] for case in turns]

    population = range(len(data))

    def make_batch(step: int, rng: random.Random) -> dict[str, Any]:
        picks = ([rng.randrange(len(data)) for _ in range(batch_size)] if draw_weights is None
                 else rng.choices(population, weights=draw_weights, k=batch_size))
        prompts, targets = [], []
        for i in picks:
            if turns and turns[i] and rng.random() < yes_no_share:
                question, answer = rng.choices(turns[i], weights=weights[i])[0]
                prompts.append(xraygpt_prompt(question))
                targets.append(answer)
            else:
                prompts.append(xraygpt_prompt(rng.choice(instructions)))
                targets.append(data.targets[i])
        return {"prompts": prompts, "targets": targets, "features": data.features[picks]}  # features: [B, N, d_vision]
    return make_batch


def align_stage(model: XrayGPT, data: AlignmentSet, stage: StageConfig,
                checkpoint: str | Path | None = None, yes_no_share: float = 0.0,
                draw_weights: Sequence[float] | None = None, **train_kwargs: Any) -> StageResult:
    """Train ``model.projection`` (and whatever else is left trainable) on ``data``; a share
    ``yes_no_share`` of the examples are yes/no questions, images drawn by ``draw_weights``
    (:func:`alignment_batches`)."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("nothing to train: the projection is frozen")
    batches = alignment_batches(data, stage.batch_size, yes_no_share=yes_no_share, draw_weights=draw_weights)
    return train_stage(model, stage, batches, checkpoint, **train_kwargs)
