"""Solutions for notebook 00: cardiothoracic ratio and the side of a finding."""
from __future__ import annotations

import numpy as np


def _width(mask: np.ndarray) -> int:
    """Horizontal extent in pixels: first to last column holding a True pixel, inclusive."""
    columns = np.flatnonzero(np.asarray(mask, dtype=bool).any(axis=0))  # columns = axis 1
    return int(columns[-1] - columns[0] + 1)


def cardiothoracic_ratio(heart: np.ndarray, right_lung: np.ndarray, left_lung: np.ndarray) -> float:
    """Transverse cardiac diameter / internal thoracic diameter (both lungs together)."""
    return _width(heart) / _width(np.logical_or(right_lung, left_lung))


def finding_side(mask: np.ndarray) -> str:
    """The patient's side: the image's right half is the patient's LEFT (radiological convention)."""
    mean_column = np.nonzero(mask)[1].mean()
    middle = (mask.shape[1] - 1) / 2
    return "left" if mean_column >= middle else "right"
