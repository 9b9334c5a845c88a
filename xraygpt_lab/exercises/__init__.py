"""Automatic checkers for the notebooks' exercises: each takes a student function and explains
what is wrong, if anything.

``from xraygpt_lab.exercises import check_rms_norm`` then ``check_rms_norm(my_rms_norm)``: the
result is a :class:`~xraygpt_lab.exercises.checking.CheckResult`, shown as a green or red box,
truthy when the answer matches the library. Solutions: ``tutorials/solutions/`` (load one with
:func:`~xraygpt_lab.exercises.checking.load_solution`).

=========  ===================================================  ===========================
notebook   exercise (function the student writes)               checker
=========  ===================================================  ===========================
00         ``cardiothoracic_ratio(heart, right_lung, left_lung)``  ``check_cardiothoracic_ratio``
00         ``finding_side(mask)`` (radiological convention)      ``check_finding_side``
00b        ``keep_report(findings, impression)``                 ``check_keep_report``
00b        ``drop_comparisons(section)``                         ``check_drop_comparisons``
01         ``soft_label_loss(img, txt, scale, l_img, l_txt)``    ``check_soft_label_loss``
02         ``rms_norm(x, weight, eps)``                          ``check_rms_norm``
02         ``apply_rope(x, position_ids, base)``                 ``check_rope``
03         ``xraygpt_labels(tokenizer, prompt, target, N)``      ``check_xraygpt_labels``
04         ``escape_message(text)``                              ``check_escape_message``
04         ``fit_history(messages, count_tokens, context, k)``   ``check_fit_history``
05, 06     interpretability exercises                           ``exercises.interpret``
07         ``ce_scores(pred_labels, ref_labels, observations)``  ``check_ce_scores``
08         ``step_flops(frozen, trainable, tokens, through)``    ``check_step_flops``
09         ``query_maps(vision, cross, grid)``                   ``check_query_maps``
10         ``feature_score(levels, means, precisions)``          ``check_feature_score``
=========  ===================================================  ===========================

Checkers are imported lazily (only the topic module you use is loaded, so ``import
xraygpt_lab.exercises`` does not import torch).
"""
from __future__ import annotations

import importlib
from typing import Any

from .checking import Case, CheckResult, ExerciseFailed, Mistake, load_solution, run_check

#: checker name → topic module (inside this package) that defines it.
CHECKERS: dict[str, str] = {
    "check_cardiothoracic_ratio": "synthetic",
    "check_finding_side": "synthetic",
    "check_keep_report": "data",
    "check_drop_comparisons": "data",
    "check_soft_label_loss": "encoder",
    "check_rms_norm": "language_model",
    "check_rope": "language_model",
    "check_xraygpt_labels": "alignment",
    "check_escape_message": "chat",
    "check_fit_history": "chat",
    "check_ce_scores": "evaluation",
    "check_step_flops": "full_scale",
    "check_pointing_game": "interpret",
    "check_rollout": "interpret",
    "check_query_maps": "interpret",
    "check_feature_score": "ood",
}


def __getattr__(name: str) -> Any:
    if name in CHECKERS:
        return getattr(importlib.import_module(f"{__name__}.{CHECKERS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}; checkers: {sorted(CHECKERS)}")


def __dir__() -> list[str]:
    return sorted([*globals(), *CHECKERS])


__all__ = ["CHECKERS", "Case", "CheckResult", "ExerciseFailed", "Mistake", "load_solution", "run_check", *CHECKERS]
