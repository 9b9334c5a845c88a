"""The chat panel's Explain action: which pixels made the model say its last answer (or a phrase).

A thin adapter over the interpretability library, so the panel does not depend on its details:
the target is ``log P(phrase | image, conversation so far, answer before the phrase)``
(:func:`xraygpt_lab.interpret.targets.phrase_target`) or of the whole answer
(:func:`~xraygpt_lab.interpret.targets.answer_target`), teacher-forced on the exact prompt that
produced the answer; :func:`xraygpt_lab.interpret.attribution.explain` runs one Captum method.
The default is the library's recommended IG (``attribution.RECOMMENDED_IG``: Integrated
Gradients, Sundararajan et al. 2017, averaged over a blurred and a black baseline, Sturmfels et
al. 2020, and gated by the feature-level IG at strides 4 and 8, as Guided Grad-CAM gates its
fine map): "which pixels, where the encoder's features also support it, raised this phrase?".

Only evidence *for* the phrase is drawn: the map is clipped at 0 and scaled by its 99th
percentile (``interpret.plots.evidence_scale``, as every overlay of the toolkit), so one hot pixel
cannot wash out the rest. A finding's name ("effusion") is explained as the whole noun phrase the
answer has for it ("large left pleural effusion", ``interpret.phrases``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.readers.images import MEDCLIP_SPACE, PixelSpace
from ..interpret.attribution import RECOMMENDED_IG, explain
from ..interpret.phrases import noun_phrase
from ..interpret.plots import evidence_scale
from ..interpret.targets import answer_target, phrase_target

#: Methods offered in the panel (a subset of ``interpret.attribution.METHODS`` that run in
#: seconds on the tiny model); the first is the default.
PANEL_METHODS: tuple[str, ...] = ("ig", "gradcam", "occlusion", "smoothgrad")
#: Integrated-gradients steps in the panel (enough for a stable picture; 32 in the library).
PANEL_IG_STEPS = 16


@dataclass
class Explanation:
    """What Explain shows: a heat map over the model's view of the image, and how it was made."""

    heatmap: np.ndarray  # [S, S] in [0, 1], evidence FOR the target
    model_view: np.ndarray  # [S, S] in [0, 1], the preprocessed image the encoder saw
    phrase: str | None  # None = the whole answer
    method: str
    baseline: str
    target: str
    score: float  # the target log-probability at the input
    resolution: str

    def caption(self) -> str:
        """One plain-text line naming what is shown (escaped by the caller)."""
        what = f"the phrase \u201c{self.phrase}\u201d" if self.phrase else "the whole last answer"
        return (f"Pixels that raised the log-probability of {what} (log P = {self.score:.2f}); "
                f"method {self.method}, baseline: {self.baseline}; resolution: {self.resolution}. "
                "Bright = stronger evidence for the words; dark = none.")


def model_view(pixel_values: torch.Tensor, space: PixelSpace = MEDCLIP_SPACE) -> np.ndarray:
    """Undo the model's normalisation: ``[1, C, S, S]`` → ``[S, S]`` grey in ``[0, 1]``."""
    return space.to_grey(pixel_values)[0]


def explain_answer(model: Any, pixel_values: torch.Tensor, prompt: str, answer: str,
                   phrase: str | None = None, method: str = PANEL_METHODS[0]) -> Explanation:
    """Attribute ``phrase`` (or the whole ``answer``) to the pixels of ``pixel_values`` ``[1, C, S, S]``.

    ``prompt`` is the full conversation prompt that produced ``answer`` (with the image slot).
    Raises ``ValueError`` when the phrase does not occur in the answer or the answer is empty.
    """

    if phrase is not None and phrase.strip():
        phrase = noun_phrase(answer, phrase.strip()) or phrase.strip()  # "effusion" → "large left pleural effusion"
        target = phrase_target(model, phrase, answer=answer, prompt=prompt)
    else:
        target = answer_target(model, answer, prompt=prompt)
    kwargs: dict[str, Any] = ({"n_steps": PANEL_IG_STEPS, "internal_batch_size": 8, **RECOMMENDED_IG}
                              if method == "ig" else {})
    was_training = model.training
    model.eval()
    try:
        result = explain(target, pixel_values.to(model.device), method, **kwargs)
    finally:
        model.train(was_training)
    return Explanation(
        heatmap=evidence_scale(np.nan_to_num(result.map))[0], model_view=model_view(pixel_values, model.pixel_space),
        phrase=phrase.strip() if phrase and phrase.strip() else None, method=result.method,
        baseline=result.baseline, target=result.target, score=result.score, resolution=result.resolution,
    )
