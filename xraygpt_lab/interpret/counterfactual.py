"""Counterfactuals: the same phantom with and without one finding, side by side.

The synthetic world renders ``render_case(seed, findings=…)`` from independent random streams, so
toggling one finding (``data.synthetic.toggle_finding``) changes only the pixels inside that
finding's mask (plus the blur's reach of a couple of pixels). Whatever changes between the two
reports, and between the two attribution maps, is caused by that finding alone.

The attribution diff uses ONE target for both images — the log-probability of the phrase inside
the report of the image WITH the finding — so ``map_with − map_without`` shows where the evidence
for saying that phrase appeared, and ``score_with − score_without`` how much it grew.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np
import torch

from ..data.readers.images import preprocess
from ..data.synthetic.world import toggle_finding
from .attribution import AttributionMap, explain
from .targets import DEFAULT_INSTRUCTION, phrase_target


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """Word-level diff: ``[(op, text)]`` with op ``"="`` (kept), ``"-"`` (only in before), ``"+"``."""
    a, b = before.split(), after.split()
    out: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(("=", " ".join(a[i1:i2])))
        else:
            if i2 > i1:
                out.append(("-", " ".join(a[i1:i2])))
            if j2 > j1:
                out.append(("+", " ".join(b[j1:j2])))
    return out


def format_diff(diff: list[tuple[str, str]]) -> str:
    """``[-removed-]`` / ``{+added+}`` markup (as ``git diff --word-diff``)."""
    parts = []
    for op, text in diff:
        parts.append(text if op == "=" else f"[-{text}-]" if op == "-" else f"{{+{text}+}}")
    return " ".join(parts)


def counterfactual_pair(case, observation: str):
    """``(with_case, without_case)``: the same seed and anatomy, ``observation`` toggled."""

    other = toggle_finding(case, observation)
    if observation in case.masks:
        return case, other
    return other, case


@dataclass
class Counterfactual:
    """Both images, both reports, their word diff and the attribution of one phrase on each."""

    observation: str
    phrase: str
    with_case: object  # data.synthetic.SyntheticCase
    without_case: object
    report_with: str
    report_without: str
    report_diff: list[tuple[str, str]]
    map_with: AttributionMap
    map_without: AttributionMap

    @property
    def pixel_diff(self) -> np.ndarray:
        """``image_with − image_without``: ``[H, W]``, zero outside the finding (and blur)."""
        return self.with_case.image - self.without_case.image

    @property
    def attribution_diff(self) -> np.ndarray:
        return self.map_with.map - self.map_without.map

    @property
    def score_change(self) -> float:
        """How much more the image WITH the finding supports the phrase (target units)."""
        return self.map_with.score - self.map_without.score


def explain_counterfactual(model, case, observation: str, phrase: str, *, method: str = "ig",
                           instruction: str = DEFAULT_INSTRUCTION, answer: str | None = None,
                           max_new_tokens: int = 96, **attribution_kwargs) -> Counterfactual:
    """Generate both reports and attribute ``phrase`` on both images with one shared target.

    ``answer`` (default: the ground-truth summary of the image with the finding) is the
    teacher-forced text that contains ``phrase``.
    """

    with_case, without_case = counterfactual_pair(case, observation)
    size = model.encoder.config.image_size
    pixels = torch.stack([preprocess(with_case.image, size), preprocess(without_case.image, size)])  # [2, 1, S, S]
    reports = model.describe(pixels, instruction=instruction, max_new_tokens=max_new_tokens)
    answer = with_case.summary if answer is None else answer
    target = phrase_target(model, phrase, answer, instruction)
    map_with = explain(target, pixels[:1], method, **attribution_kwargs)
    map_without = explain(target, pixels[1:], method, **attribution_kwargs)
    return Counterfactual(observation=observation, phrase=phrase, with_case=with_case, without_case=without_case,
                          report_with=reports[0], report_without=reports[1],
                          report_diff=word_diff(reports[1], reports[0]),
                          map_with=map_with, map_without=map_without)
