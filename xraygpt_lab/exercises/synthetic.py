"""Exercises for notebook 00 (the synthetic world): the cardiothoracic ratio and laterality.

* :func:`check_cardiothoracic_ratio` — CTR = maximal transverse cardiac diameter / maximal
  internal thoracic diameter (Danzer 1919; ``data.anatomy.heart_geometry``), measured here on
  masks as horizontal extents in pixels. Cardiomegaly on a PA film: CTR > 0.5.
* :func:`check_finding_side` — which of the *patient's* sides a finding mask lies on. Radiological
  convention: the patient's left is on the image's right (``data.anatomy.side_sign``).

:func:`anatomy_masks` gives the heart and lung masks of a phantom (the synthetic world only
returns masks of positive findings), so students can measure any case they render.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..data.synthetic import anatomy as anat
from ..data.synthetic.anatomy import AnatomyParams, sample_anatomy
from .checking import Case, CheckResult, Mistake, run_check

#: Tolerance of the CTR check: a pixel more or less on each extent (inclusive vs exclusive
#: width) changes the ratio by well under 2 % at 64 px and above.
CTR_RTOL = 0.02


def anatomy_masks(anatomy: AnatomyParams, size: int = 128, ctr: float | None = None) -> dict[str, np.ndarray]:
    """Boolean ``[size, size]`` masks of a phantom: ``heart``, ``right lung``, ``left lung``.

    Lung masks exclude the heart and mediastinum, as on the image. ``ctr`` overrides the heart
    size (default ``anatomy.heart_ctr``; a ``Cardiomegaly`` finding stores its own in
    ``finding.detail["ctr"]``). Sides are the patient's.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    return anat.lung_masks(anatomy, size, ctr)  # [H, W] each


def _columns(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D [H, W], got shape {list(mask.shape)}")
    columns = np.nonzero(mask.any(axis=0))[0]
    if columns.size == 0:
        raise ValueError("the mask is empty")
    return columns


def _extent(columns: np.ndarray) -> int:
    return int(columns.max() - columns.min() + 1)


def cardiothoracic_ratio(heart: np.ndarray, right_lung: np.ndarray, left_lung: np.ndarray) -> float:
    """Reference: heart width / thoracic width, widths = horizontal extents (columns, inclusive).

    The thoracic width spans both lungs: from the outer edge of the right lung (image left) to
    the outer edge of the left lung (image right).
    """
    thorax = np.asarray(right_lung, bool) | np.asarray(left_lung, bool)
    return _extent(_columns(heart)) / _extent(_columns(thorax))


def finding_side(mask: np.ndarray) -> str:
    """Reference: the patient's side of a finding mask, ``"left"`` or ``"right"``.

    The mask's centre of mass is compared with the image's vertical midline; the patient's left
    is the image's right half (radiological convention).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError("the mask must be a non-empty 2-D array")
    centre = np.nonzero(mask)[1].mean()  # mean column index
    return "left" if centre >= (mask.shape[1] - 1) / 2 else "right"


# --------------------------------------------------------------------------- checkers


def _ctr_cases() -> list[Case]:
    cases = []
    for i, (seed, size, ctr) in enumerate([(1, 128, None), (7, 96, 0.60), (11, 64, None), (23, 128, 0.66)]):
        anatomy = sample_anatomy(np.random.default_rng(seed))
        m = anatomy_masks(anatomy, size, ctr)
        label = f"phantom {i + 1} ({size} px, true CTR {anatomy.heart_ctr if ctr is None else ctr:.2f})"
        cases.append(Case(label, (m["heart"], m["right lung"], m["left lung"])))
    return cases


def check_cardiothoracic_ratio(answer: Callable[[np.ndarray, np.ndarray, np.ndarray], float], *,
                               strict: bool = False) -> CheckResult:
    """Check ``answer(heart, right_lung, left_lung) -> float`` against :func:`cardiothoracic_ratio`."""

    def widths(a, b):
        return lambda h, r, l: a(h) / b(np.asarray(r, bool) | np.asarray(l, bool))

    col_extent = lambda m: _extent(_columns(m))  # noqa: E731
    row_extent = lambda m: _extent(np.nonzero(np.asarray(m, bool).any(axis=1))[0])  # noqa: E731
    area = lambda m: float(np.asarray(m, bool).sum())  # noqa: E731
    mistakes = [
        Mistake("you measured heights (rows) instead of widths: the CTR compares *transverse* "
                "(left-right) diameters, i.e. columns (axis 1)", widths(row_extent, row_extent)),
        Mistake("you compared areas (pixel counts), not widths: the CTR is a ratio of two lengths",
                widths(area, area)),
        Mistake("the ratio is upside down: heart width divided by thoracic width",
                lambda h, r, l: col_extent(np.asarray(r, bool) | np.asarray(l, bool)) / col_extent(h)),
        Mistake("you used one lung only as the thorax: the thoracic diameter spans both lungs, "
                "from the right lung's outer edge to the left lung's outer edge",
                lambda h, r, l: col_extent(h) / col_extent(r)),
        Mistake("you used one lung only as the thorax: the thoracic diameter spans both lungs, "
                "from the right lung's outer edge to the left lung's outer edge",
                lambda h, r, l: col_extent(h) / col_extent(l)),
        Mistake("you divided by the sum of the two lung widths, leaving out the mediastinum between "
                "them: measure one extent across both lungs together",
                lambda h, r, l: col_extent(h) / (col_extent(r) + col_extent(l))),
        Mistake("you divided by the image width, not the thorax width",
                lambda h, r, l: col_extent(h) / np.asarray(h).shape[1]),
    ]
    compare = lambda got, exp: None if isinstance(got, (int, float, np.floating)) and abs(float(got) - exp) <= CTR_RTOL * exp \
        else (f"got {float(got) if isinstance(got, (int, float, np.number)) else got!r:.4}, "
              f"expected {exp:.3f} (±{CTR_RTOL:.0%})")  # noqa: E731
    return run_check("cardiothoracic ratio", answer, cardiothoracic_ratio, _ctr_cases(), mistakes,
                     compare=compare, strict=strict,
                     hint="width of a mask = (last column that has a True pixel) - (first such column) + 1",
                     success="a CTR above 0.5 on a PA film means cardiomegaly")


def _side_cases() -> list[Case]:
    from ..data.synthetic.lesions import Finding
    from ..data.synthetic.world import render_case

    cases = []
    plan = [(3, "Pleural Effusion", "left"), (4, "Pneumothorax", "right"), (5, "Lung Lesion", "left"),
            (6, "Consolidation", "right"), (8, "Atelectasis", "left"), (9, "Pneumothorax", "left")]
    for seed, observation, side in plan:
        case = render_case(seed, 64, findings=[Finding(observation, side=side)])
        cases.append(Case(f"a {observation.lower()} on the patient's {side} (seed {seed})",
                          (case.masks[observation],)))
    return cases


def check_finding_side(answer: Callable[[np.ndarray], str], *, strict: bool = False) -> CheckResult:
    """Check ``answer(mask) -> "left" | "right"`` (the patient's side) on rendered findings."""

    def centre(mask: np.ndarray, axis: int) -> float:
        return float(np.nonzero(np.asarray(mask, bool))[axis].mean())

    mistakes = [
        Mistake("you returned the side of the *image*; radiological convention puts the patient's "
                "left on the image's right (you face the patient), so swap the two",
                lambda m: "right" if finding_side(m) == "left" else "left"),
        Mistake("you looked at rows (axis 0, top-bottom); left-right is the column index (axis 1)",
                lambda m: "left" if centre(m, 0) >= (np.asarray(m).shape[0] - 1) / 2 else "right"),
        Mistake("you looked at rows (axis 0, top-bottom); left-right is the column index (axis 1)",
                lambda m: "right" if centre(m, 0) >= (np.asarray(m).shape[0] - 1) / 2 else "left"),
        Mistake("return exactly 'left' or 'right' (lower case), the patient's side as in Finding.side",
                test=lambda got, exp, case: isinstance(got, str) and got.strip().lower() == exp and got != exp),
    ]
    return run_check("side of a finding", answer, finding_side, _side_cases(), mistakes, strict=strict,
                     hint="take the mean column of the mask's True pixels and compare it with the image's middle")


__all__ = ["anatomy_masks", "cardiothoracic_ratio", "check_cardiothoracic_ratio", "check_finding_side",
           "finding_side"]
