"""Lung-field shapes from real annotations: the lung segmentations in the torchxrayvision wheel.

``semantic_masks_v7labs_lungs.zip`` (inside the wheel, Apache-2.0; V7 Labs' lung segmentations
of the COVID-19 image data collection, under that collection's terms) holds ~500 real frontal
lung masks. They are read at run time from the user's copy (:func:`obtain_lung_masks`: the
cache, or ``pip download`` of the wheel), never stored in the repository.

Shapes are compared as radiologists compare silhouettes: each lung field is cropped to the
box around both lungs and resized to ``SHAPE_SIZE`` pixels, so position and scale drop out.
These annotations draw each lung's whole projection, the lung behind the heart included, so
the synthetic lung fields are compared the same way (``lung_masks(..., behind_heart=True)``).
:func:`fit_shapes` fits the world's lung-field parameters (:data:`SHAPE_RANGES`: dome height,
position and fall, left dome drop, apex curvature, chest-wall taper, the lungs' medial borders)
to each real mask: the best of a bank of random shapes, then a Nelder-Mead search on a soft
IoU, in a fixed frame (:data:`FRAME`). ``WorldConfig(lung_shapes="real")`` then gives each
patient one of these shapes, stretched onto its own chest width, apex and dome peak
(:func:`shape_onto`), so the lung fields follow real ones while size, inspiration, heart and
labels stay the patient's. The fit (about one and a half minutes on one core) is cached beside
the table. Without the wheel's tables the world keeps its built-in shapes and says so.
"""
from __future__ import annotations

import io
import json
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import label
from scipy.optimize import minimize
from tqdm.auto import tqdm

from xraygpt_lab.atomic import atomic_write
from xraygpt_lab.data.synthetic.anatomy import (
    AnatomyParams,
    lateral_wall,
    lung_envelope_sdf,
    lung_masks,
    set_inspiration,
)
from xraygpt_lab.data.wheel import cache_root, fetch_wheel_member

MEMBER = "torchxrayvision/data/semantic_masks_v7labs_lungs.zip"
#: Side of the normalised shape masks (pixels).
SHAPE_SIZE: int = 48


def masks_path() -> Path:
    """Where the lung-mask table is cached: ``<cache>/torchxrayvision/<name>``."""
    return cache_root() / "torchxrayvision" / Path(MEMBER).name


def obtain_lung_masks(allow_download: bool = False) -> Path | None:
    """The cached lung-mask table, downloaded from the wheel when allowed; None without it."""
    path = masks_path()
    if path.is_file():
        return path
    if allow_download:
        return fetch_wheel_member(MEMBER, path)
    return None


def normalise(mask: np.ndarray, size: int = SHAPE_SIZE) -> np.ndarray | None:
    """The mask cropped to the box around its lungs and resized to ``size`` (bool), or None
    for an empty mask."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    crop = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    img = Image.fromarray(crop.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)
    return np.asarray(img) > 127


def read_real_masks(path: Path, size: int = SHAPE_SIZE) -> np.ndarray:
    """The real lung masks of the table, normalised: bool [n, size, size]. Masks that are
    empty or do not hold two lung fields of similar size are left out."""
    out = []
    with zipfile.ZipFile(path) as archive:
        for name in sorted(n for n in archive.namelist() if not n.endswith("/")):
            try:
                img = Image.open(io.BytesIO(archive.read(name))).convert("L")
            except OSError:
                continue
            img.thumbnail((256, 256))
            mask = np.asarray(img) > 127
            labels, n = label(mask)
            sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
            if n < 2 or sizes[1] < 0.3 * sizes[0]:
                continue
            norm = normalise(np.isin(labels, np.argsort(np.bincount(labels.ravel())[1:])[::-1][:2] + 1), size)
            if norm is not None:
                out.append(norm)
    return np.array(out)


def synthetic_mask(params: AnatomyParams, size: int = SHAPE_SIZE) -> np.ndarray:
    """One patient's lung fields (both lungs, the lung behind the heart included, as the real
    masks draw it), normalised like the real masks."""
    flat = AnatomyParams(**{**params.as_dict(), "rotation_deg": 0.0, "scale": 1.0, "shift_x": 0.0, "shift_y": 0.0})
    m = lung_masks(flat, 160, behind_heart=True)
    return normalise(m["right lung"] | m["left lung"], size)


def nearest_iou(a: np.ndarray, b: np.ndarray, same: bool = False) -> np.ndarray:
    """For every mask of ``a`` [n, H, W], the highest IoU with a mask of ``b`` [m, H, W]
    (``same``: ``a`` is ``b``, and a mask is not compared with itself)."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    iou = inter / np.maximum(union, 1.0)
    if same:
        np.fill_diagonal(iou, -1.0)
    return iou.max(axis=1)


#: The frame shapes are fitted in: inner half-width of the chest, apex and right costophrenic
#: angle (phantom units). The crop to the lungs' box removes size and aspect, so a fixed frame
#: loses nothing; :func:`apply_real_shape` stretches a fitted shape onto each patient.
FRAME: dict[str, float] = {"thorax_half_width": 0.76, "apex_y": -0.70, "costophrenic_y": 0.42}
#: Fitted lung-field parameters and the range each may take (in the frame above): wide enough for
#: real lungs, narrow enough that the world still renders a healthy chest.
SHAPE_RANGES: dict[str, tuple[float, float]] = {
    "left_dome_drop": (-0.03, 0.12), "dome_height": (0.06, 0.30), "apex_curvature": (1.0, 5.0),
    "wall_taper": (0.0, 0.6), "wall_power": (1.5, 3.5), "dome_peak_at": (0.25, 0.65),
    "dome_power": (1.5, 4.0), "medial_half_width": (0.0, 0.16), "medial_widening": (-0.05, 0.15),
    "medial_shift": (-0.05, 0.05),
}
SHAPE_FIELDS: tuple[str, ...] = tuple(SHAPE_RANGES)
_LO = np.array([lo for lo, _ in SHAPE_RANGES.values()])
_HI = np.array([hi for _, hi in SHAPE_RANGES.values()])
#: Version of the fit (part of the cache file's name: a new version refits).
FIT_VERSION: int = 2


def framed(values: np.ndarray) -> AnatomyParams:
    """An untilted patient in :data:`FRAME` with the lung-field parameters ``values`` (in
    :data:`SHAPE_FIELDS` order)."""
    return AnatomyParams(**FRAME, **dict(zip(SHAPE_FIELDS, map(float, values))))


def field_sdf(p: AnatomyParams, size: int = SHAPE_SIZE) -> np.ndarray | None:
    """Signed distance (pixels, negative inside) to both lung fields of ``p``, sampled at the
    pixel centres of the lungs' box on a [size, size] grid: :func:`synthetic_mask` without the
    render and the resize. None when the apices are malformed (chest wall inside the apex)."""
    cr, cl = p.costophrenic("right"), p.costophrenic("left")
    if float(lateral_wall(p, p.apex_y)) < 0.5 * p.thorax_half_width:
        return None
    x0, x1 = -float(lateral_wall(p, cr)), float(lateral_wall(p, cl))
    y0, y1 = p.apex_y, max(cr, cl)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(x0 + t * (x1 - x0), y0 + t * (y1 - y0))  # [size, size] each
    phi = np.minimum(lung_envelope_sdf(p, x, y, "right"), lung_envelope_sdf(p, x, y, "left"))
    return phi / (min(x1 - x0, y1 - y0) / size)


def _soft_iou(z: np.ndarray, target: np.ndarray) -> float:
    """IoU of a soft (half-pixel sigmoid) lung field for unit-range parameters ``z`` with the
    mask ``target`` (float [S, S]); 0 for malformed shapes."""
    phi = field_sdf(framed(_LO + np.clip(z, 0.0, 1.0) * (_HI - _LO)))
    if phi is None:
        return 0.0
    s = 0.5 - 0.5 * np.tanh(phi)  # = sigmoid(-2 phi)
    inter = float((s * target).sum())
    return inter / (float(s.sum()) + float(target.sum()) - inter)


def _iou_table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    return inter / np.maximum(fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter, 1.0)


def fit_shapes(real: np.ndarray, bank: int = 2000, evals: int = 300, seed: int = 0,
               progress: bool = True) -> list[dict]:
    """For each real mask [n, S, S], the lung-field parameters (in :data:`FRAME`) whose shape
    has the highest IoU with it: the best of ``bank`` random shapes, then a Nelder-Mead search
    (Nelder & Mead 1965; ``evals`` evaluations) on a soft IoU."""
    if real.ndim != 3 or real.shape[1] != real.shape[2]:
        raise ValueError(f"real masks must be [n, S, S], got shape {real.shape}")
    size = real.shape[1]
    rng = np.random.default_rng(seed)
    z_bank, shapes = [], []
    while len(z_bank) < bank:
        z = rng.random(len(SHAPE_FIELDS))
        phi = field_sdf(framed(_LO + z * (_HI - _LO)), size)
        if phi is not None:
            z_bank.append(z)
            shapes.append(phi < 0)
    best = _iou_table(real, np.array(shapes)).argmax(axis=1)
    out = []
    for mask, b in zip(tqdm(real, desc="fitting real lung shapes", disable=not progress), best):
        target = mask.astype(np.float32)
        res = minimize(lambda z: -_soft_iou(z, target), z_bank[b], method="Nelder-Mead",
                       options={"maxfev": evals, "xatol": 1e-3, "fatol": 1e-4, "initial_simplex":
                                np.vstack([z_bank[b], z_bank[b] + 0.08 * np.eye(len(SHAPE_FIELDS))])})
        z = np.clip(res.x, 0.0, 1.0) if -res.fun > _soft_iou(z_bank[b], target) else z_bank[b]
        out.append({k: float(v) for k, v in zip(SHAPE_FIELDS, _LO + z * (_HI - _LO))})
    return out


@lru_cache(maxsize=1)
def fitted_shapes() -> tuple[dict, ...] | None:
    """The fitted real lung shapes, or None when the table is not in the cache. The fit is
    computed once (about a minute and a half on one core) and kept beside the table as JSON."""
    path = obtain_lung_masks(allow_download=False)
    if path is None:
        warnings.warn(f"lung shapes: built-in, because {masks_path()} is missing "
                      "(real_shapes.obtain_lung_masks(allow_download=True) fetches it)", stacklevel=2)
        return None
    fit_path = path.with_name(f"lung_shapes_fit_v{FIT_VERSION}.json")
    if fit_path.is_file():
        return tuple(json.loads(fit_path.read_text()))
    shapes = fit_shapes(read_real_masks(path))
    atomic_write(fit_path, lambda tmp: Path(tmp).write_text(json.dumps(shapes)))
    return tuple(shapes)


def shape_onto(params: AnatomyParams, shape: dict) -> None:
    """Give ``params`` a fitted lung-field ``shape`` (in :data:`FRAME`), stretched so the
    patient keeps its own chest width, apex and dome peak (its inspiration)."""
    sx = params.thorax_half_width / FRAME["thorax_half_width"]
    for k in ("wall_power", "dome_peak_at", "dome_power"):  # unitless
        setattr(params, k, float(shape[k]))
    set_inspiration(params, params.inspiration)
    peak = params.dome_peak("right")  # the patient's own, at the fitted peak position
    sy = (peak - params.apex_y) / (FRAME["costophrenic_y"] - float(shape["dome_height"]) - FRAME["apex_y"])
    params.dome_height = float(shape["dome_height"]) * sy
    params.left_dome_drop = float(shape["left_dome_drop"]) * sy
    params.apex_curvature = float(shape["apex_curvature"]) * sy / sx**2  # cap: y = k u^2
    params.wall_taper = float(shape["wall_taper"]) * sx / sy ** params.wall_power  # u = taper y^p
    params.medial_half_width = float(shape["medial_half_width"]) * sx
    params.medial_widening = float(shape["medial_widening"]) * sx / sy
    params.medial_shift = float(shape["medial_shift"]) * sx
    set_inspiration(params, params.inspiration)


def apply_real_shape(params: AnatomyParams, rng: np.random.Generator) -> str:
    """Give ``params`` the lung-field shape of a randomly chosen fitted real lung (keeping its
    size, inspiration and heart, so the labels stay the same); returns "real" or "built-in"."""
    shapes = fitted_shapes()
    if not shapes:
        return "built-in"
    shape_onto(params, shapes[int(rng.integers(len(shapes)))])
    return "real"
