"""Findings of the synthetic world: what each CheXpert observation looks like and where it is.

A :class:`Finding` names one positive observation (exact CheXpert name) with its side (the
PATIENT's side), zone, severity and details. :func:`complete_finding` fills whatever the caller
left out from a seeded generator, so a finding can be given loosely (``Finding("Pleural
Effusion", side="left")``) and still render the same way every time.

Drawing works on :class:`Layers` — the attenuation components of the radiograph — and each
``draw_*`` function edits them only inside its own region and returns that region as a bool
mask. Appearances follow textbook signs (Felson's *Principles of Chest Roentgenology*):
effusion = basal opacity with a meniscus that blunts the costophrenic angle and hides the
dome; pneumothorax = thin visceral pleural line with no lung markings beyond it; edema =
bilateral perihilar ("bat-wing") haze; consolidation = lobar/zonal airspace opacity with air
bronchograms; atelectasis = basal plate-like band; fracture = rib step and gap.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xraygpt_lab.data.synthetic.anatomy import (
    FRACTURE_REACH,
    MM_PER_UNIT,
    AnatomyParams,
    carina_point,
    diaphragm_y,
    ellipse_sdf,
    fracture_region,
    heart_geometry,
    hilum_point,
    lateral_wall,
    lung_envelope_sdf,
    polyline_distance,
    rib_point,
    side_sign,
    smoothstep,
    soft_inside,
)
from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS

#: Observations that can be drawn (everything rendered except the "No Finding" summary label).
DRAWABLE: tuple[str, ...] = tuple(o for o in RENDERED_OBSERVATIONS if o != "No Finding")

SEVERITIES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("mild", "moderate", "severe"),
    "Pleural Effusion": ("small", "moderate", "large"),
    "Pneumothorax": ("small", "moderate", "large"),
    "Edema": ("mild", "moderate", "severe"),
    "Atelectasis": ("mild", "moderate"),
}

#: Sides each observation may take (patient's side); None = not lateralised.
ALLOWED_SIDES: dict[str, tuple[str | None, ...]] = {
    "Cardiomegaly": (None,),
    "Pleural Effusion": ("left", "right"),
    "Pneumothorax": ("left", "right"),
    "Consolidation": ("left", "right"),
    "Lung Lesion": ("left", "right"),
    "Edema": ("bilateral",),
    "Atelectasis": ("left", "right"),
    "Support Devices": (None,),
    "Fracture": ("left", "right"),
}

#: CTR ranges per cardiomegaly grade (normal hearts are drawn with CTR <= 0.47).
CTR_RANGES: dict[str, tuple[float, float]] = {
    "mild": (0.54, 0.58), "moderate": (0.58, 0.63), "severe": (0.63, 0.69),
}

DEVICES: tuple[str, ...] = ("endotracheal tube", "central venous catheter", "pacemaker")


@dataclass
class Finding:
    """One positive finding (see module docstring); ``side`` is the PATIENT's side."""

    observation: str
    side: str | None = None
    zone: str | None = None
    severity: str | None = None
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {"observation": self.observation, "side": self.side, "zone": self.zone,
                "severity": self.severity, "detail": dict(self.detail)}

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        """Inverse of :meth:`to_dict`."""
        return cls(d["observation"], d.get("side"), d.get("zone"), d.get("severity"),
                   dict(d.get("detail") or {}))


def validate_finding(f: Finding) -> None:
    """Raise ``ValueError`` naming the problem if ``f`` cannot be drawn."""
    if f.observation not in DRAWABLE:
        raise ValueError(f"cannot draw observation {f.observation!r}; choose one of {list(DRAWABLE)}")
    if f.side is not None and f.side not in ALLOWED_SIDES[f.observation]:
        raise ValueError(f"{f.observation}: side must be one of "
                         f"{[s for s in ALLOWED_SIDES[f.observation]]}, got {f.side!r}")
    if f.severity is not None and f.observation in SEVERITIES and f.severity not in SEVERITIES[f.observation]:
        raise ValueError(f"{f.observation}: severity must be one of {list(SEVERITIES[f.observation])}, "
                         f"got {f.severity!r}")
    if f.zone is not None and f.zone not in ("upper", "middle", "lower", "basal", "perihilar", "apical"):
        raise ValueError(f"{f.observation}: unknown zone {f.zone!r}")


def _lobe(side: str, zone: str) -> str:
    """The lobe a zone mostly projects onto on a frontal film (lingula on the left middle)."""
    if side == "left":
        return {"upper": "left upper lobe", "middle": "lingula of the left upper lobe", "lower": "left lower lobe"}[zone]
    return {"upper": "right upper lobe", "middle": "right middle lobe", "lower": "right lower lobe"}[zone]


def complete_finding(f: Finding, anatomy: AnatomyParams, rng: np.random.Generator) -> Finding:
    """Return a copy of ``f`` with side, zone, severity and geometric details all filled."""
    validate_finding(f)
    obs = f.observation
    side = f.side if f.side is not None else rng.choice(ALLOWED_SIDES[obs])
    side = None if side is None else str(side)
    severity = f.severity
    if severity is None and obs in SEVERITIES:
        severity = str(rng.choice(SEVERITIES[obs]))
    zone = f.zone
    d = dict(f.detail)
    if obs == "Cardiomegaly":
        lo, hi = CTR_RANGES[severity]
        d.setdefault("ctr", round(float(rng.uniform(lo, hi)), 2))
    elif obs == "Pleural Effusion":
        zone = zone or "basal"
    elif obs == "Pneumothorax":
        zone = zone or ("apical" if severity == "small" else None)
    elif obs == "Consolidation":
        zone = zone or str(rng.choice(("upper", "middle", "lower")))
        d.setdefault("lobe", _lobe(side, zone))
    elif obs == "Lung Lesion":
        zone = zone or str(rng.choice(("upper", "middle", "lower")))
        kind = d.setdefault("kind", "mass" if rng.random() < 0.3 else "nodule")
        d.setdefault("size_mm", int(rng.integers(35, 61) if kind == "mass" else rng.integers(13, 29)))
        if "center" not in d:
            r = d["size_mm"] / 2 / MM_PER_UNIT
            y0, y1 = anatomy.zone_bounds(side)[zone]
            y1 = min(y1, anatomy.dome_peak(side) - r - 0.03)
            y0 = max(y0, anatomy.apex_y + 0.12 + r)
            cy = float(rng.uniform(y0, max(y0, y1)))
            wall = float(lateral_wall(anatomy, cy))
            cu = float(rng.uniform(0.45 * wall, max(0.45 * wall, wall - r - 0.06)))
            d["center"] = [round(side_sign(side) * cu, 4), round(cy, 4)]
    elif obs == "Edema":
        zone = zone or "perihilar"
    elif obs == "Atelectasis":
        zone = zone or "basal"
    elif obs == "Support Devices":
        if "devices" not in d:
            n = 1 + int(rng.random() < 0.35) + int(rng.random() < 0.1)
            d["devices"] = sorted(rng.choice(DEVICES, size=n, replace=False).tolist(), key=DEVICES.index)
        d.setdefault("device", d["devices"][0])
        if "endotracheal tube" in d["devices"]:
            d.setdefault("ett_tip_cm", int(rng.integers(3, 7)))
        if "central venous catheter" in d["devices"]:
            d.setdefault("line_route", str(rng.choice(("right internal jugular", "right subclavian"))))
    elif obs == "Fracture":
        if "rib" not in d:
            d["rib"] = int(rng.integers(4, 9))
        wall = float(lateral_wall(anatomy, anatomy.apex_y + 0.5))
        d.setdefault("u", round(float(rng.uniform(wall - 0.26, wall - 0.16)), 4))
        d.setdefault("step", round(float(rng.uniform(0.40, 0.50) * anatomy.rib_spacing), 4))
        d.setdefault("gap", round(float(rng.uniform(0.035, 0.050)), 4))
        _, fy = rib_point(anatomy, side, d["rib"], d["u"])
        zone = zone or _zone_of(anatomy, side, fy)
    return Finding(obs, side, zone, severity, d)


def _zone_of(anatomy: AnatomyParams, side: str, y: float) -> str:
    bounds = anatomy.zone_bounds(side)
    for z in ("upper", "middle", "lower"):
        if bounds[z][0] <= y < bounds[z][1]:
            return z
    return "upper" if y < bounds["upper"][0] else "lower"


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------
@dataclass
class Layers:
    """Attenuation components of one radiograph (all [H, W] float32), combined by ``synthetic``.

    ``lung_air`` is the aerated fraction (subtracts soft tissue), ``markings`` the vessels,
    ``bone`` the skeleton, ``extra`` everything added on top (lesions, fluid, devices).
    ``lung_sdf`` holds each lung's envelope distance and ``lung`` its final occupancy.
    """

    x: np.ndarray
    y: np.ndarray
    px: float
    params: AnatomyParams
    heart: np.ndarray
    lung: dict[str, np.ndarray]
    lung_sdf: dict[str, np.ndarray]
    lung_air: np.ndarray
    markings: np.ndarray
    bone_extra: np.ndarray
    extra: np.ndarray


def _texture(shape: tuple[int, int], rng: np.random.Generator, cells: int = 12) -> np.ndarray:
    """Smooth random texture in [0, 1] (bilinear upsampling of a coarse random grid)."""
    h, w = shape
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    yi = np.linspace(0, cells, h, dtype=np.float32)
    xi = np.linspace(0, cells, w, dtype=np.float32)
    y0 = np.minimum(yi.astype(int), cells - 1)
    x0 = np.minimum(xi.astype(int), cells - 1)
    fy, fx = (yi - y0)[:, None], (xi - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) * (1 - fy) + b * fx * (1 - fy) + c * (1 - fx) * fy + d * fx * fy)


def _lung_hard(L: Layers, side: str) -> np.ndarray:
    return L.lung[side] > 0.5


def draw_pneumothorax(L: Layers, f: Finding) -> np.ndarray:
    """Lung retracts toward the hilum: a thin visceral pleural line, no markings beyond it."""
    p, s = L.params, side_sign(f.side)
    k = {"small": 0.80, "moderate": 0.72, "large": 0.56}[f.severity]
    hx, hy = hilum_point(p, f.side)
    cx, cy = hx, hy + 0.12
    if f.severity == "small":  # apical: the lateral gap tapers to nothing at hilar level
        taper = np.clip((cy - L.y) / (cy - p.apex_y), 0.0, 1.0) ** 0.8
    else:
        taper = np.ones_like(L.y)
    kx = 1.0 - (1.0 - k) * taper
    x2 = cx + (L.x - cx) / kx
    ky = np.where(L.y < cy, k, 1.0)  # collapse from the apex and the lateral wall, base stays
    y2 = cy + (L.y - cy) / ky
    phi_c = lung_envelope_sdf(p, x2, y2, f.side) * k
    in_lung = L.lung[f.side]
    space = in_lung * np.clip(0.5 + phi_c / L.px, 0.0, 1.0)  # pleural air outside the lung edge
    line = in_lung * np.clip(1.0 - np.abs(phi_c + 0.6 * L.px) / (0.9 * L.px), 0.0, 1.0)
    L.markings *= 1.0 - space
    L.lung_air += 0.45 * space
    L.extra += 0.38 * line
    return (in_lung > 0.0) & (phi_c > -1.5 * L.px) & ((s * L.x) > 0)


def draw_effusion(L: Layers, f: Finding) -> np.ndarray:
    """Dependent fluid with a meniscus (higher laterally) hiding the dome and blunting the angle."""
    p = L.params
    u = side_sign(f.side) * L.x
    cp = p.costophrenic(f.side)
    height = {"small": 0.19, "moderate": 0.40, "large": 0.64}[f.severity] * (cp - p.apex_y) / 1.1
    wall = lateral_wall(p, cp)
    meniscus = (0.10 + 0.18 * height) * np.clip(1.0 - u / wall, 0, 1) ** 1.6
    level = cp - height + meniscus  # [H, W] fluid surface
    occ = smoothstep(-0.015, 0.03, L.y - level)
    lung = L.lung[f.side]
    env = soft_inside(L.lung_sdf[f.side], L.px) * lung
    fluid = occ * env
    L.lung_air *= 1.0 - fluid
    L.markings *= 1.0 - fluid
    L.extra += 0.06 * fluid * smoothstep(0.0, 0.3, L.y - level)
    return (lung > 0.0) & (L.y > level - 0.015)


def _blob_sdf(L: Layers, cx: float, cy: float, a: float, b: float, rng: np.random.Generator,
              roughness: float) -> np.ndarray:
    theta = np.arctan2(L.y - cy, L.x - cx)
    wobble = sum(rng.uniform(0.3, 1.0) * np.sin(n * theta + rng.uniform(0, 2 * np.pi)) for n in (2, 3, 5))
    return ellipse_sdf(L.x, L.y, cx, cy, a, b) + roughness * min(a, b) * wobble / 3.0


def draw_consolidation(L: Layers, f: Finding, rng: np.random.Generator) -> np.ndarray:
    """Airspace opacity filling part of a zone, with air bronchograms and a fuzzy edge."""
    p, s = L.params, side_sign(f.side)
    y0, y1 = p.zone_bounds(f.side)[f.zone]
    y1 = min(y1, p.dome_peak(f.side))
    cy = 0.5 * (y0 + y1)
    wall = float(lateral_wall(p, cy))
    cx = s * 0.58 * wall
    phi = _blob_sdf(L, cx, cy, 0.30 * wall, 0.62 * (y1 - y0), rng, 0.25)
    lung = L.lung[f.side]
    occ = soft_inside(phi, 0.03) * lung
    mottle = 0.80 + 0.20 * _texture(L.x.shape, rng, 16)
    hx, hy = hilum_point(p, f.side)
    theta = np.arctan2(L.y - hy, L.x - hx)
    bronchi = np.clip(np.cos(theta * 9.0 + 2 * np.hypot(L.x - hx, L.y - hy)) * 4 - 3.2, 0, 1)
    density = 0.82 * mottle * (1.0 - 0.35 * bronchi)
    L.lung_air *= 1.0 - density * occ
    L.markings *= 1.0 - occ
    return (phi < 0.015) & (lung > 0.0)  # wherever the fuzzy edge reaches


def draw_lesion(L: Layers, f: Finding, rng: np.random.Generator) -> np.ndarray:
    """A round nodule (< 3 cm) or a lobulated mass (>= 3 cm): a dense sphere in projection."""
    cx, cy = f.detail["center"]
    r = f.detail["size_mm"] / 2 / MM_PER_UNIT
    rough = 0.18 if f.detail["kind"] == "mass" else 0.05
    phi = _blob_sdf(L, cx, cy, r, r * rng.uniform(0.85, 1.0), rng, rough)
    depth = np.sqrt(np.clip(-phi / r, 0, 1))
    edge = soft_inside(phi, L.px)
    L.extra += (0.42 + 0.4 * r) * np.maximum(depth, 0.35 * edge) * edge
    return phi < 0.5 * L.px


def draw_edema(L: Layers, f: Finding) -> np.ndarray:
    """Bilateral perihilar haze fading outward, with indistinct vessels (no change beyond it)."""
    p = L.params
    amount = {"mild": 0.38, "moderate": 0.52, "severe": 0.66}[f.severity]
    mask = np.zeros(L.x.shape, dtype=bool)
    for side in ("right", "left"):
        hx, hy = hilum_point(p, side)
        wall = float(lateral_wall(p, hy))
        dn = np.hypot((L.x - hx) / (0.62 * wall), (L.y - hy) / 0.42)  # normalised distance
        w = 1.0 - smoothstep(0.25, 1.0, dn)
        lung = L.lung[side]
        haze = amount * w * lung
        L.lung_air *= 1.0 - haze
        L.markings = L.markings * (1.0 - 0.4 * w * lung) + 0.35 * w * lung * amount
        mask |= (dn < 1.0) & (lung > 0.0)
    return mask


def draw_atelectasis(L: Layers, f: Finding, rng: np.random.Generator) -> np.ndarray:
    """Basal plate-like (discoid) atelectasis: a dense, slightly oblique band above the dome."""
    p, s = L.params, side_sign(f.side)
    u = s * L.x
    wall = float(lateral_wall(p, p.dome_peak(f.side)))
    u0, u1 = 0.25 * wall, 0.82 * wall
    tilt = rng.uniform(-0.12, 0.12)
    above = rng.uniform(0.05, 0.08)
    thick = 0.036 if f.severity == "mild" else 0.046
    centre = diaphragm_y(p, np.clip(u, u0, u1), f.side) - above + tilt * (u - 0.5 * (u0 + u1))
    phi_band = np.maximum(np.abs(L.y - centre) - thick / 2, np.maximum(u0 - u, u - u1))
    phi = phi_band
    if f.severity == "moderate":  # plus patchy basal opacity between the band and the dome
        phi_patch = np.maximum(centre - L.y, np.maximum(u0 + 0.08 - u, u - u1 + 0.06))
        phi = np.minimum(phi, phi_patch)
    lung = L.lung[f.side]
    band = soft_inside(phi_band, L.px) * lung
    occ = soft_inside(phi, L.px) * lung
    L.lung_air *= 1.0 - np.maximum(0.9 * band, 0.55 * occ)
    L.markings *= 1.0 - occ
    return (phi < 0.5 * L.px) & (lung > 0.0)


def _device_paths(p: AnatomyParams, f: Finding) -> list[tuple[str, np.ndarray | tuple, float, float]]:
    """(kind, geometry, half-width, attenuation) of every device piece, in phantom units."""
    cx, cy = carina_point(p)
    pieces: list = []
    devices = f.detail["devices"]
    if "endotracheal tube" in devices:
        tip = cy - f.detail["ett_tip_cm"] * 10 / MM_PER_UNIT
        pieces.append(("line", np.array([[cx, -1.3], [cx, tip]]), 0.012, 0.55))
    if "central venous catheter" in devices:
        svc_x = -(p.mediastinum_half_width - 0.015)
        tip_y = cy + 0.16
        if f.detail["line_route"] == "right subclavian":
            pts = [[-0.72, p.clavicle_y + 0.07], [-0.40, p.clavicle_y + 0.05],
                   [-0.18, p.clavicle_y + 0.06], [svc_x, p.clavicle_y + 0.12], [svc_x, tip_y]]
        else:
            pts = [[-0.14, -1.3], [-0.13, p.clavicle_y - 0.05], [svc_x, p.clavicle_y + 0.12], [svc_x, tip_y]]
        pieces.append(("line", np.array(pts), 0.0075, 0.8))
    if "pacemaker" in devices:
        g = heart_geometry(p, p.heart_ctr)
        bx, by = 0.52, p.clavicle_y + 0.16
        pieces.append(("box", (bx, by, 0.10, 0.075), 0.0, 1.6))
        apex = (g["cx"] + 0.55 * g["half_width"], g["cy"] + 0.10)
        lead = [[bx - 0.06, by], [0.16, p.clavicle_y + 0.05], [-0.05, p.clavicle_y + 0.12],
                [-0.06, cy + 0.18], [0.0, g["cy"]], [apex[0], apex[1]]]
        pieces.append(("line", np.array(lead), 0.0065, 0.9))
    return pieces


def draw_support_devices(L: Layers, f: Finding) -> np.ndarray:
    """Radio-opaque tubes, lines and a pacemaker generator (very bright, thin)."""
    mask = np.zeros(L.x.shape, dtype=bool)
    for kind, geom, half, att in _device_paths(L.params, f):
        if kind == "line":
            phi = polyline_distance(L.x, L.y, geom) - max(half, 0.45 * L.px)
        else:
            bx, by, hw, hh = geom
            q = np.maximum(np.abs(L.x - bx) - hw + 0.02, 0) ** 2 + np.maximum(np.abs(L.y - by) - hh + 0.02, 0) ** 2
            phi = np.sqrt(q) - 0.02
        L.extra += att * soft_inside(phi, L.px)
        mask |= phi < 0.5 * L.px
    return mask


def fracture_spec(f: Finding) -> dict:
    """Arguments for ``anatomy.rib_field``'s ``fractures`` list."""
    return {"side": f.side, "rib": f.detail["rib"], "u": f.detail["u"],
            "step": f.detail["step"], "gap": f.detail["gap"]}


def fracture_mask(L: Layers, f: Finding) -> np.ndarray:
    """The band around the break that the step and gap change (plus one pixel)."""
    return fracture_region(L.params, L.x, L.y, fracture_spec(f), margin=L.px)


def cardiomegaly_mask(L: Layers) -> np.ndarray:
    """The (enlarged) cardiac silhouette."""
    return L.heart > 0.5
