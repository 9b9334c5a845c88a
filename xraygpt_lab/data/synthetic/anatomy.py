"""Parametric anatomy of a frontal chest radiograph: the patient's shape and how the film was taken.

Every structure is a function of *phantom coordinates* ``(x, y)``: ``x`` runs from -1 (image
left) to +1 (image right), ``y`` from -1 (top) to +1 (bottom); one unit is ``MM_PER_UNIT`` mm
(see ``geometry``). Radiological convention (viewed as if facing the patient): the patient's
RIGHT is on the image's LEFT (``x < 0``) and the patient's LEFT on the image's RIGHT (``x > 0``),
so ``side_sign("left") == +1``.

Pixels map to phantom coordinates through the inverse of a small in-plane rotation, scale and
shift (``coordinate_grid``). Outlines are approximate signed distances ``phi`` (negative
inside); the 3-D organs built on them (lungs, heart, great vessels, ribs, spine) give path
lengths along the beam, which ``film`` turns into a radiograph (Beer-Lambert).

Proportions follow standard radiographic anatomy (Goodman, *Felson's Principles of Chest
Roentgenology*): right hemidiaphragm 1-3 cm above the left, dome at the 9th-11th posterior rib
on a good inspiration, two thirds of the heart left of the midline, cardiothoracic ratio (CTR)
below 0.5 in health, left hilum higher than the right, gastric bubble under the left dome.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from xraygpt_lab.data.synthetic.geometry import (
    MM_PER_UNIT,
    clamp,
    ellipse_q,
    ellipse_sdf,
    ellipsoid_chord,
    pixel_centres,
    polyline_distance,
    rounded_chord,
    segment_distance,
    smoothstep,
    soft_inside,
)

__all__ = [
    "MM_PER_UNIT", "SIDES", "VIEWS", "AnatomyParams", "sample_anatomy", "side_sign",
    "coordinate_grid", "pixel_size", "pixel_spacing_mm", "soft_inside", "smoothstep",
    "ellipse_sdf", "segment_distance", "polyline_distance", "lateral_wall", "diaphragm_y",
    "lung_envelope_sdf", "lung_masks", "heart_parts", "heart_geometry", "heart_sdf", "heart_chord",
    "mediastinum_sdf", "hilum_point", "carina_point", "thoracic_half_widths", "rib_y",
]

SIDES: tuple[str, str] = ("right", "left")
VIEWS: tuple[str, str] = ("PA", "AP")


def side_sign(side: str) -> int:
    """+1 for the patient's left (image right), -1 for the patient's right (image left)."""
    if side == "left":
        return 1
    if side == "right":
        return -1
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")


@dataclass
class AnatomyParams:
    """The turnable parameters of one film: the patient (lengths in phantom units, 1 = 200 mm;
    depths along the beam in cm) and the acquisition.

    Change any field and call ``render_case(..., anatomy=...)`` to see its effect;
    ``sample_anatomy`` draws adult ranges and a realistic mix of acquisitions.
    """

    # patient: thorax and lungs
    thorax_half_width: float = 0.78     # inner chest wall (lung edge) distance from the midline
    apex_y: float = -0.68               # top of the lung apices
    costophrenic_y: float = 0.42        # level of the right costophrenic angle
    left_dome_drop: float = 0.04        # left hemidiaphragm sits lower than the right (1-3 cm)
    dome_height: float = 0.19           # dome peak above the costophrenic angle
    apex_curvature: float = 2.6         # how pointed the apices are
    wall_taper: float = 0.30            # how fast the chest narrows above its widest level
    wall_power: float = 2.0             # shape of that narrowing (2: parabolic; higher: fuller, then sharper)
    dome_peak_at: float = 0.45          # where the dome peaks, as a fraction of the way to the chest wall
    dome_power: float = 2.0             # how the dome falls laterally (higher: flatter, deeper angle)
    medial_half_width: float = 0.025    # the lungs' medial borders (behind the mediastinum and heart) at the apex
    medial_widening: float = 0.0        # how fast they move apart downward (per unit of y)
    medial_shift: float = 0.0           # the gap between them lies this far right of the midline (image)
    body_depth_cm: float = 23.0         # antero-posterior diameter of the chest
    chest_wall: float = 0.11            # soft tissue lateral to the ribs
    breasts: float = 0.0                # 0 = none, up to 1 = large
    lung_air: float = 0.80              # aerated fraction of the lungs (inspiration, habitus)
    # heart and mediastinum
    heart_ctr: float = 0.44             # cardiothoracic ratio as seen on this film (normal < 0.5)
    heart_left_fraction: float = 0.66   # share of the heart's width left of the midline
    heart_tilt_deg: float = 30.0        # long axis tilt (apex points down and to the left)
    mediastinum_half_width: float = 0.125
    # skeleton
    rib_first_y: float = -0.70          # first posterior rib at the spine
    rib_spacing: float = 0.105          # vertical distance between the upper posterior ribs
    rib_curvature: float = 1.0          # how steeply the posterior ribs fall away laterally
    rib_thickness: float = 0.050        # height of a posterior rib
    clavicle_y: float = -0.53           # medial end of the clavicles
    bone_density: float = 1.0           # mineral density relative to a young adult
    # lungs: markings and the stomach
    vessel_density: float = 1.0         # calibre of the pulmonary vessels (1 = normal)
    gastric_bubble: float = 0.05        # radius of the stomach air under the left dome (0 = none)
    marking_seed: int = 0               # pattern of the vessel tree
    # acquisition
    view: str = "PA"                    # "PA" (erect, standard) or "AP" (portable)
    kvp: float = 120.0                  # tube voltage: higher = less bone contrast
    exposure: float = 1.0               # dose relative to the standard (brightness, noise)
    noise_level: float = 0.012          # quantum noise at standard dose (display units, lungs)
    rotation_deg: float = 0.0           # in-plane tilt of the patient on the detector
    axial_rotation_deg: float = 0.0     # rotation about the long axis (clavicle heads shift)
    inspiration: float = 10.0           # posterior rib at the right dome's peak
    scale: float = 1.0                  # magnification
    shift_x: float = 0.0
    shift_y: float = 0.0
    marker: str = ""                    # burned-in laterality marker: "", "L" or "R"

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


def rib_y(params: AnatomyParams, k: float) -> float:
    """y at the spine of posterior rib ``k`` (0-based, fractional allowed): the spacing grows by
    about 3 % a rib down the chest."""
    return params.rib_first_y + params.rib_spacing * (k + RIB_SPACING_GROWTH * k * k)


#: Relative growth of the posterior rib spacing per rib (lower ribs lie further apart).
RIB_SPACING_GROWTH: float = 0.03


def sample_anatomy(rng: np.random.Generator) -> AnatomyParams:
    """Draw one adult patient and film: every field varies, so no two images are alike.

    A quarter of the films are AP portables: magnified heart (a higher normal CTR on the film,
    still <= 0.5), scapulae over the lungs, higher clavicles, flatter posterior ribs, a poorer
    inspiration and a lower tube voltage.
    """
    u = rng.uniform
    ap = rng.random() < 0.25
    p = AnatomyParams(
        thorax_half_width=u(0.70, 0.82),
        apex_y=u(-0.76, -0.64),
        left_dome_drop=u(0.02, 0.07),
        dome_height=u(0.13, 0.21),
        apex_curvature=u(2.0, 3.2),
        wall_taper=u(0.22, 0.38),
        body_depth_cm=u(19.0, 27.0),
        chest_wall=u(0.08, 0.15),
        breasts=float(u(0.4, 1.0)) if rng.random() < 0.4 else 0.0,
        lung_air=u(0.74, 0.86),
        heart_ctr=u(0.39, 0.445) if ap else u(0.35, 0.44),
        heart_left_fraction=u(0.60, 0.70),
        heart_tilt_deg=u(30.0, 45.0),
        mediastinum_half_width=u(0.110, 0.140) * (1.08 if ap else 1.0),
        rib_first_y=u(-0.74, -0.68),
        rib_spacing=u(0.085, 0.100),
        rib_curvature=u(0.55, 0.80) if ap else u(0.85, 1.20),
        rib_thickness=u(0.044, 0.056),
        clavicle_y=0.0,
        bone_density=u(0.80, 1.15),
        vessel_density=u(1.1, 1.5),
        gastric_bubble=float(u(0.03, 0.07)) if rng.random() < 0.8 else 0.0,
        marking_seed=int(rng.integers(0, 2**31 - 1)),
        view="AP" if ap else "PA",
        kvp=u(80.0, 100.0) if ap else u(105.0, 125.0),
        exposure=float(np.exp(rng.normal(0.0, 0.18))),
        noise_level=u(0.008, 0.018) * (1.3 if ap else 1.0),
        rotation_deg=u(-4.0, 4.0),
        axial_rotation_deg=u(-6.0, 6.0),
        inspiration=u(8.5, 10.0) if ap else u(9.5, 11.0),
        scale=u(1.02, 1.12),  # the thorax fills the detector, as on a collimated film
        shift_x=u(-0.04, 0.04),
        shift_y=u(0.02, 0.09),
        marker=str(rng.choice(("", "L", "R"), p=(0.4, 0.4, 0.2))),
    )
    p.clavicle_y = p.apex_y + (u(0.03, 0.09) if ap else u(0.11, 0.19))
    set_inspiration(p, p.inspiration)
    return p


def set_inspiration(p: AnatomyParams, ribs: float) -> None:
    """Put the right dome's peak at posterior rib ``ribs`` (1-based, e.g. 10 = a good breath)
    half-way out along the hemithorax, and move the costophrenic angles with it."""
    p.inspiration = float(ribs)
    u = p.dome_peak_at * p.thorax_half_width
    peak = rib_y(p, ribs - 1) + float(posterior_rib_course(p, np.float32(u)))
    p.costophrenic_y = float(peak + p.dome_height)


def posterior_rib_course(params: AnatomyParams, u):
    """How far (phantom units) a posterior rib has fallen at lateral distance ``u``: from the
    spine it rises a little (the neck), then runs obliquely down and out, steepening
    towards the lateral chest wall where it turns forward."""
    un = u / params.thorax_half_width
    c = params.rib_curvature * params.rib_spacing
    return c * (2.2 * un * un + 0.10 * un + 5.0 * clamp(un - 0.90, 0.0, None) ** 2)


def posterior_rib_slope(params: AnatomyParams, u):
    """d(course)/du of :func:`posterior_rib_course`."""
    w = params.thorax_half_width
    un = u / w
    c = params.rib_curvature * params.rib_spacing
    return c * (4.4 * un + 0.10 + 10.0 * clamp(un - 0.90, 0.0, None)) / w


# ----------------------------------------------------------------------------------------------
# Coordinates
# ----------------------------------------------------------------------------------------------
def coordinate_grid(params: AnatomyParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Phantom coordinates ``(x, y)`` of every pixel, each float32 [size, size].

    The phantom is rotated by ``rotation_deg``, scaled by ``scale`` and shifted, so we apply
    the inverse transform to the pixel centres.
    """
    X, Y = pixel_centres(size)
    t = np.deg2rad(params.rotation_deg)
    c, s = np.cos(t), np.sin(t)
    Xs = (X - params.shift_x) / params.scale
    Ys = (Y - params.shift_y) / params.scale
    x = (c * Xs + s * Ys).astype(np.float32)   # [H, W]
    y = (-s * Xs + c * Ys).astype(np.float32)  # [H, W]
    return x, y


def phantom_to_pixel(params: AnatomyParams, size: int, x, y):
    """Pixel (column, row) of phantom points (inverse of :func:`coordinate_grid`)."""
    t = np.deg2rad(params.rotation_deg)
    c, s = np.cos(t), np.sin(t)
    xs, ys = c * x - s * y, s * x + c * y
    X, Y = xs * params.scale + params.shift_x, ys * params.scale + params.shift_y
    return (X + 1.0) * size / 2.0 - 0.5, (Y + 1.0) * size / 2.0 - 0.5


def window(params: AnatomyParams, size: int, box: tuple[float, float, float, float],
           margin: int = 2) -> tuple[slice, slice] | None:
    """Rows and columns of the pixels that phantom box ``(x0, x1, y0, y1)`` covers (plus
    ``margin`` pixels), or None when it is off the image."""
    x0, x1, y0, y1 = box
    c, r = phantom_to_pixel(params, size, np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1]))
    c0, c1 = max(0, int(np.floor(c.min())) - margin), min(size, int(np.ceil(c.max())) + margin + 1)
    r0, r1 = max(0, int(np.floor(r.min())) - margin), min(size, int(np.ceil(r.max())) + margin + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def in_window(fn, params: AnatomyParams, x: np.ndarray, y: np.ndarray,
              box: tuple[float, float, float, float], *args, **kwargs):
    """``fn(params, x, y, *args)`` evaluated only inside ``box``, zero elsewhere: a full-size
    float32 array, or a tuple of them when ``fn`` returns a tuple."""
    win = window(params, x.shape[0], box)
    result = None if win is None else fn(params, x[win], y[win], *args, **kwargs)
    single = not isinstance(result, tuple)
    parts = (result,) if single else result
    n = 1 if result is None else len(parts)
    outs = tuple(np.zeros(x.shape, np.float32) for _ in range(n))
    if win is not None:
        for out, part in zip(outs, parts):
            out[win] = part
    return outs[0] if single else outs


def pixel_size(params: AnatomyParams, size: int) -> float:
    """Width of one pixel in phantom units."""
    return 2.0 / (size * params.scale)


def pixel_spacing_mm(params: AnatomyParams, size: int) -> float:
    """Width of one pixel in millimetres at the patient."""
    return pixel_size(params, size) * MM_PER_UNIT


# ----------------------------------------------------------------------------------------------
# Thorax outline and lungs
# ----------------------------------------------------------------------------------------------
def lateral_wall(params: AnatomyParams, y):
    """Distance of the inner chest wall from the midline at height ``y``.

    The rib cage is widest just above the domes and narrows in a smooth curve towards the
    apices (``W(y) = W_max - taper (y_widest - y)^k`` above the widest level, ``k = wall_power``).
    """
    y = np.asarray(y, dtype=np.float32)
    widest = params.costophrenic_y - 0.10
    above = clamp(widest - y, 0.0, None)
    wall = params.thorax_half_width - params.wall_taper * above**params.wall_power + 0.03 * clamp(y - widest, 0.0, None)
    return np.maximum(wall, np.float32(0.1))  # far above the apices (off the film) it stays positive


def thoracic_half_widths(params: AnatomyParams) -> tuple[float, float]:
    """Widest extent of the right and left lung from the midline (at the costophrenic angles)."""
    return (float(lateral_wall(params, params.costophrenic("right"))),
            float(lateral_wall(params, params.costophrenic("left"))))


def _apex_u(params: AnatomyParams) -> float:
    return 0.40 * params.thorax_half_width


def _dome(params: AnatomyParams, u, left):
    """Height and slope of the hemidiaphragm at lateral distance ``u``; ``left`` is a bool or a
    bool array (the patient's left dome lies ``left_dome_drop`` lower)."""
    cp = params.costophrenic_y + params.left_dome_drop * np.asarray(left, dtype=np.float32)
    peak = cp - params.dome_height
    wall = lateral_wall(params, cp)
    dome_u = params.dome_peak_at * wall
    k = params.dome_power
    t = clamp((u - dome_u) / (wall - dome_u), 0.0, None)
    lateral = u > dome_u
    height = np.where(lateral, peak + (cp - peak) * t**k, peak + 0.07 * ((dome_u - u) / dome_u) ** 2)
    slope = np.where(lateral, k * (cp - peak) * t ** (k - 1) / (wall - dome_u), -0.14 * (dome_u - u) / dome_u**2)
    return height, slope


def diaphragm_y(params: AnatomyParams, u, side: str):
    """Height of the hemidiaphragm on ``side`` at lateral distance ``u`` from the midline.

    The dome peaks ``dome_peak_at`` (45 %) of the way to the chest wall and falls steeply (as
    the ``dome_power`` of the distance from the peak) to the costophrenic
    angle at the wall (a sharp, acute angle in health), and gently towards the cardiophrenic
    angle.
    """
    side_sign(side)
    return _dome(params, u, side == "left")[0]


def envelope_sdf_u(params: AnatomyParams, u, y, left, dome_raise: float = 0.0):
    """:func:`lung_envelope_sdf` in terms of the lateral distance ``u``; ``left`` may be an array."""
    ua, k = _apex_u(params), params.apex_curvature
    cap_y = params.apex_y + k * (u - ua) ** 2
    phi_cap = (cap_y - y) / np.sqrt(1.0 + (2 * k * (u - ua)) ** 2)
    widest = params.costophrenic_y - 0.10
    slope_w = params.wall_power * params.wall_taper * clamp(widest - y, 0.0, None) ** (params.wall_power - 1)
    phi_wall = (u - lateral_wall(params, y)) / np.sqrt(1.0 + slope_w**2)
    medial = params.medial_half_width + params.medial_widening * clamp(y - params.apex_y, 0.0, None)
    medial = medial + params.medial_shift * (2.0 * np.asarray(left, dtype=np.float32) - 1.0)
    phi_lat = np.maximum(np.maximum(phi_cap, phi_wall), np.maximum(medial, 0.0) - u)
    yd, slope = _dome(params, u, left)
    phi_d = (y - (yd - dome_raise)) / np.sqrt(1.0 + slope * slope)
    return np.maximum(phi_lat, phi_d)


def lung_envelope_sdf(params: AnatomyParams, x, y, side: str, dome_raise: float = 0.0):
    """Signed distance to one lung's outline in projection (before the heart is subtracted).

    Intersection of: a rounded apical cap (parabola), the curved lateral chest wall, the
    hemidiaphragm below (raised by ``dome_raise`` for volume loss) and the lung's medial border
    behind the mediastinum (the heart, mediastinum and spine take their share of the depth in :func:`lung_chord`).
    """
    return envelope_sdf_u(params, side_sign(side) * x, y, side == "left", dome_raise)


def lung_depth_cm(params: AnatomyParams, y, u=None):
    """Antero-posterior depth of a lung at height ``y`` (and lateral distance ``u``): shallow
    apices, deep bases; in cross-section thinner beside the mediastinum and towards the
    curving lateral chest wall."""
    t = smoothstep(params.apex_y, params.costophrenic_y, y)
    depth = params.body_depth_cm * (0.36 + 0.40 * t)
    if u is None:
        return depth
    un = u / params.thorax_half_width
    across = 0.55 + 0.45 * np.sqrt(clamp(1.0 - ((un - 0.55) / 0.62) ** 2, 0.0, 1.0))
    return depth * across


def lung_chord(params: AnatomyParams, x, y, side: str, dome_raise: float = 0.0):
    """Path length (cm) through one lung, rounded at its edges, plus the posterior recess that
    projects below the dome (lung behind the liver and spleen, 2-4 cm deep)."""
    phi = lung_envelope_sdf(params, x, y, side, dome_raise)
    u = side_sign(side) * x
    depth = lung_depth_cm(params, y, u)
    chord = rounded_chord(phi, depth, 0.09)
    below = y - (diaphragm_y(params, u, side) - dome_raise)
    wall = lateral_wall(params, y)
    recess = (0.22 * depth * (1.0 - smoothstep(0.0, 0.11, below)) * (below > 0)
              * smoothstep(0.35, 0.55, u / wall) * smoothstep(0.0, 0.06, wall - u))  # behind liver and spleen
    return chord + recess, phi


# ----------------------------------------------------------------------------------------------
# Heart and great vessels
# ----------------------------------------------------------------------------------------------
def lung_masks(params: AnatomyParams, size: int, ctr: float | None = None,
               behind_heart: bool = False) -> dict[str, np.ndarray]:
    """Bool [size, size] masks of the ``heart`` and of each lung field (``right lung``, ``left
    lung``, patient's sides) as they project on the film: each lung's outline less the heart
    and the mediastinum (``ctr`` defaults to the patient's own). ``behind_heart``: the whole
    projection of each lung, the lung in front of and behind the heart included (only the
    lungs' own medial borders, ``medial_half_width`` from the midline, limit it), as many lung
    annotations draw it."""
    x, y = coordinate_grid(params, size)  # [H, W] phantom coordinates
    heart = heart_sdf(params, x, y, params.heart_ctr if ctr is None else ctr) < 0
    cut = np.zeros_like(heart) if behind_heart else heart | (mediastinum_sdf(params, x, y) < 0)
    masks = {"heart": heart}
    for side in SIDES:
        masks[f"{side} lung"] = (lung_envelope_sdf(params, x, y, side) < 0) & ~cut
    return masks


def heart_parts(params: AnatomyParams, ctr: float) -> list[tuple[float, float, float, float, float, float]]:
    """The cardiac ellipsoids ``(cx, cy, a, b, depth_cm, angle_deg)`` for a given CTR.

    The ventricles (a tilted ellipsoid) form the left heart border and apex, the right atrium
    the right heart border; together they span ``ctr`` times the internal thoracic diameter,
    ``heart_left_fraction`` of it left of the midline (CTR = maximal transverse cardiac diameter
    / maximal internal thoracic diameter, Danzer 1919).
    """
    g = heart_geometry(params, ctr)
    return [(g["cx"], g["cy"], g["a"], g["b"], g["depth_cm"], g["tilt_deg"]),
            (g["ra_cx"], g["ra_cy"], g["ra_a"], g["ra_b"], 0.80 * g["depth_cm"], 0.0)]


def heart_geometry(params: AnatomyParams, ctr: float) -> dict[str, float]:
    """Centres, semi-axes and tilt of the ventricles and right atrium so that the heart's width
    matches ``ctr``; ``left``/``right`` are the heart's extents from the midline."""
    right_half, left_half = thoracic_half_widths(params)
    width = ctr * (right_half + left_half)
    left = params.heart_left_fraction * width      # MLD: midline to the left heart border
    right = width - left                           # MRD: midline to the right heart border
    tilt = np.deg2rad(params.heart_tilt_deg)
    aspect = 0.72 * min(1.0, (0.46 / max(ctr, 1e-3)) ** 0.6)  # an enlarged heart grows sideways
    half_x = 0.5 * 0.86 * width                    # the ventricles span 86 % of the width
    a = half_x / np.sqrt(np.cos(tilt) ** 2 + (aspect * np.sin(tilt)) ** 2)
    b = aspect * a
    half_y = np.sqrt((a * np.sin(tilt)) ** 2 + (b * np.cos(tilt)) ** 2)
    cx = left - half_x
    floor = 0.5 * (params.dome_peak("right") + params.dome_peak("left")) + 0.07
    cy = floor - 0.95 * half_y                     # it rests on the domes
    ra_a = 0.45 * right + 0.02
    ra_b = 0.62 * half_y
    ra_cx = -right + ra_a
    ra_cy = cy + 0.10 * half_y
    depth = params.body_depth_cm * (0.58 + 0.25 * (ctr - 0.44))
    return {"cx": float(cx), "cy": float(cy), "a": float(a), "b": float(b),
            "tilt_deg": float(params.heart_tilt_deg), "half_width": float(0.5 * width),
            "left": float(left), "right": float(right), "top": float(cy - half_y),
            "ra_cx": float(ra_cx), "ra_cy": float(ra_cy), "ra_a": float(ra_a), "ra_b": float(ra_b),
            "depth_cm": float(depth), "thoracic_half_width": float(0.5 * (right_half + left_half))}


def heart_sdf(params: AnatomyParams, x, y, ctr: float):
    """Signed distance to the cardiac silhouette (ventricles and right atrium) for a CTR."""
    parts = heart_parts(params, ctr)
    return np.minimum(*(ellipse_sdf(x, y, cx, cy, a, b, ang) for cx, cy, a, b, _, ang in parts))


def heart_chord(params: AnatomyParams, x, y, ctr: float, edge: float = 0.0):
    """Depth (cm) of lung the heart displaces along each ray (see the comment inside)."""
    parts = heart_parts(params, ctr)
    q = np.minimum(*(ellipse_q(x, y, cx, cy, a + edge, b + edge, ang) for cx, cy, a, b, _, ang in parts))
    depth = parts[0][4]
    # a broad, rounded muscle mass: the chord rises faster than a sphere's towards the middle;
    # with the pericardium and mediastinal fat it leaves only a thin layer of lung in front of
    # and behind it, so inside its outline it displaces nearly the whole depth of the chest
    chord = depth * clamp(1.0 - q, 0.0, None) ** 0.35
    return np.maximum(chord, 0.66 * params.body_depth_cm * smoothstep(1.0, 0.90, q))


def aortic_knob(params: AnatomyParams) -> tuple[float, float, float]:
    """(x, y, radius) of the aortic arch seen end-on, left of the trachea at about T4."""
    return params.mediastinum_half_width - 0.01, params.apex_y + 0.33, 0.048


def great_vessels_chord(params: AnatomyParams, x, y, edge: float = 0.0):
    """Path length (cm) through the great vessels: the aortic knob, the descending aorta beside
    the spine, the superior vena cava / ascending aorta forming the right upper mediastinal
    border, and the main pulmonary artery below the knob."""
    kx, ky, kr = aortic_knob(params)
    mw = params.mediastinum_half_width
    g = heart_geometry(params, params.heart_ctr)
    floor = 0.5 * (params.dome_peak("right") + params.dome_peak("left"))
    knob = ellipsoid_chord(x, y, kx, ky, kr, 0.9 * kr, 7.0, 0.0, edge)
    desc = ellipsoid_chord(x, y, 0.055, 0.5 * (ky + floor), 0.028, 0.5 * (floor - ky) + 0.02, 2.6, 0.0, edge)
    svc_top, svc_bot = params.clavicle_y - 0.02, g["ra_cy"]
    svc = ellipsoid_chord(x, y, -(mw - 0.012), 0.5 * (svc_top + svc_bot), 0.045,
                          0.5 * (svc_bot - svc_top), 4.5, 0.0, edge)
    pa = ellipsoid_chord(x, y, mw + 0.005, ky + 0.10, 0.045, 0.055, 5.0, 0.0, edge)
    return np.maximum(np.maximum(knob, desc), np.maximum(svc, pa))


def mediastinal_half_widths(params: AnatomyParams, y):
    """Half-widths ``(right, left)`` of the mediastinal shadow at height ``y``: a band widening
    downward that, below the aortic knob, fans out into the base of the heart (the pulmonary
    trunk and left atrial appendage on the left), so the silhouette runs on without a waist; on
    the right the superior vena cava ends in the right atrium, whose convex border then forms
    the silhouette down to the dome (Felson, ch. 1)."""
    w = params.mediastinum_half_width + 0.03 * clamp(y + 0.6, 0, None)
    g = heart_geometry(params, params.heart_ctr)
    _, ky, _ = aortic_knob(params)
    t = smoothstep(ky + 0.06, g["top"] + 0.45 * (g["cy"] - g["top"]), y)
    right = (w + t * max(0.0, 0.55 * g["right"] - params.mediastinum_half_width)) \
        * (1.0 - 0.6 * smoothstep(g["ra_cy"] - 0.04, g["ra_cy"] + 0.04, y))
    left = w + t * max(0.0, 0.70 * g["left"] - params.mediastinum_half_width)
    return right, left


def mediastinum_sdf(params: AnatomyParams, x, y):
    """Superior mediastinum in projection (``mediastinal_half_widths``) with the aortic knob."""
    right, left = mediastinal_half_widths(params, y)
    band = np.maximum(-(x - 0.01) - right, (x - 0.01) - left)
    kx, ky, kr = aortic_knob(params)
    knob = ellipse_sdf(x, y, kx, ky, kr, 0.9 * kr)
    return np.maximum(np.minimum(band, knob), y - params.dome_peak("right"))


def mediastinum_chord(params: AnatomyParams, x, y):
    """Path length (cm) of the central mediastinal soft tissue (trachea walls, oesophagus,
    thymic fat, vessel branches) that the lungs wrap around above the heart."""
    right, left = mediastinal_half_widths(params, y)
    w = np.where(x < 0, right, left) * (0.80 + 0.25 * smoothstep(-0.9, 0.0, y))
    t = clamp(1.0 - (x / w) ** 2, 0.0, None)
    return 0.66 * params.body_depth_cm * t ** 0.35


def hilum_point(params: AnatomyParams, side: str) -> tuple[float, float]:
    """Centre of the hilum on ``side``; the left hilum lies higher than the right (the left
    pulmonary artery arches over the left main bronchus)."""
    lift = 0.035 if side == "left" else 0.0
    return side_sign(side) * (params.mediastinum_half_width + 0.10), params.apex_y + 0.53 - lift


def carina_point(params: AnatomyParams) -> tuple[float, float]:
    """Where the trachea divides into the main bronchi (about T4-T5)."""
    return 0.01, params.apex_y + 0.40


# ----------------------------------------------------------------------------------------------
# Body
# ----------------------------------------------------------------------------------------------
def body_sdf(params: AnatomyParams, x, y):
    """Outline of the body: chest wall, shoulders and neck (air outside)."""
    u = np.abs(x)
    half = body_half_width(params, y)
    chest = u - half
    t = clamp((u - 0.24) / 0.7, 0.0, 1.0)
    shoulder_top = params.clavicle_y - 0.30 + 0.26 * np.sqrt(t)
    top = np.where(u < 0.24, -1.5, shoulder_top)
    return np.maximum(chest, top - y)


def body_half_width(params: AnatomyParams, y):
    """Half-width of the body (skin) at height ``y``: the chest wall outside the ribs, wider at
    the shoulders."""
    widest = params.costophrenic_y - 0.10
    half = params.thorax_half_width + params.chest_wall + 0.04 * clamp(y - widest, 0.0, None)
    return half + 0.10 * smoothstep(params.apex_y + 0.25, params.apex_y - 0.1, y)


def body_chord(params: AnatomyParams, x, y, pixel: float):
    """Soft-tissue path length (cm): a rounded-rectangle cross-section (superellipse) for the
    chest and shoulders, a thinner cylinder for the neck, faded over one pixel at the skin."""
    half = body_half_width(params, y)
    r2 = clamp((x / half) ** 2, 0.0, 1.0)
    profile = np.sqrt(1.0 - r2 * r2)  # a rounded-rectangle cross-section
    neck = smoothstep(params.clavicle_y + 0.02, params.clavicle_y - 0.25, y)
    depth = params.body_depth_cm * (1.0 - 0.45 * neck)
    return depth * profile * soft_inside(body_sdf(params, x, y), pixel)
