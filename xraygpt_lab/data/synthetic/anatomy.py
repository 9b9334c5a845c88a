"""Parametric anatomy of a frontal (PA) chest radiograph, drawn as approximate signed distances.

Every structure is a function of *phantom coordinates* ``(x, y)``: ``x`` runs from -1 (image
left) to +1 (image right), ``y`` from -1 (top) to +1 (bottom); one unit is ``MM_PER_UNIT`` mm.
Radiological convention (PA view, viewed as if facing the patient): the patient's RIGHT is on
the image's LEFT (``x < 0``) and the patient's LEFT on the image's RIGHT (``x > 0``), so
``side_sign("left") == +1``.

Pixels are mapped to phantom coordinates through the inverse of a small rotation, scale and
shift (``coordinate_grid``), so every structure and every finding mask is evaluated on the same
pixel grid as the image. Shapes return approximate signed distances ``phi`` (negative inside,
phantom units); :func:`soft_inside` turns them into anti-aliased occupancy in ``[0, 1]``.

Proportions follow standard radiographic anatomy texts (e.g. Goodman, *Felson's Principles of
Chest Roentgenology*): right hemidiaphragm 1–3 cm above the left, heart two-thirds left of the
midline, cardiothoracic ratio (CTR) below 0.5 in health, gastric bubble under the left dome.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np

#: Millimetres per phantom unit: the image spans 2 units = 400 mm, like a 35 x 43 cm detector.
MM_PER_UNIT: float = 200.0

SIDES: tuple[str, str] = ("right", "left")


def side_sign(side: str) -> int:
    """+1 for the patient's left (image right), -1 for the patient's right (image left)."""
    if side == "left":
        return 1
    if side == "right":
        return -1
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")


@dataclass
class AnatomyParams:
    """The turnable parameters of one phantom (all lengths in phantom units, 1 = 200 mm).

    Change any field and call ``render_case(..., anatomy=...)`` (see ``synthetic``) to see its
    effect; ``sample_anatomy`` draws healthy adult ranges.
    """

    thorax_half_width: float = 0.78     # lateral lung wall distance from the midline
    apex_y: float = -0.68               # top of the lung apices
    costophrenic_y: float = 0.42        # level of the right costophrenic angle
    left_dome_drop: float = 0.04        # left hemidiaphragm sits lower than the right (1-3 cm)
    dome_height: float = 0.19           # dome peak above the costophrenic angle
    heart_ctr: float = 0.44             # cardiothoracic ratio (normal < 0.5)
    heart_left_fraction: float = 0.66   # share of the heart's width left of the midline
    heart_tilt_deg: float = 28.0        # long axis tilt (apex points down and to the left)
    mediastinum_half_width: float = 0.085
    rib_first_y: float = -0.70          # first posterior rib at the spine
    rib_spacing: float = 0.105          # vertical distance between posterior ribs
    rib_curvature: float = 0.55         # how fast ribs fall away laterally
    rib_thickness: float = 0.036
    clavicle_y: float = -0.66           # medial end of the clavicles
    soft_tissue: float = 1.0            # body habitus: attenuation of the soft tissue
    lung_air: float = 0.80              # how dark (aerated) the lungs are
    bone_density: float = 0.30
    vessel_density: float = 0.40        # strength of the lung markings
    gastric_bubble: float = 0.05        # radius of the stomach air under the left dome (0 = none)
    exposure: float = 1.45              # beam: higher = whiter (1 - exp(-exposure * attenuation))
    noise_level: float = 0.018          # quantum noise, standard deviation in intensity
    rotation_deg: float = 0.0           # patient rotation in the image plane
    scale: float = 1.0                  # magnification
    shift_x: float = 0.0
    shift_y: float = 0.0
    marking_seed: int = 0               # pattern of the lung markings

    def as_dict(self) -> dict:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the turnable parameters, in declaration order."""
        return tuple(f.name for f in fields(cls))

    # Derived geometry (phantom units) -------------------------------------------------------
    def costophrenic(self, side: str) -> float:
        """y of the costophrenic angle on the patient's ``side``."""
        return self.costophrenic_y + (self.left_dome_drop if side == "left" else 0.0)

    def dome_peak(self, side: str) -> float:
        """y of the top of the hemidiaphragm on ``side``."""
        return self.costophrenic(side) - self.dome_height

    def zone_bounds(self, side: str) -> dict[str, tuple[float, float]]:
        """Lung zones on ``side`` as y-ranges: upper / middle / lower thirds, basal, perihilar."""
        top, bottom = self.apex_y, self.costophrenic(side)
        third = (bottom - top) / 3.0
        return {
            "upper": (top, top + third),
            "middle": (top + third, top + 2 * third),
            "lower": (top + 2 * third, bottom),
            "basal": (self.dome_peak(side) - 0.12, bottom),
            "perihilar": (top + 0.8 * third, top + 2.3 * third),
            "apical": (top - 0.05, top + third),
        }


def sample_anatomy(rng: np.random.Generator) -> AnatomyParams:
    """Draw one healthy adult phantom; every field varies so no two images are alike."""
    u = rng.uniform
    return AnatomyParams(
        thorax_half_width=u(0.72, 0.84),
        apex_y=u(-0.74, -0.62),
        costophrenic_y=u(0.36, 0.48),
        left_dome_drop=u(0.02, 0.07),
        dome_height=u(0.15, 0.23),
        heart_ctr=u(0.38, 0.47),
        heart_left_fraction=u(0.60, 0.72),
        heart_tilt_deg=u(20.0, 36.0),
        mediastinum_half_width=u(0.075, 0.10),
        rib_first_y=u(-0.74, -0.66),
        rib_spacing=u(0.095, 0.115),
        rib_curvature=u(0.45, 0.65),
        rib_thickness=u(0.032, 0.042),
        clavicle_y=u(-0.70, -0.60),
        soft_tissue=u(0.90, 1.10),
        lung_air=u(0.72, 0.86),
        bone_density=u(0.25, 0.36),
        vessel_density=u(0.30, 0.50),
        gastric_bubble=float(u(0.0, 0.07)) if rng.random() < 0.8 else 0.0,
        exposure=u(1.25, 1.70),
        noise_level=u(0.010, 0.028),
        rotation_deg=u(-4.0, 4.0),
        scale=u(0.93, 1.05),
        shift_x=u(-0.04, 0.04),
        shift_y=u(-0.04, 0.04),
        marking_seed=int(rng.integers(0, 2**31 - 1)),
    )


# ----------------------------------------------------------------------------------------------
# Coordinates and helpers
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates of pixel centres in [-1, 1]: (X, Y), each [size, size]."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    X, Y = np.meshgrid(c, c)  # [H, W]
    X.setflags(write=False)
    Y.setflags(write=False)
    return X, Y


def coordinate_grid(params: AnatomyParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Phantom coordinates ``(x, y)`` of every pixel, each float32 [size, size].

    The phantom is rotated by ``rotation_deg``, scaled by ``scale`` and shifted, so we apply
    the inverse transform to the pixel centres.
    """
    X, Y = _pixel_centres(size)
    t = np.deg2rad(params.rotation_deg)
    c, s = np.cos(t), np.sin(t)
    Xs = (X - params.shift_x) / params.scale
    Ys = (Y - params.shift_y) / params.scale
    x = (c * Xs + s * Ys).astype(np.float32)   # [H, W]
    y = (-s * Xs + c * Ys).astype(np.float32)  # [H, W]
    return x, y


def pixel_size(params: AnatomyParams, size: int) -> float:
    """Width of one pixel in phantom units."""
    return 2.0 / (size * params.scale)


def soft_inside(phi: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased occupancy of ``phi < 0`` with an edge ``width`` wide (one pixel), in [0, 1]."""
    return np.clip(0.5 - phi / width, 0.0, 1.0)


def smoothstep(edge0: float, edge1: float, v: np.ndarray) -> np.ndarray:
    """Hermite ramp from 0 at ``edge0`` to 1 at ``edge1``."""
    t = np.clip((v - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def ellipse_sdf(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float,
                angle_deg: float = 0.0) -> np.ndarray:
    """Approximate signed distance to an ellipse (exact for circles)."""
    t = np.deg2rad(angle_deg)
    dx, dy = x - cx, y - cy
    u = np.cos(t) * dx + np.sin(t) * dy
    v = -np.sin(t) * dx + np.cos(t) * dy
    return (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b)


def segment_distance(x: np.ndarray, y: np.ndarray, p0: tuple[float, float],
                     p1: tuple[float, float]) -> np.ndarray:
    """Distance from every point to the segment p0-p1."""
    ax, ay = p0
    bx, by = p1
    vx, vy = bx - ax, by - ay
    denom = vx * vx + vy * vy or 1e-12
    t = np.clip(((x - ax) * vx + (y - ay) * vy) / denom, 0.0, 1.0)
    return np.hypot(x - (ax + t * vx), y - (ay + t * vy))


def polyline_distance(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from every point to a polyline given as ``points`` [n, 2]."""
    d = segment_distance(x, y, tuple(points[0]), tuple(points[1]))
    for i in range(1, len(points) - 1):
        d = np.minimum(d, segment_distance(x, y, tuple(points[i]), tuple(points[i + 1])))
    return d


# ----------------------------------------------------------------------------------------------
# Structures
# ----------------------------------------------------------------------------------------------
def lateral_wall(params: AnatomyParams, y: np.ndarray | float) -> np.ndarray | float:
    """Distance of the inner chest wall from the midline at height ``y``.

    The rib cage is widest at the level of the domes and narrows in a smooth curve towards the
    apices (``W(y) = W_max - 0.55 (y_widest - y)^2`` above the widest level).
    """
    y = np.asarray(y, dtype=np.float32)
    widest = params.costophrenic_y - 0.10
    above = np.clip(widest - y, 0.0, None)
    return params.thorax_half_width - 0.55 * above**2 + 0.03 * np.clip(y - widest, 0.0, None)


def _apex_u(params: AnatomyParams) -> float:
    return 0.42 * params.thorax_half_width


def diaphragm_y(params: AnatomyParams, u: np.ndarray, side: str) -> np.ndarray:
    """Height of the hemidiaphragm on ``side`` at lateral distance ``u`` from the midline.

    The dome peaks at ``u = dome_u`` and falls steeply to the costophrenic angle at the chest
    wall (a sharp, acute angle in health), and gently towards the cardiophrenic angle.
    """
    peak, cp = params.dome_peak(side), params.costophrenic(side)
    wall = float(lateral_wall(params, cp))
    dome_u = 0.45 * wall
    lateral = peak + (cp - peak) * ((u - dome_u) / (wall - dome_u)) ** 2
    medial = peak + 0.07 * ((dome_u - u) / dome_u) ** 2
    return np.where(u > dome_u, lateral, medial)


def lung_envelope_sdf(params: AnatomyParams, x: np.ndarray, y: np.ndarray, side: str) -> np.ndarray:
    """Signed distance to one lung's outline before the heart and mediastinum are cut out.

    Intersection of: a rounded apical cap (parabola), the curved lateral chest wall, the
    hemidiaphragm below and a medial limit (the mediastinum is cut out later).
    """
    s = side_sign(side)
    u = s * x  # [H, W] distance towards this lung's lateral wall
    ua, k = _apex_u(params), 2.6
    cap_y = params.apex_y + k * (u - ua) ** 2
    phi_cap = (cap_y - y) / np.sqrt(1.0 + (2 * k * (u - ua)) ** 2)
    widest = params.costophrenic_y - 0.10
    slope_w = 1.1 * np.clip(widest - y, 0.0, None)
    phi_wall = (u - lateral_wall(params, y)) / np.sqrt(1.0 + slope_w**2)
    phi_lat = np.maximum(np.maximum(phi_cap, phi_wall), 0.02 - u)
    # Hemidiaphragm below: vertical distance divided by the slope gives a distance.
    peak, cp = params.dome_peak(side), params.costophrenic(side)
    wall = float(lateral_wall(params, cp))
    dome_u = 0.45 * wall
    yd = diaphragm_y(params, u, side)
    slope = np.where(u > dome_u, 2 * (cp - peak) * (u - dome_u) / (wall - dome_u) ** 2, 0.1)
    phi_d = (y - yd) / np.sqrt(1.0 + slope**2)
    return np.maximum(phi_lat, phi_d)


def heart_geometry(params: AnatomyParams, ctr: float) -> dict[str, float]:
    """Centre, semi-axes and tilt of the heart ellipse so that its width matches ``ctr``.

    CTR = maximal transverse cardiac diameter / maximal internal thoracic diameter
    (Danzer 1919), the thoracic diameter taken at the level of the right dome.
    """
    thoracic_half = float(lateral_wall(params, params.dome_peak("right")))
    half_width = ctr * thoracic_half  # transverse half-diameter of the heart
    tilt = np.deg2rad(params.heart_tilt_deg)
    aspect = 0.74  # short / long axis
    a = half_width / np.sqrt(np.cos(tilt) ** 2 + (aspect * np.sin(tilt)) ** 2)
    b = aspect * a
    f = params.heart_left_fraction
    cx = half_width * (2 * f - 1)  # heart extends from cx - hw (patient right) to cx + hw
    half_height = np.sqrt((a * np.sin(tilt)) ** 2 + (b * np.cos(tilt)) ** 2)
    floor = 0.5 * (params.dome_peak("right") + params.dome_peak("left")) + 0.05
    cy = floor - 0.42 * half_height  # the lower heart merges into the domes
    return {"cx": float(cx), "cy": float(cy), "a": float(a), "b": float(b),
            "tilt_deg": float(params.heart_tilt_deg), "half_width": float(half_width),
            "thoracic_half_width": thoracic_half}


def heart_sdf(params: AnatomyParams, x: np.ndarray, y: np.ndarray, ctr: float) -> np.ndarray:
    """Signed distance to the cardiac silhouette for a given cardiothoracic ratio."""
    g = heart_geometry(params, ctr)
    # Tilt so the long axis runs from upper right (patient) to the apex at lower left.
    return ellipse_sdf(x, y, g["cx"], g["cy"], g["a"], g["b"], angle_deg=g["tilt_deg"])


def mediastinum_sdf(params: AnatomyParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Superior mediastinum (a vertical band widening downward) with the aortic knob on the left."""
    w = params.mediastinum_half_width + 0.03 * np.clip(y + 0.6, 0, None)
    band = np.abs(x - 0.01) - w
    knob_r = 0.055
    knob = ellipse_sdf(x, y, params.mediastinum_half_width + 0.02, params.apex_y + 0.36, knob_r, knob_r)
    return np.minimum(band, knob)


def hilum_point(params: AnatomyParams, side: str) -> tuple[float, float]:
    """Centre of the hilum (where vessels and bronchi enter the lung) on ``side``."""
    return side_sign(side) * (params.mediastinum_half_width + 0.07), params.apex_y + 0.58


def carina_point(params: AnatomyParams) -> tuple[float, float]:
    """Where the trachea divides into the main bronchi (about T4-T5)."""
    return 0.01, params.apex_y + 0.40


def body_sdf(params: AnatomyParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Outline of the body: chest wall, shoulders and neck (air outside)."""
    u = np.abs(x)
    widest = params.costophrenic_y - 0.10
    half = params.thorax_half_width + 0.15 + 0.03 * np.clip(y - widest, 0.0, None)
    half = half - 0.05 * np.clip((params.apex_y + 0.25 - y) / 0.3, 0, 1)  # axillae, shoulders
    chest = u - half
    # neck, then the trapezius sloping down to the shoulders (air above them)
    t = np.clip((u - 0.17) / 0.75, 0.0, 1.0)
    shoulder_top = params.clavicle_y - 0.36 + 0.30 * np.sqrt(t)
    top = np.where(u < 0.17, -1.5, shoulder_top)
    return np.maximum(chest, top - y)


def body_thickness(params: AnatomyParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Relative soft-tissue path length through the body (thicker centrally), in [0, 1]."""
    widest = params.costophrenic_y - 0.10
    half = params.thorax_half_width + 0.15 + 0.03 * np.clip(y - widest, 0.0, None)
    t = np.sqrt(np.clip(1.0 - (x / half) ** 2, 0.0, 1.0))
    neck = np.clip((params.clavicle_y - 0.05 - y) / 0.25, 0.0, 1.0)  # neck / shoulders thinner
    return t * (1.0 - 0.35 * neck)


def rib_centre_offset(params: AnatomyParams, u: np.ndarray) -> np.ndarray:
    """Vertical course of a posterior rib at lateral distance ``u``: from the spine it climbs
    laterally, arches, then turns down steeply along the lateral chest wall."""
    c = params.rib_curvature
    return -0.75 * c * u + 0.8 * c * u**2 + 3.0 * c * np.clip(u - 0.55, 0.0, None) ** 2


def _rib_slope(params: AnatomyParams, u: np.ndarray) -> np.ndarray:
    c = params.rib_curvature
    return -0.75 * c + 1.6 * c * u + 6.0 * c * np.clip(u - 0.55, 0.0, None)


#: How far (phantom units) lateral to the break the displaced fragment reaches.
FRACTURE_REACH: float = 0.10


def fracture_region(params: AnatomyParams, x: np.ndarray, y: np.ndarray, fracture: dict,
                    margin: float = 0.0) -> np.ndarray:
    """Pixels a rib fracture may change: a band following rib ``fracture["rib"]`` from just
    medial of the break to FRACTURE_REACH lateral of it, on the fracture's side."""
    s = side_sign(fracture["side"])
    u = s * x
    du = u - fracture["u"]
    phase = (y - rib_centre_offset(params, np.abs(x)) - params.rib_first_y) / params.rib_spacing
    k = fracture["rib"] - 1
    along = (du > -fracture["gap"] / 2 - margin) & (du < FRACTURE_REACH + margin)
    return (u > 0) & along & (np.abs(phase - k) < 0.75 + margin / params.rib_spacing)


def rib_field(params: AnatomyParams, x: np.ndarray, y: np.ndarray, px: float,
              fractures: list[dict] | None = None, n_ribs: int = 10) -> np.ndarray:
    """Bone occupancy [H, W] of the posterior ribs 1..n_ribs on both sides.

    Vectorised: a pixel's "rib phase" ``(y - course(u) - first) / spacing`` tells which rib
    is nearest. ``fractures`` (dicts with ``side``, ``rib`` 1-based, ``u``, ``step``, ``gap``)
    add a local step and a gap that stay inside ``fracture_sdf``'s disk.
    """
    u = np.abs(x)
    course = rib_centre_offset(params, u)
    phase = (y - course - params.rib_first_y) / params.rib_spacing
    delta = np.zeros_like(x)
    gap = np.zeros_like(x, dtype=bool)
    for fr in fractures or []:
        du = side_sign(fr["side"]) * x - fr["u"]
        near_rib = fracture_region(params, x, y, fr, margin=0.0)
        # the lateral fragment is displaced by ``step`` just past the break and rejoins the
        # rib course within FRACTURE_REACH units, so every change stays near the break
        bump = np.clip(du / 0.006, 0, 1) * np.clip(1 - (du - 0.05) / (FRACTURE_REACH - 0.05), 0, 1)
        delta = np.where(near_rib, fr["step"] * bump, delta)
        gap |= near_rib & (np.abs(du) < fr["gap"] / 2)
    phase = phase - delta / params.rib_spacing
    k = np.rint(phase)
    thickness = params.rib_thickness * (1.0 + 0.025 * k)
    slope = _rib_slope(params, u)
    d = np.abs(phase - k) * params.rib_spacing / np.sqrt(1.0 + slope**2)
    inside = soft_inside(d - thickness / 2, px)
    # cortical rim slightly denser than the medulla
    profile = 0.75 + 0.25 * np.clip(2 * d / thickness, 0, 1)
    valid = (k >= 0) & (k < n_ribs) & (u > 0.05)
    lateral_end = lateral_wall(params, y) + 0.05
    fade = smoothstep(0.0, 0.04, lateral_end - u)
    bone = np.where(valid, inside * profile * fade, 0.0)
    return np.where(gap, 0.0, bone).astype(np.float32)


def rib_point(params: AnatomyParams, side: str, rib: int, u: float) -> tuple[float, float]:
    """Phantom (x, y) of the centre of posterior rib ``rib`` (1-based) at lateral distance u."""
    y = params.rib_first_y + (rib - 1) * params.rib_spacing + rib_centre_offset(params, np.float32(u))
    return side_sign(side) * u, float(y)


def clavicle_field(params: AnatomyParams, x: np.ndarray, y: np.ndarray, px: float) -> np.ndarray:
    """Both clavicles: gently S-shaped bars from the sternum rising to the shoulders."""
    u = np.abs(x)
    t = np.clip((u - 0.06) / 0.56, 0.0, 1.0)
    centre = params.clavicle_y - 0.09 * t + 0.025 * np.sin(2 * np.pi * t)
    half = 0.022 + 0.006 * np.cos(np.pi * t)
    d = np.abs(y - centre) - half
    ends = np.maximum(0.06 - u, u - 0.62)
    return soft_inside(np.maximum(d, ends), px).astype(np.float32)


def spine_field(params: AnatomyParams, x: np.ndarray, y: np.ndarray, px: float) -> np.ndarray:
    """Thoracic spine: vertebral bodies and paired pedicles, denser than the discs between."""
    half = 0.045 + 0.010 * np.clip(y + 0.5, 0, 1.5)
    column = soft_inside(np.abs(x) - half, px)
    level = (y - params.rib_first_y) / params.rib_spacing
    disc = 0.55 + 0.45 * smoothstep(0.08, 0.22, np.abs(level - np.rint(level)))
    pedicle_d = np.hypot((np.abs(x) - 0.65 * half) / 0.6, (level - np.rint(level)) * params.rib_spacing)
    pedicles = soft_inside(pedicle_d - 0.016, px)
    return (column * disc * 0.8 + 0.4 * pedicles * column).astype(np.float32)


def airway_field(params: AnatomyParams, x: np.ndarray, y: np.ndarray, px: float) -> np.ndarray:
    """Trachea and main bronchi (air, so they darken the mediastinum)."""
    cx, cy = carina_point(params)
    trachea = segment_distance(x, y, (cx, -1.2), (cx, cy))
    right = segment_distance(x, y, (cx, cy), (cx - 0.11, cy + 0.11))   # steeper, patient right
    left = segment_distance(x, y, (cx, cy), (cx + 0.14, cy + 0.09))
    return soft_inside(np.minimum(trachea - 0.026, np.minimum(right, left) - 0.018), px).astype(np.float32)


def lung_markings(params: AnatomyParams, x: np.ndarray, y: np.ndarray, side: str) -> np.ndarray:
    """Vascular markings radiating from the hilum and fading towards the periphery, in [0, 1].

    A random spiky function of the angle around the hilum (wiggled with distance) gives
    branching, tapering streaks; amplitude decays so the outer third is nearly clear.
    """
    hx, hy = hilum_point(params, side)
    rng = np.random.default_rng([params.marking_seed, 0 if side == "right" else 1])
    dx, dy = x - hx, y - hy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    knots = 56
    values = rng.random(knots + 1)
    values[-1] = values[0]
    grid = np.linspace(-np.pi, np.pi, knots + 1)
    wiggle = 0.10 * np.sin(9.0 * r + rng.uniform(0, 2 * np.pi)) + 0.05 * np.sin(23.0 * r)
    g = np.interp(theta + wiggle, grid, values, period=2 * np.pi)
    fine = np.interp(theta * 2.0 - wiggle, grid, rng.random(knots + 1), period=2 * np.pi)
    streaks = np.clip((g - 0.55) / 0.45, 0, 1) ** 1.5 + 0.6 * np.clip((fine - 0.7) / 0.3, 0, 1) ** 2 * (r > 0.2)
    fade = np.exp(-r / 0.42) * smoothstep(0.0, 0.05, r)
    return (np.clip(streaks, 0, 1) * fade).astype(np.float32)
