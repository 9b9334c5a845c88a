"""Measurements read off a film's pixels, the way a radiologist reads them.

* :func:`lung_pixels` — the aerated lungs: pixels darker than half-way between the film's lung
  and mediastinal grey levels, inside the chest.
* :func:`cardiothoracic_ratio` — Danzer's CTR measured on the image: the largest distance of
  the right heart border from the midline plus that of the left heart border, over the largest
  internal thoracic diameter (outer lung edges). No mask or geometry is used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion, binary_fill_holes, gaussian_filter, label


def lung_pixels(image: np.ndarray) -> np.ndarray:
    """Bool [H, W]: the lung fields, found by a threshold half-way between the lungs' grey
    (the darkest fifth of the chest) and the mediastinum's (the brightest fifth)."""
    img = gaussian_filter(np.asarray(image, np.float32), 0.8)
    h, w = img.shape
    chest = img[int(0.15 * h):int(0.75 * h), int(0.1 * w):int(0.9 * w)]
    dark, bright = np.percentile(chest, 15), np.percentile(chest, 90)
    body = img > 0.12  # air outside the body is darker than anything inside it
    inside = binary_erosion(binary_fill_holes(body), iterations=max(2, h // 16))  # off the skin
    lungs = (img < dark + 0.5 * (bright - dark)) & inside
    labels, n = label(lungs)
    if n == 0:
        return lungs
    sizes = np.bincount(labels.ravel())[1:]
    centre_row = np.bincount(labels.ravel(), weights=np.indices(lungs.shape)[0].ravel())[1:] / np.maximum(sizes, 1)
    sizes = np.where((centre_row > 0.2 * h) & (centre_row < 0.8 * h), sizes, 0)  # not the neck
    keep = np.argsort(sizes)[::-1][:2] + 1  # the two largest dark regions
    return np.isin(labels, keep)


@dataclass
class CTRMeasurement:
    """Danzer's cardiothoracic ratio and its parts, in pixels."""

    ctr: float
    right_border: float     # MRD: midline to the right heart border (image left)
    left_border: float      # MLD: midline to the left heart border (image right)
    thoracic: float         # internal thoracic diameter
    midline: float          # column of the midline


def cardiothoracic_ratio(image: np.ndarray) -> CTRMeasurement:
    """Measure the CTR on a frontal film (patient's left on the image's right).

    Reading outwards from the midline, each column's lung base is the heart's upper contour
    until the heart's lateral wall, where it drops to the dome (the cardiophrenic angle): the
    outermost drop of 3 or more pixels over two columns (steeper than any dome) that starts
    well above the costophrenic recess and lands on the dome (not down into the recess) is the
    heart border; without one, the heart border runs straight down and the lung's inner edge
    low in the chest gives it. The midline lies half-way between the outer lung edges; the
    thoracic diameter is their widest distance above the costophrenic angles.
    """
    lungs = lung_pixels(image)
    cols = np.nonzero(lungs.any(axis=0))[0]
    if cols.size == 0:
        raise ValueError("no lung fields found on the image")
    midline = 0.5 * (cols.min() + cols.max())
    borders, lowest = [], []
    for sign, outer in ((-1, cols.min()), (1, cols.max())):
        reach = abs(outer - midline)
        first = int(np.floor(midline)) + (1 if sign > 0 else 0)
        columns = [first + sign * k for k in range(int(0.97 * reach))]
        base = np.array([_base_row(lungs[:, c]) for c in columns], float)
        angle = base[int(0.85 * len(base)):].max()  # the costophrenic recess: the lowest base
        border = 0.0
        for k in range(len(base) - 2):
            landed = k + 4 < len(base) and base[k + 4] - base[k + 2] <= 2  # on the dome, not down the recess
            if (base[k] >= 0 and base[k + 2] - base[k] >= 3 and base[k + 1] > base[k] and landed
                    and base[k] < angle - 0.1 * lungs.shape[0]):
                border = abs(columns[k] - midline) + 0.5  # the base drops off the heart
        if border < 0.2 * reach:  # no drop: the heart border runs straight down to the dome
            border = _medial_edge(lungs, midline, sign)
        borders.append(border)
        span = range(min(outer, int(midline)), max(outer, int(midline)) + 1)
        lowest.append(max(_base_row(lungs[:, c]) for c in span))
    thoracic = 0.0
    for r in range(min(lowest) + 1):
        c = np.nonzero(lungs[r])[0]
        if (c < midline).any() and (c > midline).any():
            thoracic = max(thoracic, c.max() - c.min() + 1)
    mrd, mld = borders
    return CTRMeasurement(float((mrd + mld) / thoracic), float(mrd), float(mld), float(thoracic), float(midline))


def _medial_edge(lungs: np.ndarray, midline: float, sign: int) -> float:
    """Distance from the midline to the lung's inner edge on one side (``sign`` -1: image left),
    the median over the lower third of that lung, where the heart forms the edge."""
    half = lungs[:, int(np.ceil(midline)):] if sign > 0 else lungs[:, :int(np.floor(midline)) + 1][:, ::-1]
    rows = np.nonzero(half.any(axis=1))[0]
    lower = rows[rows >= rows.min() + 0.6 * (rows.max() - rows.min())]
    lower = lower[lower <= rows.min() + 0.92 * (rows.max() - rows.min())]
    edges = [np.argmax(half[r]) for r in lower]
    return float(np.median(edges)) + 0.5 if edges else 0.0


def _base_row(column: np.ndarray) -> int:
    """Lowest row of the longest run of lung in one column (where a dome or the heart ends
    it), -1 for a column without lung."""
    best, start, bottom = 0, None, -1
    for r, v in enumerate(list(column) + [False]):
        if v and start is None:
            start = r
        elif not v and start is not None:
            if r - start > best:
                best, bottom = r - start, r - 1
            start = None
    return bottom
