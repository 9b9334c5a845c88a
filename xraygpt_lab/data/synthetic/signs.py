"""Each finding drawn as the sign a radiology textbook teaches, by editing the material maps.

(Felson's *Principles of Chest Roentgenology*; Fleischner Society glossary, Hansell 2008.)

* Pleural effusion: fluid replaces the lung from below; its surface rises along the lateral
  chest wall (the meniscus), fills and blunts the costophrenic angle and, once above the dome,
  erases it (fluid and diaphragm have the same density).
* Pneumothorax: the lung shrinks towards the hilum; the pleural space holds only air (darker,
  no vessels) and the visceral pleura shows as a thin white line.
* Consolidation: alveolar air is replaced by fluid while the bronchi keep theirs (air
  bronchograms); where the opacity touches the heart border or a dome, that border vanishes
  (silhouette sign). An upper-lobe opacity stops at the minor fissure on the right.
* Atelectasis: the hemidiaphragm rises (volume loss) under a plate-like band or basal opacity.
* Edema: perihilar ("bat-wing") air-space opacity sparing the periphery, Kerley B lines
  (thickened interlobular septa, 1-2 cm, perpendicular to the lateral pleura at the bases) and
  upper-lobe vascular redistribution.
* Cardiomegaly: a larger heart (CTR > 0.5). Nodule or mass: a soft-edged sphere.
* Rib fracture: a gap and a cortical step in one posterior rib. Devices: radio-opaque tubes and
  lines with their tips in place (``devices``).

Every ``draw_*`` edits the maps only inside the region it returns as a bool mask (plus the
detector blur), so toggling a finding changes no pixel outside its mask.
"""
from __future__ import annotations

import functools

import numpy as np

from xraygpt_lab.data.synthetic import anatomy as anat
from xraygpt_lab.data.synthetic.anatomy import side_sign
from xraygpt_lab.data.synthetic.film import Maps
from xraygpt_lab.data.synthetic.geometry import (
    CM_PER_UNIT,
    MM_PER_UNIT,
    clamp,
    rounded_chord,
    smoothstep,
    soft_inside,
    tube_chord,
)
from xraygpt_lab.data.synthetic.lesions import Finding
from xraygpt_lab.data.synthetic.phantom import heart_map
from xraygpt_lab.data.synthetic.skeleton import fracture_region, posterior_ribs, rib_point
from xraygpt_lab.data.synthetic.vessels import bronchi_map

#: Air of a bronchus in consolidated lung relative to its lumen volume: a bronchus seen along
#: its course crosses several pixels' depth of air (a textbook-conspicuous air bronchogram).
BRONCHOGRAM: float = 4.5
#: Visceral pleura seen tangentially at the collapsed lung's edge: chord along the beam times
#: thickness (cm^2), e.g. 8 cm of a 0.5 mm thick pleura seen edge-on.
PLEURAL_LINE_CM2: float = 0.4


_FIELDS = ("lung_cut", "air_frac", "solid", "fluid", "extra_air", "cortical", "medullary", "metal", "space")


def local(draw):
    """Keep a draw's edits inside the mask it returns: every map is restored outside it, so
    toggling a finding changes no pixel beyond its mask (plus the detector blur)."""

    @functools.wraps(draw)
    def wrapper(M: Maps, *args, **kwargs) -> np.ndarray:
        before = {name: getattr(M, name).copy() for name in _FIELDS}
        mask = np.asarray(draw(M, *args, **kwargs), dtype=bool)
        for name, old in before.items():  # one dtype whatever was drawn: identical rounding
            new = getattr(M, name).astype(np.float32, copy=False)
            np.copyto(new, old, where=~mask)
            setattr(M, name, new)
        return mask

    return wrapper


def _envelope(M: Maps, side: str) -> np.ndarray:
    """Occupancy of one lung's outline (including the lung behind the heart), [H, W]."""
    return soft_inside(M.extra["phi"][side], M.extra["px"])


def _lung_mask(M: Maps, side: str, min_cm: float = 0.5) -> np.ndarray:
    """Pixels of ``side`` whose ray still crosses at least ``min_cm`` of lung."""
    u = side_sign(side) * M.extra["x"]
    return (M.lung > min_cm) & (u > 0.0)


def _texture(shape: tuple[int, int], rng: np.random.Generator, cells: int = 12) -> np.ndarray:
    """Smooth random texture in [0, 1] (bilinear upsampling of a coarse random grid)."""
    h, w = shape
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    yi = np.linspace(0, cells, h, dtype=np.float32)
    xi = np.linspace(0, cells, w, dtype=np.float32)
    y0 = np.minimum(yi.astype(int), cells - 1)
    x0 = np.minimum(xi.astype(int), cells - 1)
    fy, fx = (yi - y0)[:, None], (xi - x0)[None, :]
    a, b = coarse[y0][:, x0], coarse[y0][:, x0 + 1]
    c, d = coarse[y0 + 1][:, x0], coarse[y0 + 1][:, x0 + 1]
    return a * (1 - fx) * (1 - fy) + b * fx * (1 - fy) + c * (1 - fx) * fy + d * fx * fy


def _add_solid(M: Maps, amount: np.ndarray) -> None:
    """Tissue (cm) inside aerated lung; none inside a pneumothorax's pleural space."""
    M.solid += (amount * (1.0 - M.space)).astype(np.float32)


def _reduce_air(M: Maps, fraction: np.ndarray) -> None:
    """Replace ``fraction`` of the alveolar air by fluid or collapse (not in the pleural space)."""
    M.air_frac *= (1.0 - fraction * (1.0 - M.space)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
@local
def draw_cardiomegaly(M: Maps, f: Finding) -> np.ndarray:
    """A larger heart displaces more lung; the mask is the visible silhouette (above the domes)."""
    p, x, y, px = M.extra["params"], M.extra["x"], M.extra["y"], M.extra["px"]
    ctr = float(f.detail["ctr"])
    H = np.maximum(heart_map(p, x, y, ctr, px), M.extra["heart"])
    M.lung_cut = np.maximum(M.lung_cut, np.maximum(H, M.extra["cut_other"]) + M.extra["spine_cut"])
    return cardiac_silhouette(M, ctr)


def cardiac_silhouette(M: Maps, ctr: float) -> np.ndarray:
    """The heart's outline for ``ctr`` above the hemidiaphragms (below them it is hidden)."""
    p, x, y, px = M.extra["params"], M.extra["x"], M.extra["y"], M.extra["px"]
    u = np.abs(x)
    dome = np.where(x > 0, anat.diaphragm_y(p, u, "left"), anat.diaphragm_y(p, u, "right"))
    return (anat.heart_sdf(p, x, y, ctr) < 0.5 * px) & (y < dome)


@local
def draw_effusion(M: Maps, f: Finding) -> np.ndarray:
    """Dependent fluid with a meniscus: highest at the lateral wall, blunting the angle."""
    p, x, y, px = M.extra["params"], M.extra["x"], M.extra["y"], M.extra["px"]
    u = side_sign(f.side) * x
    cp = p.costophrenic(f.side)
    wall = float(anat.lateral_wall(p, cp))
    lung_height = cp - p.apex_y
    h = {"small": 0.11, "moderate": 0.32, "large": 0.58}[f.severity] * lung_height
    drop = {"small": 0.22, "moderate": 0.26, "large": 0.30}[f.severity]  # meniscus depth medially
    medial = clamp(1.0 - u / wall, 0.0, 1.0)
    level = cp - h + drop * medial**0.6  # [H, W] the fluid surface: concave, climbing the lateral wall
    ramp = 0.010 + 0.03 * medial        # sharp at the wall, hazier medially (a thin posterior layer)
    frac = smoothstep(-ramp, ramp, y - level) * (u > 0.0)
    M.fluid = np.maximum(M.fluid, (frac * M.aerated()).astype(np.float32))
    return (frac > 0.04) & _lung_mask(M, f.side, 0.3)


@local
def draw_pneumothorax(M: Maps, f: Finding) -> np.ndarray:
    """The lung retracts towards the hilum: black pleural air without markings, and the thin
    white visceral pleural line at the lung's new edge."""
    p, x, y, px = M.extra["params"], M.extra["x"], M.extra["y"], M.extra["px"]
    k = {"small": 0.78, "moderate": 0.60, "large": 0.45}[f.severity]
    hx, hy = anat.hilum_point(p, f.side)
    cx, cy = hx, hy + 0.12
    if f.severity == "small":  # apical: the gap tapers to nothing at hilar level
        taper = clamp((cy - y) / (cy - p.apex_y), 0.0, 1.0) ** 0.8
    else:
        taper = np.ones_like(y)
    kx = 1.0 - (1.0 - k) * taper
    lateral = side_sign(f.side) * (x - cx) > 0
    x2 = np.where(lateral, cx + (x - cx) / kx, x)  # the lung leaves the lateral wall, not the mediastinum
    ky = np.where(y < cy, k, 1.0)  # collapse from the apex and the lateral wall; the base stays
    y2 = cy + (y - cy) / ky
    phi_c = anat.lung_envelope_sdf(p, x2, y2, f.side) * k
    env = _envelope(M, f.side) * (side_sign(f.side) * x > 0)
    space = env * clamp(0.5 + phi_c / px, 0.0, 1.0)
    # the line shows only where the lung has left the chest wall (not along the untouched base)
    line = env * np.exp(-(((phi_c + 0.6 * px) / (0.55 * px)) ** 2)) * smoothstep(-0.8 * px, -1.8 * px, M.extra["phi"][f.side])
    M.air_frac = (M.air_frac * (1.0 - space) + space).astype(np.float32)
    M.solid = (M.solid * (1.0 - space)).astype(np.float32)
    M.space = np.maximum(M.space, space).astype(np.float32)
    # a sheet thinner than a pixel: its tissue spread over the line's ~1-pixel profile
    M.solid += (PLEURAL_LINE_CM2 / (0.975 * px * CM_PER_UNIT) * line).astype(np.float32)
    return (space > 0.02) | (line > 0.05)


def _consolidation_region(M: Maps, f: Finding, rng: np.random.Generator) -> np.ndarray:
    """Signed distance of the consolidated region: a lobe-shaped patch of the zone."""
    p, x, y = M.extra["params"], M.extra["x"], M.extra["y"]
    s = side_sign(f.side)
    u = s * x
    hx, hy = anat.hilum_point(p, f.side)
    fissure = hy + 0.01  # the minor fissure runs laterally from the right hilum
    g = anat.heart_geometry(p, p.heart_ctr)
    border = g["left"] if f.side == "left" else g["right"]
    if f.zone == "upper":
        y0 = p.apex_y + 0.04
        cy, b = 0.5 * (y0 + fissure), 0.6 * (fissure - y0)
        wall = float(anat.lateral_wall(p, cy))
        cu, a = 0.55 * wall, 0.38 * wall
    elif f.zone == "middle":  # middle lobe / lingula: against the heart border
        cy = g["cy"] + 0.01
        cu, a, b = border + 0.10, 0.17, 0.16  # its medial edge overlaps the heart border
    else:  # lower lobe: on the dome, lateral to the heart border
        wall = float(anat.lateral_wall(p, p.dome_peak(f.side)))
        a, b = 0.28 * wall, 0.15
        cu = max(0.58 * wall, border + a + 0.03)
        cy = p.dome_peak(f.side) - 0.05
    theta = np.arctan2(y - cy, u - cu)
    wobble = sum(rng.uniform(0.3, 1.0) * np.sin(n * theta + rng.uniform(0, 2 * np.pi)) for n in (2, 3, 5))
    q = np.sqrt(((u - cu) / a) ** 2 + ((y - cy) / b) ** 2)
    phi = (q - 1.0) * min(a, b) + 0.35 * min(a, b) * wobble / 3.0
    if f.side == "right" and f.zone == "upper":
        phi = np.maximum(phi, y - fissure)     # sharp lower border along the minor fissure
    if f.side == "right" and f.zone == "middle":
        phi = np.maximum(phi, fissure - y)     # sharp upper border along the minor fissure
    return phi


def bronchi(M: Maps) -> np.ndarray:
    """Air (cm) in the bronchi beside the vessels (computed once per phantom)."""
    if "bronchi" not in M.extra:
        M.extra["bronchi"] = bronchi_map(M.extra["params"], M.extra["trees"], M.extra["size"], M.extra["px"])
    return M.extra["bronchi"]


@local
def draw_consolidation(M: Maps, f: Finding, rng: np.random.Generator) -> np.ndarray:
    """Air-space opacity with air bronchograms and a fuzzy edge (sharp along a fissure)."""
    phi = _consolidation_region(M, f, rng)
    occ = smoothstep(0.03, -0.05, phi) * (side_sign(f.side) * M.extra["x"] > 0)
    mottle = 0.82 + 0.18 * _texture(phi.shape, rng, 18)  # homogeneous, so the bronchi show
    _reduce_air(M, 0.88 * mottle * occ)
    core = smoothstep(0.3, 0.8, occ)
    # the bronchi keep their air; seen along their length they are lucent branching lines
    M.extra_air += (BRONCHOGRAM * bronchi(M) * core * (1.0 - M.space)).astype(np.float32)
    return (phi < 0.03) & _lung_mask(M, f.side)


@local
def draw_lesion(M: Maps, f: Finding, rng: np.random.Generator) -> np.ndarray:
    """A nodule (<= 30 mm) or mass (> 30 mm): a soft-edged sphere of tissue, masses lobulated."""
    x, y, px = M.extra["x"], M.extra["y"], M.extra["px"]
    cx, cy = f.detail["center"]
    r = f.detail["size_mm"] / 2 / MM_PER_UNIT
    theta = np.arctan2(y - cy, x - cx)
    rough = 0.10 if f.detail["kind"] == "mass" else 0.03
    wobble = sum(rng.uniform(0.4, 1.0) * np.sin(n * theta + rng.uniform(0, 2 * np.pi)) for n in (2, 3, 5))
    rr = r * (1.0 + rough * wobble / 3.0)
    rho = np.hypot(x - cx, y - cy) / rr
    chord = rounded_chord((rho - 1.0) * rr, 2.0 * r * CM_PER_UNIT, r)  # a sphere's chord
    soft = smoothstep(1.06, 0.80, rho)                                   # soft margin
    _add_solid(M, chord * soft)
    inside = rho < 1.0 + 0.5 * px / r
    if not inside.any():  # smaller than a pixel: keep the pixel holding the centre
        inside = rho <= rho.min()
    return inside


def _kerley_lines(M: Maps, side: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Kerley B lines of one lung: 1-2 cm horizontal septal lines reaching the lateral pleura
    in the lower zone, about 1 cm apart. Returns (tissue cm, region mask)."""
    p, x, y, px = M.extra["params"], M.extra["x"], M.extra["y"], M.extra["px"]
    u = side_sign(side) * x
    cp = p.costophrenic(side)
    n, gap = 6, 0.05
    lengths = rng.uniform(0.05, 0.10, n)
    first = cp - 0.05
    j = clamp(np.rint((first - y) / gap), 0, n - 1).astype(int)  # nearest line index
    yj = first - j * gap
    wall = anat.lateral_wall(p, yj)
    along = smoothstep(wall - lengths[j] - 0.01, wall - lengths[j] + 0.01, u)
    tissue = tube_chord(y - yj, 0.005, 4.0, px) * along * (y < first + gap / 2)
    region = (np.abs(y - yj) < 2.5 * px) & (u > wall - lengths[j] - 0.02) & (y < first + gap / 2)
    return tissue, region


@local
def draw_edema(M: Maps, f: Finding, rng: np.random.Generator) -> np.ndarray:
    """Bat-wing perihilar opacity, Kerley B lines and upper-lobe vessels distended."""
    p, x, y = M.extra["params"], M.extra["x"], M.extra["y"]
    amount = {"mild": 0.25, "moderate": 0.45, "severe": 0.65}[f.severity]
    mask = np.zeros(x.shape, dtype=bool)
    for side in anat.SIDES:
        hx, hy = anat.hilum_point(p, side)
        wall = float(anat.lateral_wall(p, hy))
        dn = np.hypot((x - hx) / (0.62 * wall), (y - hy) / 0.40)  # normalised distance
        w = (1.0 - smoothstep(0.15, 1.0, dn)) * (side_sign(side) * x > 0)
        _reduce_air(M, amount * w)
        kerley, k_region = _kerley_lines(M, side, rng)
        _add_solid(M, kerley * (M.lung > 0.5))
        upper = (1.0 - smoothstep(hy - 0.20, hy + 0.02, y)) * (side_sign(side) * x > 0)
        _add_solid(M, 0.9 * M.extra["vessels"] * upper)
        lung = _lung_mask(M, side)
        mask |= lung & ((w > 0.1) | k_region | ((upper > 0) & (M.extra["vessels"] > 0)))
    return mask


@local
def draw_atelectasis(M: Maps, f: Finding, rng: np.random.Generator) -> np.ndarray:
    """Basal atelectasis with volume loss: the hemidiaphragm rises, a plate-like band lies above
    it (moderate: with patchy basal opacity)."""
    p, x, y, px = M.extra["params"], M.extra["x"], M.extra["y"], M.extra["px"]
    s = side_sign(f.side)
    u = s * x
    lift = {"mild": 0.035, "moderate": 0.06}[f.severity]
    dome = anat.diaphragm_y(p, u, f.side)
    raised = smoothstep(-0.5 * px, 0.5 * px, y - (dome - lift)) * (u > 0.02)
    before = M.lung.copy()
    M.lung_cut = (M.lung_cut + raised * M.lung).astype(np.float32)
    wall = float(anat.lateral_wall(p, p.dome_peak(f.side)))
    u0, u1 = 0.32 * wall, 0.86 * wall
    tilt = rng.uniform(0.08, 0.25) * rng.choice((-1.0, 1.0))  # plate-like bands lie obliquely
    above = rng.uniform(0.07, 0.12)
    centre = anat.diaphragm_y(p, clamp(u, u0, u1), f.side) - lift - above + tilt * (u - 0.5 * (u0 + u1))
    ends = smoothstep(u0, u0 + 0.08, u) * (1.0 - smoothstep(u1 - 0.08, u1, u))  # tapered ends
    band = 0.55 * clamp(tube_chord(y - centre, 0.012, 1.0, px) / 0.024, 0.0, 1.0) * ends  # 5 mm thick
    occ = band
    if f.severity == "moderate":  # patchy basal opacity between the band and the dome
        patch = smoothstep(centre, centre + 0.03, y) * ends * (1.0 - raised)
        occ = np.maximum(band, 0.45 * patch)
    _reduce_air(M, 0.8 * occ)
    region = (occ > 0.05) | ((raised > 0) & (before > 0.3))
    return region & (before > 0.3) & (u > 0)


@local
def draw_fracture(M: Maps, f: Finding) -> np.ndarray:
    """A gap and a step in one posterior rib (only the band around the break is redrawn), and
    the extrapleural hematoma beside it (:func:`_extrapleural_hematoma`)."""
    p, x, y, px = M.extra["params"], M.extra["x"], M.extra["y"], M.extra["px"]
    spec = fracture_spec(f)
    region = fracture_region(p, x, y, spec, margin=2 * px)
    rows, cols = np.nonzero(region)
    if rows.size:
        win = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        xs, ys = x[win], y[win]
        c0, m0 = posterior_ribs(p, xs, ys, px)
        c1, m1 = posterior_ribs(p, xs, ys, px, [spec])
        M.cortical[win] += (c1 - c0).astype(np.float32)
        M.medullary[win] += (m1 - m0).astype(np.float32)
    return fracture_region(p, x, y, spec, margin=px) | _extrapleural_hematoma(M, f)


def _extrapleural_hematoma(M: Maps, f: Finding) -> np.ndarray:
    """Blood between the broken rib and the parietal pleura, seen in profile along the lateral
    chest wall at the fracture's level: a lenticular opacity with a convex, sharp inner margin
    and tapering ends that meet the wall at obtuse angles (an extrapleural sign; Fraser and
    Paré's *Diagnosis of Diseases of the Chest*, ch. on the chest wall). Returns its mask."""
    p, x, y, px = M.extra["params"], M.extra["x"], M.extra["y"], M.extra["px"]
    u = side_sign(f.side) * x
    _, fy = rib_point(p, f.side, f.detail["rib"], f.detail["u"])
    half = f.detail["hematoma_length_mm"] / 2 / MM_PER_UNIT
    t = (y - fy) / half
    depth = f.detail["hematoma_mm"] / MM_PER_UNIT * np.sqrt(clamp(1.0 - t * t, 0.0, 1.0))  # [H, W] lens
    inward = anat.lateral_wall(p, y) - u  # distance in from the inner chest wall
    frac = smoothstep(depth + 0.5 * px, depth - 0.5 * px, inward) * (inward > -px) * (depth > 0) * (u > 0.0)
    M.fluid = np.maximum(M.fluid, (0.9 * frac * M.aerated()).astype(np.float32))
    return (frac > 0.04) & _lung_mask(M, f.side, 0.1)


def fracture_spec(f: Finding) -> dict:
    """Arguments for ``skeleton.posterior_ribs``'s ``fractures`` list."""
    return {"side": f.side, "rib": f.detail["rib"], "u": f.detail["u"],
            "step": f.detail["step"], "gap": f.detail["gap"]}
