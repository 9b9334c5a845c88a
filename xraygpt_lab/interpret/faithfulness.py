"""Is the explanation right? Scoring maps against the synthetic world's ground-truth lesion masks.

* **Pointing game** (Zhang et al. 2018, "Top-down Neural Attention by Excitation Backprop",
  IJCV, Sec. 5.1): a hit when the map's maximum lies inside the lesion mask or within a small
  tolerance of it. They allowed 15 px on images several hundred pixels wide (a few per cent of the
  side); we allow ``tolerance`` = 4 px on the tiny profile's 128 px images (3 %), scaled with
  the image side (:func:`default_tolerance`). A constant map has no maximum: it counts as a miss.
* **Energy in the mask** (energy-based pointing game, Wang et al. 2020, Score-CAM, Sec. 4.2):
  the share of the map's positive mass that falls inside the mask.
* **Deletion and insertion** (Petsiuk et al. 2018, RISE, Sec. 4.1): remove the most important
  pixels first (replace them by the baseline image) and watch the target fall — a small area
  under the curve is good; or insert them into the baseline image and watch it rise — a large
  area is good. Scores are normalised per image to ``(s − s_baseline) / (s_image − s_baseline)``
  (1 = the whole image, 0 = the baseline image) and clipped to ``[0, 1]``, so images and targets
  of different scales can be averaged. The curve only means something when the image scores
  clearly higher than its baseline — when replacing pixels by the baseline removes the evidence;
  with a gap below :data:`MIN_GAP` nats (a blurred copy keeps a large smooth effusion) it is NaN.

Each metric is reported next to a **random map** (uniform noise): its expected pointing-game hit
rate is exactly the area fraction of the dilated mask (:func:`random_pointing_rate`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from .maps import make_baseline, pixel_space_of

#: Zhang et al. 2018 allow 15 px; we keep about the same fraction of the image side (4 px at 128).
TOLERANCE_FRACTION = 4 / 128


def default_tolerance(size: int) -> int:
    """Pointing-game tolerance in pixels for an image of side ``size`` (4 px at 128, 7 px at 224)."""
    return max(1, int(round(TOLERANCE_FRACTION * size)))


def _check_pair(saliency: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    saliency = np.asarray(saliency, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if saliency.ndim != 2 or saliency.shape != mask.shape:
        raise ValueError(f"saliency {saliency.shape} and mask {mask.shape} must be 2-D and the same shape")
    if not mask.any():
        raise ValueError("the lesion mask is empty; the pointing game needs a positive case")
    if not np.isfinite(saliency).all():
        raise ValueError("saliency contains NaN or infinite values")
    return saliency, mask


def distance_to_mask(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) of every pixel to the nearest mask pixel (0 inside): ``[H, W]``."""
    return distance_transform_edt(~np.asarray(mask, dtype=bool))


def peak(saliency: np.ndarray) -> tuple[int, int]:
    """``(row, col)`` of the maximum (the first one in row-major order on ties)."""
    r, c = np.unravel_index(int(np.argmax(saliency)), np.shape(saliency))
    return int(r), int(c)


def pointing_hit(saliency: np.ndarray, mask: np.ndarray, tolerance: float = 4) -> bool:
    """True when the map's maximum lies within ``tolerance`` px of the mask (inside counts)."""
    saliency, mask = _check_pair(saliency, mask)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 px, got {tolerance}")
    if saliency.max() == saliency.min():
        return False
    return bool(distance_to_mask(mask)[peak(saliency)] <= tolerance)


def random_pointing_rate(mask: np.ndarray, tolerance: float = 4) -> float:
    """Expected hit rate of a map whose maximum falls on a uniformly random pixel."""
    mask = np.asarray(mask, dtype=bool)
    return float((distance_to_mask(mask) <= tolerance).mean())


def energy_in_mask(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the positive part of the map inside the mask (NaN for a map with no positive mass)."""
    saliency, mask = _check_pair(saliency, mask)
    positive = np.clip(saliency, 0.0, None)
    total = positive.sum()
    return float(positive[mask].sum() / total) if total > 0 else float("nan")


def random_map(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Uniform noise in [0, 1): the random-map baseline."""
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Deletion / insertion
# ----------------------------------------------------------------------------------------------
#: Smallest ``s_image − s_baseline`` (nats) for which a deletion / insertion curve is normalised.
MIN_GAP = 0.5


@dataclass
class Curve:
    """A deletion or insertion curve: ``fractions`` of pixels changed and the target's ``scores``."""

    kind: str  # "deletion" or "insertion"
    fractions: np.ndarray  # [steps + 1] from 0 to 1
    scores: np.ndarray  # [steps + 1] raw target values
    normalised: np.ndarray  # [steps + 1] (s − s_baseline) / (s_image − s_baseline) in [0, 1], or NaN
    gap: float = float("nan")  # s_image − s_baseline

    @property
    def auc(self) -> float:
        """Trapezoidal area under the normalised curve (NaN when it could not be normalised)."""
        if not np.isfinite(self.normalised).all():
            return float("nan")
        y, x = self.normalised, self.fractions
        return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def _ranking(saliency: np.ndarray, seed: int) -> np.ndarray:
    """Pixel indices from most to least important; ties broken at random (seeded)."""
    jitter = np.random.default_rng(seed).random(saliency.size) * 1e-9 * (np.ptp(saliency) or 1.0)
    return np.argsort(-(saliency.ravel() + jitter), kind="stable")


@torch.no_grad()
def perturbation_curve(target: Callable[[torch.Tensor], torch.Tensor], pixel_values: torch.Tensor,
                       saliency: np.ndarray, kind: str = "deletion", steps: int = 16,
                       baseline: str | float | torch.Tensor = "blur", batch_size: int = 17,
                       seed: int = 0) -> Curve:
    """Deletion or insertion curve of ``target`` on one image ``[1, C, S, S]`` (RISE, Sec. 4.1).

    ``steps + 1`` images: 0, 1/steps, …, all pixels replaced by the ``baseline`` (deletion) or
    taken from the image into the baseline (insertion), most important first.
    """
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    if pixel_values.dim() != 4 or pixel_values.shape[0] != 1:
        raise ValueError(f"pixel_values must be [1, C, S, S], got {list(pixel_values.shape)}")
    channels, size = pixel_values.shape[1], pixel_values.shape[-1]
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.shape != (size, size):
        raise ValueError(f"saliency {saliency.shape} must match the image {size}x{size}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    base, _ = make_baseline(pixel_values, baseline, pixel_space_of(target))
    order = torch.from_numpy(_ranking(saliency, seed)).to(pixel_values.device)  # [S·S] pixel indices
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * size * size).astype(int)
    start, end = (pixel_values, base) if kind == "deletion" else (base, pixel_values)
    flat_start, flat_end = start.reshape(channels, -1), end.reshape(channels, -1)  # [C, S·S]
    images = []
    for k in counts:
        img = flat_start.clone()
        idx = order[:k]
        img[:, idx] = flat_end[:, idx]  # a pixel changes in every channel
        images.append(img.reshape(1, channels, size, size))
    batch = torch.cat(images)  # [steps + 1, C, S, S]
    scores = torch.cat([target(batch[i:i + batch_size]).float().cpu() for i in range(0, len(batch), batch_size)])
    scores_np = scores.numpy().astype(np.float64)
    s_image = float(target(pixel_values).float()[0])
    s_base = float(target(base).float()[0])
    gap = s_image - s_base
    if gap >= MIN_GAP:
        normalised = np.clip((scores_np - s_base) / gap, 0.0, 1.0)
    else:  # the baseline keeps the evidence: nothing to delete or insert
        normalised = np.full_like(scores_np, np.nan)
    return Curve(kind=kind, fractions=fractions, scores=scores_np, normalised=normalised, gap=gap)


# ----------------------------------------------------------------------------------------------
# One case, many methods → rows; rows → tables
# ----------------------------------------------------------------------------------------------
def score_map(saliency: np.ndarray, mask: np.ndarray, tolerance: float) -> dict[str, float]:
    """Pointing hit (0/1) and energy-in-mask for one map."""
    return {"pointing": float(pointing_hit(saliency, mask, tolerance)), "energy": energy_in_mask(saliency, mask)}


def evaluate_maps(maps: Mapping[str, np.ndarray], mask: np.ndarray, *, tolerance: float,
                  target: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  pixel_values: torch.Tensor | None = None, curves: bool = False, steps: int = 16,
                  random_seed: int = 0, **labels) -> list[dict]:
    """Score every map of one image (plus a random map, method ``"random"``); one row per method.

    ``labels`` (e.g. ``observation=…, case=…``) are copied into every row. With ``curves=True``
    (needs ``target`` and ``pixel_values``) deletion and insertion AUCs are added.
    """
    maps = dict(maps)
    shape = np.shape(next(iter(maps.values()))) if maps else np.shape(mask)
    maps.setdefault("random", random_map(tuple(shape), seed=random_seed))
    rows = []
    for method, saliency in maps.items():
        row = {"method": method, **labels, **score_map(saliency, mask, tolerance)}
        if method == "random":
            row["pointing_expected"] = random_pointing_rate(mask, tolerance)
        if curves:
            if target is None or pixel_values is None:
                raise ValueError("curves=True needs target and pixel_values")
            row["deletion_auc"] = perturbation_curve(target, pixel_values, saliency, "deletion", steps,
                                                     seed=random_seed).auc
            row["insertion_auc"] = perturbation_curve(target, pixel_values, saliency, "insertion", steps,
                                                      seed=random_seed).auc
        rows.append(row)
    return rows


METRICS: tuple[str, ...] = ("pointing", "energy", "deletion_auc", "insertion_auc")


def _metric_values(frame, metric: str):
    """``frame[metric]`` as floats, with the random map's pointing replaced by its exact expectation."""
    values = frame[metric].astype(float)
    if metric == "pointing" and "pointing_expected" in frame.columns:
        values = values.where(frame["method"] != "random", frame["pointing_expected"])
    return values


def faithfulness_table(rows: Sequence[dict], metric: str = "pointing"):
    """Method × observation table (pandas ``DataFrame``) of the mean ``metric``; column ``all``
    pools every case and ``n`` counts them. The random row's pointing uses the exact expectation."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("no rows to tabulate")
    if metric not in frame.columns:
        raise ValueError(f"metric {metric!r} not in rows; have {sorted(c for c in frame.columns if c in METRICS)}")
    if "observation" not in frame.columns:
        frame["observation"] = "all"
    frame = frame.assign(value=_metric_values(frame, metric))
    table = frame.pivot_table(index="method", columns="observation", values="value", aggfunc="mean")
    table["all"] = frame.groupby("method")["value"].mean()
    table["n"] = frame.groupby("method")["value"].count()
    return table.sort_values("all", ascending=metric == "deletion_auc")


def summary_table(rows: Sequence[dict]):
    """Method × metric table (means over every case) for the metrics present in ``rows``."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    present = [m for m in METRICS if m in frame.columns]
    out = frame.groupby("method")[present].mean()
    if "pointing_expected" in frame.columns:
        expected = frame[frame["method"] == "random"]["pointing_expected"].mean()
        out.loc["random", "pointing"] = expected
    return out.sort_values("pointing", ascending=False)


#: A finding the model "uses": its phrase gains more than this many nats of log-probability from
#: it (the counterfactual ``score_change`` of ``localization.evaluate_positives``). 0.5 nats is a
#: factor e^0.5 ≈ 1.65 in probability.
RELIANCE_NATS = 0.5


def reliance_table(rows: Sequence[dict], metric: str = "pointing", threshold: float = RELIANCE_NATS):
    """``metric`` per method, split by whether the model relies on the finding.

    A faithful map can only point at a lesion the model's words depend on. Rows need
    ``score_change`` (log P(phrase | image) − log P(phrase | same phantom without the finding)).
    Columns: ``uses`` (mean over cases with ``score_change > threshold``), ``ignores`` (the rest),
    ``n_uses``, ``n_ignores``; one row per method (random's pointing is its exact expectation).
    """
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("no rows to tabulate")
    for column in (metric, "score_change"):
        if column not in frame.columns:
            raise ValueError(f"rows have no {column!r} column (evaluate_positives(..., counterfactual=True) "
                             "gives score_change)")
    uses = frame["score_change"].astype(float) > threshold
    frame = frame.assign(value=_metric_values(frame, metric), group=uses.map({True: "uses", False: "ignores"}))
    table = frame.pivot_table(index="method", columns="group", values="value", aggfunc="mean")
    counts = frame.pivot_table(index="method", columns="group", values="value", aggfunc="count")
    for group in ("uses", "ignores"):
        table[group] = table[group] if group in table.columns else float("nan")
        table[f"n_{group}"] = counts[group] if group in counts.columns else 0
    return table[["uses", "ignores", "n_uses", "n_ignores"]].sort_values("uses", ascending=metric == "deletion_auc")
