"""Geometry of the synthetic film: pixel grids, signed distances and analytic line integrals.

The film is a projection: every pixel records the attenuation integrated along the ray through
it. For the simple solids the thorax is built from, that integral is a *chord length* known in
closed form (``chord`` functions below, in centimetres along the beam):

* an ellipsoid with in-plane semi-axes ``a, b`` and depth semi-axis ``c``:
  ``2 c sqrt(1 - q)``, ``q`` the in-plane normalised radius squared;
* a tube (rib, clavicle, catheter) of in-plane half-height ``h`` and depth half-thickness ``t``
  seen from the side: ``2 t sqrt(1 - (d/h)^2)`` at distance ``d`` from its axis, averaged over
  the pixel width analytically (the integral of ``sqrt(1 - s^2)`` is elementary), so a rib
  one pixel tall is drawn without aliasing;
* a slab with a rounded edge (a lung, the chest wall): ``D sqrt(1 - (1 - d/R)^2)`` within ``R``
  of the edge, ``D`` beyond it.

Phantom coordinates: ``x`` from -1 (image left) to +1 (image right), ``y`` from -1 (top) to +1
(bottom); one unit is ``MM_PER_UNIT`` mm. Thin structures (vessels) are *splatted*: points
along their axis deposit their volume into the four nearest pixels (bilinear weights).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

#: Millimetres per phantom unit: the image spans 2 units = 400 mm, like a 35 x 43 cm detector.
MM_PER_UNIT: float = 200.0
#: Centimetres per phantom unit (depths along the beam are in cm).
CM_PER_UNIT: float = MM_PER_UNIT / 10.0


@lru_cache(maxsize=8)
def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates of pixel centres in [-1, 1]: (X, Y), each [size, size], read-only."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    X, Y = np.meshgrid(c, c)  # [H, W]
    X.setflags(write=False)
    Y.setflags(write=False)
    return X, Y


def clamp(a, lo=None, hi=None):
    """``np.clip`` without its Python overhead (it is called hundreds of times per film)."""
    if lo is not None:
        a = np.maximum(a, lo)
    if hi is not None:
        a = np.minimum(a, hi)
    return a


def soft_inside(phi: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased occupancy of ``phi < 0`` with an edge ``width`` wide (one pixel), in [0, 1]."""
    return clamp(0.5 - phi / width, 0.0, 1.0)


def smoothstep(edge0: float, edge1, v):
    """Hermite ramp from 0 at ``edge0`` to 1 at ``edge1``."""
    t = clamp((v - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def ellipse_q(x, y, cx: float, cy: float, a: float, b: float, angle_deg: float = 0.0):
    """Normalised squared radius ``(u/a)^2 + (v/b)^2`` in the ellipse's own (rotated) frame."""
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)  # Python floats keep float32 arrays float32
    dx, dy = x - cx, y - cy
    u = (c * dx + s * dy) * (1.0 / a)
    v = (c * dy - s * dx) * (1.0 / b)
    return u * u + v * v


def ellipse_sdf(x, y, cx: float, cy: float, a: float, b: float, angle_deg: float = 0.0):
    """Approximate signed distance to an ellipse (exact for circles), negative inside."""
    return (np.sqrt(ellipse_q(x, y, cx, cy, a, b, angle_deg)) - 1.0) * min(a, b)


def ellipsoid_chord(x, y, cx: float, cy: float, a: float, b: float, depth_cm: float,
                    angle_deg: float = 0.0, edge: float = 0.0):
    """Chord (cm) of an ellipsoid through each pixel: ``depth_cm * sqrt(1 - q)``.

    ``depth_cm`` is the full depth along the beam at the centre; ``edge`` (phantom units) widens
    the rim by about a pixel so the silhouette is anti-aliased.
    """
    q = ellipse_q(x, y, cx, cy, a + edge, b + edge, angle_deg)
    return depth_cm * np.sqrt(clamp(1.0 - q, 0.0, None))


def _half_disc_integral(s):
    """``F(s) = integral_0^s sqrt(1 - t^2) dt`` for s in [-1, 1] (odd, F(1) = pi/4)."""
    s = clamp(s, -1.0, 1.0)
    return 0.5 * (s * np.sqrt(1.0 - s * s) + np.arcsin(s))


def tube_chord(d, half_height: float | np.ndarray, depth_cm: float | np.ndarray, pixel: float):
    """Pixel-averaged chord (cm) of an elliptic tube seen from the side.

    ``d`` is the perpendicular in-plane distance from the tube's axis, ``half_height`` its
    in-plane semi-axis, ``depth_cm`` its full depth along the beam and ``pixel`` the pixel
    width (phantom units). The average of ``depth * sqrt(1 - (s/h)^2)`` over
    ``s in [d - pixel/2, d + pixel/2]`` is ``depth * h * (F(s1) - F(s0)) / pixel``.
    """
    h = np.maximum(np.asarray(half_height, np.float32), np.float32(1e-6))
    half = 0.5 * pixel
    s0, s1 = (d - half) / h, (d + half) / h
    return depth_cm * h * (_half_disc_integral(s1) - _half_disc_integral(s0)) / pixel


def shell_chords(d, half_height, depth_cm, cortex: float, pixel: float):
    """(cortical, medullary) pixel-averaged chords of a bone tube with a cortical shell of
    thickness ``cortex`` (phantom units) around a medullary core: outer tube minus inner tube."""
    outer = tube_chord(d, half_height, depth_cm, pixel)
    half_height = np.asarray(half_height, np.float32)
    inner_h = np.maximum(half_height - np.float32(cortex), np.float32(1e-6))
    inner_depth = depth_cm * inner_h / np.maximum(half_height, np.float32(1e-6))
    inner = tube_chord(d, inner_h, inner_depth, pixel)
    return outer - inner, inner


def rounded_chord(phi, depth_cm, radius: float):
    """Chord (cm) through a slab of depth ``depth_cm`` whose edge is rounded with ``radius``:
    ``depth * sqrt(1 - (1 - t)^2)``, ``t = min(-phi / radius, 1)``; zero outside (phi > 0)."""
    t = clamp(-phi / radius, 0.0, 1.0)
    return depth_cm * np.sqrt(t * (2.0 - t))


def segment_distance(x, y, p0: tuple[float, float], p1: tuple[float, float]):
    """Distance from every point to the segment p0-p1."""
    ax, ay = p0
    bx, by = p1
    vx, vy = bx - ax, by - ay
    denom = vx * vx + vy * vy or 1e-12
    t = clamp(((x - ax) * vx + (y - ay) * vy) / denom, 0.0, 1.0)
    return np.hypot(x - (ax + t * vx), y - (ay + t * vy))


def polyline_distance(x, y, points: np.ndarray):
    """Distance from every point to a polyline given as ``points`` [n, 2]."""
    d = segment_distance(x, y, tuple(points[0]), tuple(points[1]))
    for i in range(1, len(points) - 1):
        d = np.minimum(d, segment_distance(x, y, tuple(points[i]), tuple(points[i + 1])))
    return d


def splat(px: np.ndarray, py: np.ndarray, weight: np.ndarray, size: int) -> np.ndarray:
    """Accumulate ``weight`` at image positions (``px``, ``py`` in pixels, centre of pixel 0 at
    0.0) into a [size, size] float32 map with bilinear weights; points off the image are dropped."""
    x0 = np.floor(px).astype(np.int64)
    y0 = np.floor(py).astype(np.int64)
    fx = px - x0
    fy = py - y0
    xi = np.concatenate([x0, x0 + 1, x0, x0 + 1])
    yi = np.concatenate([y0, y0, y0 + 1, y0 + 1])
    w = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]) * np.tile(weight, 4)
    ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
    out = np.bincount(yi[ok] * size + xi[ok], weights=w[ok], minlength=size * size)
    return out.reshape(size, size).astype(np.float32)
