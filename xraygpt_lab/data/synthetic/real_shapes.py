"""Lung-field shapes from real annotations: the lung segmentations in the torchxrayvision wheel.

``semantic_masks_v7labs_lungs.zip`` (inside the wheel, Apache-2.0; V7 Labs' lung segmentations
of the COVID-19 image data collection, under that collection's terms) holds ~500 real frontal
lung masks. They are read at run time from the user's copy (:func:`obtain_lung_masks`: the
cache, or ``pip download`` of the wheel), never stored in the repository.

Shapes are compared as radiologists compare silhouettes: each lung field is cropped to the
box around both lungs and resized to ``SHAPE_SIZE`` pixels, so position and scale drop out.
:func:`fit_bank` renders a bank of parametric lung fields (the world's anatomy with its shape
parameters drawn wide) and keeps, for each real mask, the parametric shape with the highest
IoU; ``WorldConfig(lung_shapes="real")`` then draws each patient's lung shape from these fits,
so the world's lung fields follow the real ones. Without the wheel's tables the world keeps
its built-in shapes and says so.
"""
from __future__ import annotations

import io
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from xraygpt_lab.data.synthetic.anatomy import AnatomyParams, lung_masks, sample_anatomy
from xraygpt_lab.data.wheel import cache_root, fetch_wheel_member

MEMBER = "torchxrayvision/data/semantic_masks_v7labs_lungs.zip"
#: Side of the normalised shape masks (pixels).
SHAPE_SIZE: int = 48
#: Lung-field parameters taken from a fitted real shape.
SHAPE_FIELDS: tuple[str, ...] = ("thorax_half_width", "apex_y", "left_dome_drop", "dome_height",
                                 "apex_curvature", "wall_taper", "mediastinum_half_width", "inspiration")


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
    from scipy.ndimage import label

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
    """One patient's lung fields (both lungs), normalised like the real masks."""
    flat = AnatomyParams(**{**params.as_dict(), "rotation_deg": 0.0, "scale": 1.0, "shift_x": 0.0, "shift_y": 0.0})
    m = lung_masks(flat, 160)
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


def wide_shape(rng: np.random.Generator) -> AnatomyParams:
    """A patient whose lung-field parameters are drawn wider than the healthy ranges."""
    p = sample_anatomy(rng)
    u = rng.uniform
    p.thorax_half_width, p.apex_y, p.left_dome_drop = u(0.60, 0.90), u(-0.85, -0.55), u(-0.02, 0.10)
    p.dome_height, p.apex_curvature, p.wall_taper = u(0.08, 0.28), u(1.2, 4.5), u(0.05, 0.55)
    p.mediastinum_half_width, p.heart_ctr = u(0.08, 0.18), u(0.35, 0.55)
    from xraygpt_lab.data.synthetic.anatomy import set_inspiration

    set_inspiration(p, u(8.0, 11.5))
    return p


def fit_bank(real: np.ndarray, n: int = 600, seed: int = 0) -> list[dict]:
    """For each real mask, the shape parameters of the best-matching of ``n`` wide parametric
    shapes (by IoU)."""
    rng = np.random.default_rng(seed)
    bank = [wide_shape(rng) for _ in range(n)]
    shapes = np.array([synthetic_mask(p) for p in bank])
    fr = real.reshape(len(real), -1).astype(np.float32)
    fs = shapes.reshape(len(shapes), -1).astype(np.float32)
    inter = fr @ fs.T
    iou = inter / np.maximum(fr.sum(1)[:, None] + fs.sum(1)[None, :] - inter, 1.0)
    best = iou.argmax(axis=1)
    return [{k: getattr(bank[i], k) for k in SHAPE_FIELDS} for i in best]


@lru_cache(maxsize=1)
def fitted_shapes() -> tuple[dict, ...] | None:
    """The fitted real lung shapes, or None when the table is not in the cache. The fit is
    computed once (about half a minute) and kept beside the table as JSON."""
    import json

    from xraygpt_lab.atomic import atomic_write

    path = obtain_lung_masks(allow_download=False)
    if path is None:
        warnings.warn(f"lung shapes: built-in, because {masks_path()} is missing "
                      "(real_shapes.obtain_lung_masks(allow_download=True) fetches it)", stacklevel=2)
        return None
    fit_path = path.with_name("lung_shapes_fit.json")
    if fit_path.is_file():
        return tuple(json.loads(fit_path.read_text()))
    shapes = fit_bank(read_real_masks(path))
    atomic_write(fit_path, lambda tmp: Path(tmp).write_text(json.dumps(shapes)))
    return tuple(shapes)


def apply_real_shape(params: AnatomyParams, rng: np.random.Generator) -> str:
    """Give ``params`` the lung-field shape of a randomly chosen fitted real lung (keeping its
    heart size, so the labels stay the same); returns "real" or "built-in"."""
    shapes = fitted_shapes()
    if not shapes:
        return "built-in"
    from xraygpt_lab.data.synthetic.anatomy import set_inspiration

    chosen = shapes[int(rng.integers(len(shapes)))]
    lift = float(chosen["apex_y"]) - params.apex_y  # the clavicles and first ribs move with the apex
    for k, v in chosen.items():
        setattr(params, k, float(v))
    params.clavicle_y += lift
    params.rib_first_y += lift
    set_inspiration(params, params.inspiration)
    return "real"
