"""Support devices with their tips where they belong (Goodman, *Felson's Principles*; ACR
practice parameters for ICU films):

* endotracheal tube: in the trachea, its tip 3-7 cm above the carina (the radio-opaque stripe
  along the tube is what shows);
* central venous catheter (right internal jugular or right subclavian): down the superior vena
  cava, its tip in the lower SVC above the right atrium;
* pacemaker: generator in the left infraclavicular (pectoral) pocket; the lead runs through the
  left subclavian and brachiocephalic veins into the SVC, the right atrium, and ends in the
  right ventricle near the apex.

All are metal path lengths (cm) on the maps; geometry is anchored on the patient's normal
heart so a drawn cardiomegaly does not move the devices.
"""
from __future__ import annotations

import numpy as np

from xraygpt_lab.data.synthetic import anatomy as anat
from xraygpt_lab.data.synthetic.anatomy import AnatomyParams
from xraygpt_lab.data.synthetic.film import Maps
from xraygpt_lab.data.synthetic.geometry import MM_PER_UNIT, polyline_distance, soft_inside, tube_chord
from xraygpt_lab.data.synthetic.lesions import Finding
from xraygpt_lab.data.synthetic.signs import local


def device_paths(p: AnatomyParams, f: Finding) -> dict[str, np.ndarray]:
    """Polylines (phantom units) of each tube, line and lead, ending at its tip."""
    cx, cy = anat.carina_point(p)
    g = anat.heart_geometry(p, p.heart_ctr)
    svc_x = -(p.mediastinum_half_width - 0.035)
    cl = p.clavicle_y
    paths: dict[str, np.ndarray] = {}
    devices = f.detail["devices"]
    if "endotracheal tube" in devices:
        tip = cy - f.detail["ett_tip_cm"] * 10 / MM_PER_UNIT
        paths["endotracheal tube"] = np.array([[cx - 0.012, -1.3], [cx - 0.012, tip]])
    if "central venous catheter" in devices:
        tip_y = min(cy + 0.07, g["ra_cy"] - g["ra_b"] - 0.01)  # lower SVC, above the atrium
        if f.detail["line_route"] == "right subclavian":
            pts = [[-0.80, cl + 0.07], [-0.45, cl + 0.05], [-0.20, cl + 0.07], [svc_x, cl + 0.13], [svc_x, tip_y]]
        else:
            pts = [[-0.15, -1.3], [-0.14, cl - 0.04], [svc_x, cl + 0.12], [svc_x, tip_y]]
        paths["central venous catheter"] = np.array(pts)
    if "pacemaker" in devices:
        bx, by = generator_centre(p)
        t = np.deg2rad(g["tilt_deg"])
        apex = (g["cx"] + 0.55 * g["a"] * np.cos(t), g["cy"] + 0.55 * g["a"] * np.sin(t))  # RV apex
        paths["pacemaker lead"] = np.array([
            [bx - 0.07, by - 0.02], [0.18, cl + 0.07], [-0.02, cl + 0.12], [svc_x + 0.015, cy + 0.02],
            [g["ra_cx"] + 0.03, g["ra_cy"] - 0.02], [0.5 * (g["ra_cx"] + apex[0]), g["cy"] + 0.02], apex])
    return paths


def generator_centre(p: AnatomyParams) -> tuple[float, float]:
    """Centre of a pacemaker generator in the left infraclavicular pocket (image right)."""
    return 0.55 * p.thorax_half_width, p.clavicle_y + 0.15


#: (half-width of the radio-opaque part, metal depth in cm) of each line-like device.
_LINE_SPECS: dict[str, tuple[float, float]] = {
    "endotracheal tube": (0.005, 0.40),
    "central venous catheter": (0.006, 0.32),
    "pacemaker lead": (0.005, 0.40),
}


@local
def draw_support_devices(M: Maps, f: Finding) -> np.ndarray:
    """Metal of every device on the maps; returns the pixels within a pixel of any device."""
    p, x, y, px = M.extra["params"], M.extra["x"], M.extra["y"], M.extra["px"]
    mask = np.zeros(x.shape, dtype=bool)
    for name, path in device_paths(p, f).items():
        d = polyline_distance(x, y, path)
        half, depth = _LINE_SPECS[name]
        M.metal += tube_chord(d, half, depth, px).astype(np.float32)
        mask |= d < half + px
    if "pacemaker" in f.detail["devices"]:
        bx, by = generator_centre(p)
        hw, hh, rad = 0.10, 0.085, 0.03
        q = np.hypot(np.maximum(np.abs(x - bx) - hw + rad, 0), np.maximum(np.abs(y - by) - hh + rad, 0))
        phi = q - rad
        can = soft_inside(phi, px)
        header = soft_inside(np.maximum(np.abs(x - (bx - hw + 0.02)) - 0.02, np.abs(y - by) - 0.05), px)
        M.metal += (0.30 * can + 0.15 * header).astype(np.float32)
        mask |= phi < px
    return mask


def device_tips(p: AnatomyParams, f: Finding) -> dict[str, tuple[float, float]]:
    """Phantom (x, y) of each tube, line and lead tip."""
    return {name: tuple(map(float, path[-1])) for name, path in device_paths(p, f).items()}
