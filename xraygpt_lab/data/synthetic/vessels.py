"""Lung markings: the pulmonary arteries and veins as a branching tree, and the bronchi beside them.

Each lung grows six trunks from its hilum (upper-lobe, interlobar and basal arteries; middle-lobe
or lingular artery; superior and inferior veins from the left atrium). Every branch splits in
two (a larger daughter that carries on, a smaller one that turns away) with radii obeying
Murray's law ``r^3 = r1^3 + r2^3``, lengths about six radii, and stops at 0.6 mm or near the
pleura, so the markings taper from hilum to periphery and the outer 1-2 cm stay clear. The
whole tree is grown one generation at a time with array operations.

The film sees each vessel as soft tissue displacing air. A cylinder of radius ``r`` and length
``ds`` holds ``pi r^2 ds`` of tissue, which is deposited into the pixels along its axis
(``geometry.splat``); vessels wider than a pixel are spread across their width with the chord
profile ``sqrt(1 - (o/r)^2)``. Lower-zone vessels are wider than upper-zone ones on an erect
film (gravity), as in health.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xraygpt_lab.data.synthetic.anatomy import (
    AnatomyParams,
    envelope_sdf_u,
    hilum_point,
    phantom_to_pixel,
    side_sign,
)
from xraygpt_lab.data.synthetic.geometry import CM_PER_UNIT, clamp, splat

#: Smallest vessel radius drawn (phantom units; 0.0035 = 0.7 mm: finer ones do not show at 3 mm pixels).
MIN_RADIUS: float = 0.0035
#: Generations grown per trunk.
GENERATIONS: int = 8


@dataclass
class Tree:
    """Straight segments of a vessel tree (phantom units): starts, ends, radii, generation."""

    start: np.ndarray   # [n, 2]
    end: np.ndarray     # [n, 2]
    radius: np.ndarray  # [n]
    level: np.ndarray   # [n] generation, 0 = trunk


def _trunks(params: AnatomyParams, side: str) -> list[tuple[float, float, float, float]]:
    """(x, y, angle_deg, radius) of the trunks of one lung; angle 0 = lateral, 90 = down."""
    hx, hy = hilum_point(params, side)
    s = side_sign(side)
    la_x, la_y = s * 0.05, hy + 0.11  # pulmonary veins drain to the left atrium, below the hila
    return [
        (hx, hy - 0.02, -72.0, 0.020),           # upper-lobe artery
        (hx - s * 0.005, hy + 0.02, 78.0, 0.028),  # interlobar / descending artery
        (hx + s * 0.01, hy + 0.02, 12.0, 0.016),   # middle lobe / lingula
        (hx, hy + 0.09, 52.0, 0.020),            # basal arteries
        (la_x + s * 0.04, la_y - 0.05, -28.0, 0.017),  # superior pulmonary vein
        (la_x + s * 0.04, la_y + 0.02, 22.0, 0.017),   # inferior pulmonary vein
    ]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.hypot(v[:, 0], v[:, 1])[:, None] + 1e-9)


def lung_trees(params: AnatomyParams) -> dict[str, Tree]:
    """Grow both lungs' vessel trees from ``params.marking_seed`` (the same for every finding),
    one generation at a time for all branches of both lungs together."""
    rng = np.random.default_rng([params.marking_seed, 11])
    rows = []
    for side in ("right", "left"):
        rows += [(*t, side_sign(side)) for t in _trunks(params, side)]
    trunks = np.array(rows, dtype=np.float64)
    pos, sign = trunks[:, :2].copy(), trunks[:, 4].copy()
    ang = np.deg2rad(trunks[:, 2])
    direction = np.stack([sign * np.cos(ang), np.sin(ang)], axis=1)
    radius = trunks[:, 3] * params.vessel_density ** 0.5
    hila = {s: np.array(hilum_point(params, side)) for s, side in ((-1.0, "right"), (1.0, "left"))}
    out: list[tuple] = []
    for level in range(GENERATIONS):
        n = len(radius)
        if n == 0:
            break
        length = radius * rng.uniform(5.0, 8.0, n) + 0.012
        end = pos + direction * length[:, None]
        half_end = pos + direction * (0.5 * length)[:, None]
        both = np.concatenate([end, half_end])
        s2 = np.concatenate([sign, sign])
        phi = envelope_sdf_u(params, s2 * both[:, 0], both[:, 1], s2 > 0)
        inside, half_ok = phi[:n] < -0.035, phi[n:] < -0.035
        end = np.where(inside[:, None], end, half_end)  # shorten what would leave the lung
        keep = inside | half_ok
        pos, end, direction, radius, sign = pos[keep], end[keep], direction[keep], radius[keep], sign[keep]
        out.append((pos, end, radius, np.full(len(radius), level), sign))
        grow = radius > MIN_RADIUS * 1.4
        pos, direction, radius, sign = end[grow], direction[grow], radius[grow], sign[grow]
        n = len(radius)
        if n == 0:
            break
        asym = rng.uniform(0.55, 1.0, n)               # minor / major daughter radius
        major = radius / (1.0 + asym**3) ** (1.0 / 3.0)  # Murray's law
        minor = asym * major
        turn_major = np.deg2rad(rng.uniform(5.0, 22.0, n)) * rng.choice((-1.0, 1.0), n)
        turn_minor = -np.sign(turn_major) * np.deg2rad(rng.uniform(28.0, 55.0, n))
        hilum = np.where((sign > 0)[:, None], hila[1.0], hila[-1.0])
        outward = _unit(pos - hilum)
        dirs = []
        for turn in (turn_major, turn_minor):
            c, sn = np.cos(turn), np.sin(turn)
            d = np.stack([c * direction[:, 0] - sn * direction[:, 1], sn * direction[:, 0] + c * direction[:, 1]], 1)
            dirs.append(_unit(d + 0.35 * outward))
        pos = np.concatenate([pos, pos])
        direction = np.concatenate(dirs)
        radius = np.concatenate([major, minor])
        sign = np.concatenate([sign, sign])
        ok = radius >= MIN_RADIUS
        pos, direction, radius, sign = pos[ok], direction[ok], radius[ok], sign[ok]
    start, stop, radii, levels, signs = (np.concatenate(parts) for parts in zip(*out))
    return {side: Tree(start[signs == s], stop[signs == s], radii[signs == s], levels[signs == s])
            for side, s in (("right", -1.0), ("left", 1.0))}


def _samples(tree: Tree, pixel: float, scale_fn=None, radius_scale: float = 1.0,
             offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Points along every segment (about two per pixel) and the tissue volume (in units of
    pixel-area x cm) each one deposits, spread across the vessel where it is wider than a pixel."""
    vec = tree.end - tree.start
    length = np.hypot(vec[:, 0], vec[:, 1])
    n = np.maximum(1, np.ceil(length / (0.75 * pixel)).astype(int))
    seg = np.repeat(np.arange(len(length)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    t = (np.arange(len(seg)) - first + 0.5) / n[seg]
    unit = vec / (length[:, None] + 1e-12)
    normal = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
    pts = tree.start[seg] + vec[seg] * t[:, None] + offset * normal[seg] * tree.radius[seg, None]
    r = tree.radius[seg] * radius_scale
    ds = length[seg] / n[seg]
    weight = np.pi * r * r * ds / (pixel * pixel) * CM_PER_UNIT
    if scale_fn is not None:
        weight = weight * scale_fn(pts[:, 0], pts[:, 1])
    # spread wide vessels across their width (odd number of sub-samples, chord profile)
    width = clamp(np.ceil(2.0 * r / (0.6 * pixel)).astype(int) // 2 * 2 + 1, 1, 9)
    out_p, out_w = [], []
    for m in np.unique(width):
        sel = width == m
        if m == 1:
            out_p.append(pts[sel])
            out_w.append(weight[sel])
            continue
        offs = np.linspace(-1.0, 1.0, m)
        prof = np.sqrt(clamp(1.0 - (0.92 * offs) ** 2, 0.0, None))
        prof = prof / prof.sum()
        nrm = normal[seg[sel]]
        for o, w in zip(offs, prof):
            out_p.append(pts[sel] + nrm * (o * r[sel])[:, None])
            out_w.append(weight[sel] * w)
    return np.concatenate(out_p), np.concatenate(out_w)


def vessel_map(params: AnatomyParams, trees: dict[str, Tree], size: int, pixel: float,
               scale_fn=None) -> np.ndarray:
    """Tissue path length (cm) the vessels add at each pixel, [size, size] float32.

    ``scale_fn(x, y)`` multiplies each sample's volume (gravity, or upper-lobe diversion).
    """
    pts, w = _samples(_merge(trees.values()), pixel, scale_fn)
    c, r = phantom_to_pixel(params, size, pts[:, 0], pts[:, 1])
    return splat(c, r, w, size)


def _merge(trees) -> Tree:
    """One tree holding the segments of several."""
    trees = list(trees)
    return Tree(*(np.concatenate([getattr(t, k) for t in trees]) for k in ("start", "end", "radius", "level")))


def gravity(params: AnatomyParams):
    """Erect-film calibre gradient: lower-zone vessels carry more blood than upper-zone ones."""
    top, bottom = params.apex_y, params.costophrenic_y

    def scale(x, y):
        t = clamp((y - top) / (bottom - top), 0.0, 1.0)
        return 0.75 + 0.5 * t

    return scale


def bronchi_map(params: AnatomyParams, trees: dict[str, Tree], size: int, pixel: float,
                max_level: int = 6) -> np.ndarray:
    """Air path length (cm) inside the bronchi that run beside the arteries (lumen about 0.8 of
    the artery's radius, down to generation ``max_level``): invisible in aerated lung, they show
    as air bronchograms when the alveoli around them fill."""
    tree = _merge(trees.values())
    sel = (tree.level <= max_level) & (tree.level >= 1)
    sub = Tree(tree.start[sel], tree.end[sel], tree.radius[sel], tree.level[sel])
    pts, w = _samples(sub, pixel, radius_scale=0.8, offset=1.9)
    c, r = phantom_to_pixel(params, size, pts[:, 0], pts[:, 1])
    return splat(c, r, w, size)
