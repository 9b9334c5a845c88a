"""Findings of the synthetic world: what each CheXpert observation looks like and where it is.

A :class:`Finding` names one positive observation (exact CheXpert name) with its side (the
PATIENT's side), zone, severity and details. :func:`complete_finding` fills whatever the caller
left out from a seeded generator, so a finding can be given loosely (``Finding("Pleural
Effusion", side="left")``) and still render the same way every time.

How each finding is drawn (the textbook sign it shows) is in ``signs``; nodule and mass sizes
are in millimetres at the patient (``anatomy.pixel_spacing_mm`` gives the film's pixel size).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xraygpt_lab.data.synthetic.anatomy import (
    MM_PER_UNIT,
    AnatomyParams,
    lateral_wall,
    side_sign,
)
from xraygpt_lab.data.synthetic.skeleton import rib_point
from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS

#: Drawn nodule (<= 30 mm) and mass (> 30 mm) diameters (Fleischner glossary). Nodules start at
#: 15 mm: smaller ones hardly change the 128-px film (a 12 mm nodule's peak change is 0.08, below
#: what a reader or the encoder finds), as on real films, where nodules under about 1 cm are
#: seldom seen; the NIH ChestX-ray14 nodule boxes span 16-30 mm.
LESION_MM: dict[str, tuple[int, int]] = {"nodule": (15, 30), "mass": (31, 60)}
#: Thickness and length (mm, [low, high)) of the extrapleural hematoma drawn beside an acute rib
#: fracture: the lenticular soft-tissue opacity along the chest wall that makes a displaced
#: fracture conspicuous on a chest film (the break alone changes some 40 pixels by under 0.12).
HEMATOMA_THICK_MM: tuple[int, int] = (8, 15)
HEMATOMA_LENGTH_MM: tuple[int, int] = (45, 76)

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
    "mild": (0.55, 0.59), "moderate": (0.59, 0.64), "severe": (0.64, 0.70),
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
        if "size_mm" not in d:
            lo, hi = LESION_MM[kind]
            d["size_mm"] = int(round(float(np.exp(rng.uniform(np.log(lo), np.log(hi + 0.49))))))
        if "center" not in d:
            d["center"] = _lesion_centre(anatomy, side, zone, d["size_mm"] / 2 / MM_PER_UNIT, rng)
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
        _, ry = rib_point(anatomy, side, d["rib"], 0.6 * anatomy.thorax_half_width)
        wall = float(lateral_wall(anatomy, ry))
        d.setdefault("u", round(float(rng.uniform(wall - 0.26, wall - 0.16)), 4))
        d.setdefault("step", round(float(rng.uniform(0.50, 0.65) * anatomy.rib_spacing), 4))
        d.setdefault("gap", round(float(rng.uniform(0.045, 0.065)), 4))  # a displaced fracture, 9-13 mm
        # the extrapleural hematoma beside the break: thickness and length along the wall (mm)
        d.setdefault("hematoma_mm", int(rng.integers(*HEMATOMA_THICK_MM)))
        d.setdefault("hematoma_length_mm", int(rng.integers(*HEMATOMA_LENGTH_MM)))
        _, fy = rib_point(anatomy, side, d["rib"], d["u"])
        zone = zone or zone_of(anatomy, side, fy)
    return Finding(obs, side, zone, severity, d)


def _lesion_centre(anatomy: AnatomyParams, side: str, zone: str, r: float,
                   rng: np.random.Generator) -> list[float]:
    """A point of ``zone`` inside the visible lung, clear of the heart, mediastinum and pleura
    by more than the lesion's radius ``r`` (the first of 64 seeded candidates that fits)."""
    from xraygpt_lab.data.synthetic.anatomy import heart_sdf, lung_envelope_sdf

    y0, y1 = anatomy.zone_bounds(side)[zone]
    y1 = min(y1, anatomy.dome_peak(side) - r - 0.03)
    y0 = max(y0, anatomy.apex_y + 0.10 + r)
    cy = rng.uniform(y0, max(y0 + 1e-3, y1), 64)
    cu = rng.uniform(0.15, 1.0, 64) * lateral_wall(anatomy, cy)
    cx = side_sign(side) * cu
    ok = ((lung_envelope_sdf(anatomy, cx, cy, side) < -(r + 0.04))
          & (heart_sdf(anatomy, cx, cy, anatomy.heart_ctr) > r + 0.04)
          & (cu > anatomy.mediastinum_half_width + r + 0.05))
    i = int(np.argmax(ok)) if ok.any() else int(np.argmin(lung_envelope_sdf(anatomy, cx, cy, side)))
    return [round(float(cx[i]), 4), round(float(cy[i]), 4)]


def zone_of(anatomy: AnatomyParams, side: str, y: float) -> str:
    """The lung zone (upper, middle or lower third) at height ``y`` on ``side``."""
    bounds = anatomy.zone_bounds(side)
    for z in ("upper", "middle", "lower"):
        if bounds[z][0] <= y < bounds[z][1]:
            return z
    return "upper" if y < bounds["upper"][0] else "lower"


