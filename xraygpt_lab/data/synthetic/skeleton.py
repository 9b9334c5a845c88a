"""The bony thorax as path lengths (cm) of cortical and medullary bone along each ray.

* **Ribs** are elliptic tubes: a cortical shell around a medullary core (``geometry.shell_chords``),
  so each rib shows two dense cortical margins, as on a film. Posterior ribs leave the spine,
  rise a little, then run obliquely down and out to the lateral chest wall, where the beam runs
  along the curving rib and the margin is densest; anterior ribs run from there down and in to
  the costochondral junction and are fainter and blurrier (thinner, further from the detector).
  All ribs of one family share a course, so the nearest rib to a pixel is found in closed form
  (its "phase"), with no loop over ribs.
* **Clavicles** are S-shaped tubes whose medial heads shift with axial rotation; **scapulae**
  thin triangular plates with a thick lateral border and a spine, lateral to the lungs on a PA
  film and over them on an AP film; **humeral heads** and **vertebrae** (bodies with cortical
  end-plates, discs, pedicles and spinous processes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xraygpt_lab.data.synthetic.anatomy import (
    RIB_SPACING_GROWTH,
    AnatomyParams,
    in_window,
    lateral_wall,
    posterior_rib_course,
    posterior_rib_slope,
    rib_y,
    side_sign,
)
from xraygpt_lab.data.synthetic.geometry import (
    clamp,
    ellipse_q,
    ellipsoid_chord,
    shell_chords,
    smoothstep,
)

#: How far (phantom units) lateral to the break the displaced fragment reaches.
FRACTURE_REACH: float = 0.10
#: Number of posterior ribs drawn (the 11th and 12th lie below the domes).
N_POSTERIOR: int = 12
#: Number of anterior ribs drawn (ribs 8-10 join the costal margin as cartilage).
N_ANTERIOR: int = 8


@dataclass
class Bone:
    """Cortical and medullary path lengths (cm), each [H, W] float32."""

    cortical: np.ndarray
    medullary: np.ndarray

    @classmethod
    def zeros(cls, shape: tuple[int, int]) -> "Bone":
        return cls(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def add(self, cortical, medullary) -> None:
        """Add chords (cm) of one part."""
        self.cortical += cortical
        self.medullary += medullary


def _rib_phase(params: AnatomyParams, y, course):
    """Fractional 0-based rib index of each pixel for a family whose rib ``k`` sits at
    ``rib_y(k) + course`` (inverse of the quadratic spacing)."""
    v = (y - params.rib_first_y - course) / params.rib_spacing
    g = RIB_SPACING_GROWTH
    return (np.sqrt(clamp(1.0 + 4.0 * g * v, 1e-6, None)) - 1.0) / (2.0 * g) * (v > -0.5) + v * (v <= -0.5)


def fracture_region(params: AnatomyParams, x, y, fracture: dict, margin: float = 0.0):
    """Pixels a rib fracture may change: a band along posterior rib ``fracture["rib"]`` from
    just medial of the break to FRACTURE_REACH lateral of it, on the fracture's side."""
    s = side_sign(fracture["side"])
    u = s * x
    du = u - fracture["u"]
    phase = _rib_phase(params, y, posterior_rib_course(params, np.abs(x)))
    k = fracture["rib"] - 1
    along = (du > -fracture["gap"] / 2 - margin) & (du < FRACTURE_REACH + margin)
    spacing = params.rib_spacing * (1 + 2 * RIB_SPACING_GROWTH * k)
    return (u > 0) & along & (np.abs(phase - k) < 0.75 + margin / spacing)


def rib_point(params: AnatomyParams, side: str, rib: int, u: float) -> tuple[float, float]:
    """Phantom (x, y) of the axis of posterior rib ``rib`` (1-based) at lateral distance u."""
    y = rib_y(params, rib - 1) + float(posterior_rib_course(params, np.float32(u)))
    return side_sign(side) * u, float(y)


def posterior_ribs(params: AnatomyParams, x, y, pixel: float, fractures: list[dict] | None = None):
    """(cortical, medullary) chords of the posterior ribs on both sides; ``fractures`` (dicts
    with ``side``, ``rib`` 1-based, ``u``, ``step``, ``gap``) displace the lateral fragment
    by ``step`` just past the break and leave a ``gap`` without bone."""
    u = np.abs(x)
    course = posterior_rib_course(params, u)
    delta = np.zeros_like(x)
    gap = np.zeros(x.shape, dtype=bool)
    for fr in fractures or []:
        du = side_sign(fr["side"]) * x - fr["u"]
        near = fracture_region(params, x, y, fr)
        bump = clamp(du / 0.006, 0, 1) * clamp(1 - (du - 0.05) / (FRACTURE_REACH - 0.05), 0, 1)
        delta = np.where(near, fr["step"] * bump, delta)
        gap |= near & (np.abs(du) < fr["gap"] / 2)
    phase = _rib_phase(params, y - delta, course)
    k = clamp(np.rint(phase), 0, N_POSTERIOR - 1)
    spacing = params.rib_spacing * (1 + 2 * RIB_SPACING_GROWTH * k)
    slope = posterior_rib_slope(params, u)
    d = (phase - k) * spacing / np.sqrt(1.0 + slope * slope)
    half = 0.5 * params.rib_thickness * (0.80 + 0.03 * k)
    wall = lateral_wall(params, y)
    un = u / wall
    # the beam runs along the rib where it curves forward at the lateral chest wall
    tangential = 1.0 + 1.6 * smoothstep(0.80, 1.0, un)
    # the floating 11th and 12th ribs are short
    reach = np.where(k >= 10, 0.55 - 0.12 * (k - 10), 1.06)
    depth = 0.80 * tangential * smoothstep(0.035, 0.075, u) * (1.0 - smoothstep(reach - 0.04, reach + 0.04, un))
    cortex = 0.0075 * np.ones_like(half)
    cort, med = shell_chords(d, half, depth, cortex, pixel)
    valid = (phase > -0.5) & (phase < N_POSTERIOR - 0.5) & ~gap
    return np.where(valid, cort, 0.0), np.where(valid, med, 0.0)


def anterior_rib_course(params: AnatomyParams, u, wall):
    """Course of an anterior rib: from where its posterior part reaches the lateral wall it
    runs down and in towards the sternum."""
    turn = posterior_rib_course(params, 1.04 * wall)
    t = clamp(1.04 - u / wall, 0.0, None)
    return turn + params.rib_spacing * (0.9 * np.sqrt(t) + 2.3 * t)


def anterior_ribs(params: AnatomyParams, x, y, pixel: float):
    """(cortical, medullary) chords of the anterior ribs: flat and wide, thin along the beam,
    ending at the costochondral junction (costal cartilage is not calcified here)."""
    u = np.abs(x) - axial_shift(params) * np.sign(x)  # anterior structures move with rotation
    wall = lateral_wall(params, y)
    course = anterior_rib_course(params, u, wall)
    phase = _rib_phase(params, y, course)
    k = clamp(np.rint(phase), 0, N_ANTERIOR - 1)
    spacing = params.rib_spacing * (1 + 2 * RIB_SPACING_GROWTH * k)
    d = (phase - k) * spacing * 0.88
    half = 0.5 * params.rib_thickness * 1.25
    un = u / wall
    cc = 0.30 + 0.035 * k  # costochondral junction, further out for lower ribs
    depth = 0.75 * smoothstep(cc, cc + 0.06, un) * (1.0 - smoothstep(1.0, 1.06, un))
    cort, med = shell_chords(d, half, depth, 0.005, 1.8 * pixel)  # blurrier: further from the film
    valid = (phase > -0.5) & (phase < N_ANTERIOR - 0.5)
    return np.where(valid, cort, 0.0), np.where(valid, med, 0.0)


def axial_shift(params: AnatomyParams) -> float:
    """Horizontal shift (phantom units) of anterior structures relative to the spine when the
    patient is rotated about the long axis (about 10 cm in front of the spine)."""
    return float(np.sin(np.deg2rad(params.axial_rotation_deg)) * 0.5)


def clavicles(params: AnatomyParams, x, y, pixel: float):
    """(cortical, medullary) chords of both clavicles: S-shaped tubes from the sternal notch
    rising gently to the acromion; the medial heads move with axial rotation."""
    shift = axial_shift(params)
    u = np.abs(x - shift)
    t = clamp((u - 0.06) / 0.80, 0.0, 1.0)
    centre = params.clavicle_y - 0.10 * t + 0.030 * np.sin(2 * np.pi * t)
    slope = (-0.10 + 0.030 * 2 * np.pi * np.cos(2 * np.pi * t)) / 0.80
    half = 0.030 + 0.010 * (1.0 - smoothstep(0.0, 0.15, t)) + 0.006 * smoothstep(0.8, 1.0, t)
    d = (y - centre) / np.sqrt(1.0 + slope * slope)
    ends = smoothstep(0.045, 0.07, u) * (1.0 - smoothstep(0.84, 0.90, u))
    cort, med = shell_chords(d, half, 1.3 * ends, 0.008, pixel)
    return cort, med


def _triangle_phi(u, y, pts: np.ndarray):
    """Approximate signed distance to a triangle (max over its three edge half-planes)."""
    centroid = pts.mean(axis=0).tolist()
    corners = pts.tolist()  # Python floats keep the float32 grid float32
    phi = None
    for i in range(3):
        (ax, ay), (bx, by) = corners[i], corners[(i + 1) % 3]
        nx, ny = by - ay, -(bx - ax)
        norm = float(np.hypot(nx, ny))
        nx, ny = nx / norm, ny / norm
        if (centroid[0] - ax) * nx + (centroid[1] - ay) * ny > 0:
            nx, ny = -nx, -ny
        edge = (u - ax) * nx + (y - ay) * ny
        phi = edge if phi is None else np.maximum(phi, edge)
    return phi


def scapula_points(params: AnatomyParams) -> np.ndarray:
    """Superior angle, inferior angle and glenoid of the scapula (lateral distance, y): rotated
    off the lungs on a PA film (arms forward), over the upper lateral lungs on an AP film."""
    w, cy = params.thorax_half_width, params.clavicle_y
    if params.view == "AP":
        return np.array([[0.52 * w, cy + 0.02], [0.66 * w, cy + 0.60], [1.08 * w, cy + 0.14]])
    return np.array([[0.78 * w, cy + 0.00], [0.98 * w, cy + 0.56], [1.16 * w, cy + 0.14]])


def scapulae(params: AnatomyParams, x, y, pixel: float):
    """(cortical, medullary) chords of both scapulae and humeral heads."""
    u = np.abs(x)
    pts = scapula_points(params)
    phi = _triangle_phi(u, y, pts)
    plate = 0.55 * clamp(0.5 - phi / pixel, 0.0, 1.0) * smoothstep(0.0, 0.02, -phi + 0.01)
    (sx, sy), (ix, iy), (gx, gy) = pts.tolist()
    # thick lateral border from the glenoid to the inferior angle
    vx, vy = ix - gx, iy - gy
    length = float(np.hypot(vx, vy))
    along = clamp(((u - gx) * vx + (y - gy) * vy) / length**2, 0.0, 1.0)
    d_border = ((u - gx) * vy - (y - gy) * vx) / length
    b_cort, b_med = shell_chords(d_border, 0.018, 1.3 * (along < 0.97).astype(np.float32), 0.006, pixel)
    # the spine of the scapula, from the medial border up and out to the acromion
    m = (pts[0] + 0.3 * (pts[1] - pts[0])).tolist()
    wx, wy = gx + 0.02 - m[0], params.clavicle_y - 0.04 - m[1]  # towards the acromion
    wl = float(np.hypot(wx, wy))
    s_along = ((u - m[0]) * wx + (y - m[1]) * wy) / wl**2
    d_spine = ((u - m[0]) * wy - (y - m[1]) * wx) / wl
    s_cort, s_med = shell_chords(d_spine, 0.014, 1.1 * ((s_along > 0) & (s_along < 1)).astype(np.float32), 0.005, pixel)
    glenoid = ellipsoid_chord(u, y, gx + 0.01, gy - 0.01, 0.035, 0.07, 2.5)
    head_c, head_r = (gx + 0.12, gy - 0.02), 0.12
    outer = ellipsoid_chord(u, y, head_c[0], head_c[1], head_r, head_r, 4.6, 0.0, 0.5 * pixel)
    inner = ellipsoid_chord(u, y, head_c[0], head_c[1], head_r - 0.012, head_r - 0.012, 4.3)
    cort = 0.5 * plate + b_cort + s_cort + 0.4 * glenoid + (outer - inner)
    med = 0.5 * plate + b_med + s_med + 0.6 * glenoid + inner
    return cort, med


def spine(params: AnatomyParams, x, y, pixel: float):
    """(cortical, medullary) chords of the thoracic spine: vertebral bodies (end-plates and
    lateral cortex), discs between them, pedicles as cortical rings, spinous processes."""
    level = _rib_phase(params, y + 0.25 * params.rib_spacing, 0.0)  # rib k heads sit on body k
    k = np.rint(level)
    frac = level - k  # [-0.5, 0.5] within a level
    half = 0.070 + 0.0035 * clamp(k, 0, 14)
    body_on = 1.0 - smoothstep(0.36, 0.44, np.abs(frac))  # discs between the bodies
    endplate = smoothstep(0.28, 0.38, np.abs(frac)) * body_on
    depth = 1.6 * body_on
    cort, med = shell_chords(np.abs(x) * 1.0, half, depth, 0.006, pixel)
    cort = cort + 0.35 * endplate * clamp(1.0 - (x / half) ** 2, 0.0, None)
    ped_q = ellipse_q(np.abs(x), frac, 0.62 * half, -0.12, 0.024, 0.22 * 1.0)
    pedicle = 0.8 * (clamp(1.0 - ped_q, 0.0, 1.0) ** 0.5 - 0.8 * clamp(1.0 - ped_q / 0.45, 0.0, 1.0) ** 0.5)
    spinous = 0.6 * clamp(1.0 - ellipse_q(x, frac, 0.0, 0.22, 0.012, 0.30), 0.0, None) ** 0.5
    return cort + clamp(pedicle, 0.0, None) + 0.5 * spinous, med + 0.5 * spinous


def skeleton(params: AnatomyParams, x, y, pixel: float, fractures: list[dict] | None = None) -> Bone:
    """All bones of the thorax as one :class:`Bone` (cm of cortical and medullary bone), each
    bone evaluated only on the pixels its bounding box covers."""
    w, cl = params.thorax_half_width, params.clavicle_y
    last = rib_y(params, N_POSTERIOR - 0.5) + float(posterior_rib_course(params, np.float32(1.1 * w))) + 0.08
    last_anterior = (rib_y(params, N_ANTERIOR - 0.5) + float(posterior_rib_course(params, np.float32(1.05 * w)))
                     + 3.4 * params.rib_spacing)
    top = params.rib_first_y - 0.12
    bone = Bone.zeros(x.shape)
    bone.add(*in_window(posterior_ribs, params, x, y, (-1.5, 1.5, top, last), pixel, fractures))
    bone.add(*in_window(anterior_ribs, params, x, y, (-1.5, 1.5, top, last_anterior), pixel))
    bone.add(*in_window(clavicles, params, x, y, (-1.0, 1.0, cl - 0.18, cl + 0.10), pixel))
    for s in (-1.0, 1.0):
        box = (min(s * 0.40 * w, s * 1.5), max(s * 0.40 * w, s * 1.5), cl - 0.25, cl + 0.72)
        bone.add(*in_window(scapulae, params, x, y, box, pixel))
    bone.add(*in_window(spine, params, x, y, (-0.17, 0.17, -1.5, 1.5), pixel))
    return bone


__all__ = ["FRACTURE_REACH", "Bone", "skeleton", "posterior_ribs", "anterior_ribs", "clavicles",
           "scapulae", "spine", "fracture_region", "rib_point"]
