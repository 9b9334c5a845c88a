"""Checkers for the exercises of notebooks 05 (attribution) and 06 (attention).

Each ``check_*`` calls the student's function on small hand-made cases, compares it with the
library (``interpret.faithfulness`` / ``interpret.attention``) and returns a :class:`CheckResult`
whose message says which case failed and what the usual mistake behind it is.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class CheckResult:
    """Outcome of a checker: truthy when passed; ``message`` explains a failure."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return ("PASSED: " if self.passed else "NOT YET: ") + self.message


def _call(fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs), None
    except Exception as exc:  # the student's code may raise anything
        return None, f"your function raised {type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------------------------
# Notebook 05: the pointing game
# ----------------------------------------------------------------------------------------------
def _pointing_cases() -> list[tuple[str, np.ndarray, np.ndarray, float, bool, str]]:
    """(name, saliency, mask, tolerance, expected, hint) on a 30 × 40 canvas (not square)."""
    h, w = 30, 40
    cases = []
    mask = np.zeros((h, w), bool)
    mask[4:8, 20:26] = True  # a lesion in the upper right
    sal = np.zeros((h, w))
    sal[5, 22] = 1.0
    cases.append(("peak inside the mask", sal, mask, 0, True,
                  "a maximum inside the mask is a hit: look the mask up at the peak as mask[row, col] (np.unravel_index gives (row, col))"))
    sal = np.zeros((h, w))
    sal[5, 5] = 1.0  # far left of the lesion
    sal[5, 22] = 0.5
    cases.append(("a higher peak outside", sal, mask, 2, False,
                  "only the single MAXIMUM counts (np.argmax), not any high value inside the mask"))
    sal = -np.ones((h, w))
    sal[5, 22] = -5.0
    cases.append(("negative map, minimum inside", sal, mask, 0, False,
                  "use the maximum, not the minimum or the largest absolute value"))
    sal = np.zeros((h, w))
    sal[10, 23] = 1.0  # 3 rows below the mask's last row (7)
    cases.append(("3 px below, tolerance 3", sal, mask, 3, True,
                  "a peak exactly `tolerance` pixels away counts as a hit (distance <= tolerance)"))
    cases.append(("3 px below, tolerance 2", sal, mask, 2, False,
                  "beyond the tolerance is a miss: did you dilate the mask too much?"))
    sal = np.zeros((h, w))
    sal[10, 29] = 1.0  # 3 rows below and 4 columns right of the corner (7, 25): distance 5
    cases.append(("diagonal, distance 5 > 4", sal, mask, 4, False,
                  "the tolerance is a Euclidean distance: a square (Chebyshev) window says hit here"))
    sal = np.zeros((h, w))
    sal[6, 24] = 1.0  # inside; read as (col, row) = (24, 6) it is far outside
    cases.append(("rows are the first index", sal, mask, 0, True,
                  "np.unravel_index(np.argmax(m), m.shape) gives (row, col); do not swap them"))
    cases.append(("constant map", np.ones((h, w)), mask, 0, False,
                  "a constant map points nowhere: count it as a miss"))
    return cases


def check_pointing_game(fn: Callable[[np.ndarray, np.ndarray, float], bool]) -> CheckResult:
    """Check ``fn(saliency [H, W], mask bool [H, W], tolerance_px) -> bool`` (Zhang et al. 2018)."""
    from ..interpret.faithfulness import pointing_hit

    for name, saliency, mask, tolerance, expected, hint in _pointing_cases():
        assert pointing_hit(saliency, mask, tolerance) == expected, name  # the checker's own key
        got, error = _call(fn, saliency.copy(), mask.copy(), tolerance)
        if error:
            return CheckResult(False, f"case '{name}': {error}")
        if not isinstance(got, (bool, np.bool_)):
            return CheckResult(False, f"case '{name}': return True or False, got {type(got).__name__}")
        if bool(got) != expected:
            return CheckResult(False, f"case '{name}': expected {expected}, got {bool(got)}. Hint: {hint}")
    return CheckResult(True, f"all {len(_pointing_cases())} cases agree with interpret.faithfulness.pointing_hit")


# ----------------------------------------------------------------------------------------------
# Notebook 06: attention rollout
# ----------------------------------------------------------------------------------------------
def reference_rollout(attentions: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Abnar & Zuidema 2020: ``Ã_l = (1 − r)·A_l + r·I`` (rows renormalised), ``R = Ã_L ⋯ Ã_1``."""
    n = attentions[0].shape[-1]
    rollout = torch.eye(n, dtype=torch.float64)
    for a in attentions:
        a = (1 - residual) * a.double() + residual * torch.eye(n, dtype=torch.float64)
        rollout = (a / a.sum(dim=-1, keepdim=True)) @ rollout
    return rollout


def check_rollout(fn: Callable[[list[torch.Tensor], float], torch.Tensor]) -> CheckResult:
    """Check ``fn(attentions: list of [n, n] row-stochastic, residual) -> [n, n]`` rollout."""
    gen = torch.Generator().manual_seed(0)
    n = 5
    attentions = [torch.softmax(3 * torch.randn(n, n, generator=gen, dtype=torch.float64), dim=-1) for _ in range(3)]
    for residual in (0.5, 0.0, 0.3):
        expected = reference_rollout(attentions, residual)
        got, error = _call(fn, [a.clone() for a in attentions], residual)
        if error:
            return CheckResult(False, f"residual={residual}: {error}")
        got = torch.as_tensor(got, dtype=torch.float64)
        if got.shape != expected.shape:
            return CheckResult(False, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}")
        if torch.allclose(got, expected, atol=1e-6):
            continue
        plain = torch.eye(n, dtype=torch.float64)
        for a in attentions:
            plain = a @ plain
        reversed_order = reference_rollout(attentions[::-1], residual)
        if residual > 0 and torch.allclose(got, plain, atol=1e-6):
            hint = "you multiplied the raw attentions: add the residual, (1 - r)·A + r·I, in every layer"
        elif torch.allclose(got, reversed_order, atol=1e-6) or torch.allclose(got, expected.T, atol=1e-6):
            hint = "order matters: the later layer multiplies on the LEFT, R ← Ã_l @ R"
        elif not torch.allclose(got.sum(dim=-1), torch.ones(n, dtype=torch.float64), atol=1e-6):
            hint = "each row of the rollout should sum to 1: renormalise the rows of (1 - r)·A + r·I"
        else:
            hint = "compare with the formula R = Ã_L ⋯ Ã_2 Ã_1, Ã = (1 - r)·A + r·I"
        return CheckResult(False, f"residual={residual}: values differ from the reference. Hint: {hint}")
    return CheckResult(True, "matches Abnar & Zuidema's rollout for residual 0.5, 0 and 0.3")
