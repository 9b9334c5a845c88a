"""Checkers for the exercises of notebooks 05 (attribution), 06 (attention) and 09 (the released model).

Each ``check_*`` calls the student's function on small hand-made cases, compares it with the
library (``interpret.faithfulness`` / ``interpret.attention``) and returns the shared
``exercises.checking.CheckResult``, whose feedback says which case failed and the usual mistake.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..interpret.faithfulness import pointing_hit
from ..interpret.qformer_attention import StackAttention, cross_attention_maps
from .checking import CheckResult


def _call(fn: Callable, *args, **kwargs):
    """``(result, None)``, or ``(None, (status, message))`` when the student's code raised."""
    try:
        return fn(*args, **kwargs), None
    except NotImplementedError:
        return None, ("not implemented", "not implemented yet: replace the `raise NotImplementedError` line")
    except Exception as exc:  # the student's code may raise anything
        return None, ("error", f"your function raised {type(exc).__name__}: {exc}")


def _result(exercise: str, passed: bool, message: str, done: int, total: int, status: str = "checked") -> CheckResult:
    return CheckResult(exercise=exercise, passed=passed, feedback=[message], cases_passed=done, cases_total=total,
                       status=status)


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

    exercise = "pointing game (notebook 05)"
    cases = _pointing_cases()
    for done, (name, saliency, mask, tolerance, expected, hint) in enumerate(cases):
        assert pointing_hit(saliency, mask, tolerance) == expected, name  # the checker's own key
        got, error = _call(fn, saliency.copy(), mask.copy(), tolerance)
        if error:
            return _result(exercise, False, f"case '{name}': {error[1]}", done, len(cases), error[0])
        if not isinstance(got, (bool, np.bool_)):
            return _result(exercise, False, f"case '{name}': return True or False, got {type(got).__name__}",
                           done, len(cases))
        if bool(got) != expected:
            return _result(exercise, False, f"case '{name}': expected {expected}, got {bool(got)}. Hint: {hint}",
                           done, len(cases))
    return _result(exercise, True, "every case agrees with interpret.faithfulness.pointing_hit", len(cases), len(cases))


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
    exercise = "attention rollout (notebook 06)"
    gen = torch.Generator().manual_seed(0)
    n = 5
    attentions = [torch.softmax(3 * torch.randn(n, n, generator=gen, dtype=torch.float64), dim=-1) for _ in range(3)]
    residuals = (0.5, 0.0, 0.3)
    for done, residual in enumerate(residuals):
        expected = reference_rollout(attentions, residual)
        got, error = _call(fn, [a.clone() for a in attentions], residual)
        if error:
            return _result(exercise, False, f"residual={residual}: {error[1]}", done, len(residuals), error[0])
        got = torch.as_tensor(got, dtype=torch.float64)
        if got.shape != expected.shape:
            return _result(exercise, False, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}",
                           done, len(residuals))
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
        return _result(exercise, False, f"residual={residual}: values differ from the reference. Hint: {hint}",
                       done, len(residuals))
    return _result(exercise, True, "matches Abnar & Zuidema's rollout for residual 0.5, 0 and 0.3",
                   len(residuals), len(residuals))


# ----------------------------------------------------------------------------------------------
# Notebook 09: where a Q-Former query reads
# ----------------------------------------------------------------------------------------------
def reference_query_maps(vision: list[torch.Tensor], cross: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The library's answer (``interpret.qformer_attention.cross_attention_maps``) for one ViT and one
    cross-attention layer given as plain matrices."""

    q = cross.shape[0]
    built = StackAttention(weights={"vision": [a[None] for a in vision], "query": [torch.eye(q)[None]],
                                    "cross": [cross[None]]}, grid=grid, cross_layers=(0,))
    return cross_attention_maps(built).double()


def _query_cases() -> list[tuple[str, list[torch.Tensor], torch.Tensor, tuple[int, int]]]:
    gen = torch.Generator().manual_seed(9)

    def rows(n: int, m: int) -> torch.Tensor:
        return torch.softmax(3 * torch.randn(n, m, generator=gen, dtype=torch.float64), dim=-1)

    cases = []
    for name, grid, layers, q in (("2 x 2 patches, 2 ViT layers", (2, 2), 2, 3),
                                  ("2 x 3 patches (rows first), 3 ViT layers", (2, 3), 3, 4),
                                  ("3 x 2 patches, 1 ViT layer", (3, 2), 1, 2)):
        t = 1 + grid[0] * grid[1]
        cases.append((name, [rows(t, t) for _ in range(layers)], rows(q, t), grid))
    return cases


def _query_hint(got: torch.Tensor, vision: list[torch.Tensor], cross: torch.Tensor, grid: tuple[int, int]) -> str:
    """Which usual mistake reproduces ``got``."""
    def normalised(m: torch.Tensor) -> torch.Tensor:
        m = m.reshape(m.shape[0], *grid)
        return m / m.sum(dim=(1, 2), keepdim=True)

    t = cross.shape[1]
    plain = torch.eye(t, dtype=torch.float64)
    backwards = torch.eye(t, dtype=torch.float64)
    for a in vision:
        plain = (torch.eye(t, dtype=torch.float64) + a) @ plain
        backwards = backwards @ (torch.eye(t, dtype=torch.float64) + a)
    extra = plain - torch.eye(t, dtype=torch.float64)
    r_bar = extra / extra.sum(dim=-1, keepdim=True) + torch.eye(t, dtype=torch.float64)
    extra_b = backwards - torch.eye(t, dtype=torch.float64)
    r_bar_b = extra_b / extra_b.sum(dim=-1, keepdim=True) + torch.eye(t, dtype=torch.float64)
    mistakes = [
        (normalised(cross[:, 1:]), "carry the cross-attention through the ViT: multiply it by R̄ on the right"),
        (normalised((cross @ plain)[:, 1:]), "use R̄ = rownorm(R − I) + I, not the rollout R itself (Chefer et al. Eqs. 8–9)"),
        (normalised((cross @ r_bar_b)[:, 1:]), "order matters: the later ViT layer multiplies on the LEFT, R ← (I + A_l) @ R"),
        (normalised((cross @ r_bar)[:, :-1]), "the [CLS] token is column 0: drop the FIRST column, not the last"),
        ((cross @ r_bar)[:, 1:].reshape(cross.shape[0], *grid), "normalise each query's map to sum 1 over the patches"),
        (normalised((cross @ r_bar)[:, 1:].reshape(-1, grid[1], grid[0]).transpose(1, 2).reshape(cross.shape[0], -1)),
         "patches are numbered row by row: reshape to (rows, cols), not (cols, rows)"),
    ]
    for wrong, hint in mistakes:
        if got.shape == wrong.shape and torch.allclose(got, wrong, atol=1e-6):
            return hint
    return "compare with maps = normalise((C · R̄)[:, 1:]) laid out on (rows, cols), R = Π (I + A_l), R̄ = rownorm(R − I) + I"


def check_query_maps(fn: Callable[[list[torch.Tensor], torch.Tensor, tuple[int, int]], torch.Tensor]) -> CheckResult:
    """Check ``fn(vision_attentions: list of [T, T], cross: [Q, T], grid) -> [Q, rows, cols]`` (notebook 09)."""
    exercise = "where each query token reads (notebook 09)"
    cases = _query_cases()
    for done, (name, vision, cross, grid) in enumerate(cases):
        expected = reference_query_maps(vision, cross, grid)
        got, error = _call(fn, [a.clone() for a in vision], cross.clone(), grid)
        if error:
            return _result(exercise, False, f"{name}: {error[1]}", done, len(cases), error[0])
        got = torch.as_tensor(got, dtype=torch.float64)
        if got.shape != expected.shape:
            hint = (" Drop column 0 ([CLS]) before laying the patches out." if got.numel() > expected.numel() else "")
            return _result(exercise, False, f"{name}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}."
                           + hint, done, len(cases))
        if not torch.allclose(got, expected, atol=1e-6):
            return _result(exercise, False, f"{name}: values differ from the library. Hint: "
                           f"{_query_hint(got, vision, cross, grid)}", done, len(cases))
    return _result(exercise, True, "matches interpret.qformer_attention.cross_attention_maps on three grids",
                   len(cases), len(cases))
