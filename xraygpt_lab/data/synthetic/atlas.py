"""An atlas of textbook signs: each finding beside its normal twin, with where to look.

:func:`sign_examples` renders one patient without and with each finding and names the sign a
radiologist would point at (Felson's *Principles of Chest Roentgenology*), with its pixel
position on the film, for notebook 00's annotated figure. Positions come from the finding's
own geometry and mask; the figure only draws them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xraygpt_lab.data.synthetic import anatomy as anat
from xraygpt_lab.data.synthetic.devices import device_tips, generator_centre
from xraygpt_lab.data.synthetic.lesions import Finding
from xraygpt_lab.data.synthetic.measure import cardiothoracic_ratio
from xraygpt_lab.data.synthetic.world import SyntheticCase, render_case

#: The findings of the atlas, one textbook example each.
ATLAS: tuple[Finding, ...] = (
    Finding("Pleural Effusion", side="left", severity="moderate"),
    Finding("Pneumothorax", side="right", severity="moderate"),
    Finding("Consolidation", side="right", zone="middle"),
    Finding("Consolidation", side="left", zone="lower"),
    Finding("Atelectasis", side="left", severity="moderate"),
    Finding("Edema", severity="moderate"),
    Finding("Cardiomegaly", severity="moderate"),
    Finding("Lung Lesion", side="left", zone="upper", detail={"kind": "mass", "size_mm": 45}),
    Finding("Lung Lesion", side="right", zone="middle", detail={"kind": "nodule", "size_mm": 16}),
    Finding("Fracture", side="right"),
    Finding("Support Devices", detail={"devices": ["endotracheal tube", "central venous catheter", "pacemaker"]}),
)


@dataclass
class SignExample:
    """A finding, its twin without it, and the signs to point at: ``(label, row, column)``."""

    case: SyntheticCase
    twin: SyntheticCase
    signs: list[tuple[str, float, float]]


def _px(case: SyntheticCase, x: float, y: float) -> tuple[float, float]:
    c, r = anat.phantom_to_pixel(case.anatomy, case.image.shape[0], np.array(x), np.array(y))
    return float(r), float(c)


def _mask_point(case: SyntheticCase, obs: str, where: str = "centre") -> tuple[float, float]:
    rows, cols = np.nonzero(case.masks[obs])
    if where == "top":
        i = int(np.argmin(rows))
        return float(rows[i]), float(cols[i])
    return float(rows.mean()), float(cols.mean())


def _signs(case: SyntheticCase, f: Finding) -> list[tuple[str, float, float]]:
    p, obs = case.anatomy, f.observation
    s = anat.side_sign(f.side) if f.side in ("left", "right") else 1
    if obs == "Pleural Effusion":
        cp = p.costophrenic(f.side)
        wall = float(anat.lateral_wall(p, cp))
        rows = np.nonzero(case.masks[obs][:, int(round(_px(case, s * 0.9 * wall, cp)[1]))])[0]
        return [("meniscus, higher laterally", float(rows.min()), _px(case, s * 0.9 * wall, cp)[1]),
                ("blunted costophrenic angle", *_px(case, s * (wall - 0.04), cp - 0.03))]
    if obs == "Pneumothorax":
        hx, hy = anat.hilum_point(p, f.side)
        r = _px(case, 0.0, hy - 0.12)[0]
        cols = np.nonzero(case.masks[obs][int(round(r))])[0]
        edge = cols.min() if s > 0 else cols.max()  # the medial end of the pleural air
        return [("visceral pleural line; no markings beyond", r, float(edge))]
    if obs == "Consolidation":
        g = anat.heart_geometry(p, p.heart_ctr)
        if f.zone == "middle":
            border = g["left"] if f.side == "left" else g["right"]
            return [("silhouette sign: heart border lost", *_px(case, s * border, g["cy"])),
                    ("air bronchograms", *_mask_point(case, obs))]
        return [("silhouette sign: dome lost", *_px(case, s * 0.6 * anat.lateral_wall(p, p.dome_peak(f.side)), p.dome_peak(f.side))),
                ("air-space opacity", *_mask_point(case, obs))]
    if obs == "Atelectasis":
        wall = float(anat.lateral_wall(p, p.dome_peak(f.side)))
        return [("raised hemidiaphragm (volume loss)", *_px(case, s * 0.75 * wall, p.dome_peak(f.side))),
                ("plate-like band", *_px(case, s * 0.55 * wall, p.dome_peak(f.side) - 0.1))]
    if obs == "Edema":
        hx, hy = anat.hilum_point(p, "right")
        cp = p.costophrenic("left")
        wall = float(anat.lateral_wall(p, cp - 0.15))
        return [("perihilar bat-wing", *_px(case, hx - 0.1, hy)),
                ("Kerley B lines", *_px(case, wall - 0.04, cp - 0.15))]
    if obs == "Cardiomegaly":
        ctr = cardiothoracic_ratio(case.image).ctr
        g = anat.heart_geometry(p, f.detail["ctr"])
        return [(f"CTR {ctr:.2f} on the film (> 0.5)", *_px(case, g["left"], g["cy"]))]
    if obs == "Lung Lesion":
        kind, size = f.detail["kind"], f.detail["size_mm"]
        return [(f"{size} mm {kind}, round, soft edge", *_mask_point(case, obs))]
    if obs == "Fracture":
        from xraygpt_lab.data.synthetic.skeleton import rib_point

        bx, by = rib_point(p, f.side, f.detail["rib"], f.detail["u"])
        wall = float(anat.lateral_wall(p, by)) * anat.side_sign(f.side)
        return [("cortical step and gap", *_px(case, bx, by)), ("extrapleural hematoma", *_px(case, wall, by))]
    tips = device_tips(p, f)
    out = [("ETT tip above the carina", *_px(case, *tips["endotracheal tube"]))] if "endotracheal tube" in tips else []
    if "central venous catheter" in tips:
        out.append(("line tip in the SVC", *_px(case, *tips["central venous catheter"])))
    if "pacemaker lead" in tips:
        out += [("pacemaker, left infraclavicular", *_px(case, *generator_centre(p))),
                ("lead tip in the RV", *_px(case, *tips["pacemaker lead"]))]
    return out


def landmarks(case: SyntheticCase) -> dict[str, tuple[float, float]]:
    """(row, column) of the structures a first reading names, on ``case``'s film."""
    p = case.anatomy
    g = anat.heart_geometry(p, p.heart_ctr)
    kx, ky, _ = anat.aortic_knob(p)
    cx, cy = anat.carina_point(p)
    w = p.thorax_half_width
    names = {
        "trachea": (cx, cy - 0.2), "aortic knob": (kx + 0.02, ky), "left clavicle": (0.45 * w, p.clavicle_y - 0.05),
        "right lung\n(patient)": (-0.55 * w, p.apex_y + 0.45), "left lung\n(patient)": (0.55 * w, p.apex_y + 0.45),
        "heart": (0.5 * (g["left"] - g["right"]), g["cy"]), "right dome": (-0.45 * w, p.dome_peak("right") + 0.08),
        "left dome": (0.45 * w, p.dome_peak("left") + 0.08), "spine": (0.0, p.dome_peak("right") + 0.3),
    }
    return {name: _px(case, x, y) for name, (x, y) in names.items()}


def sign_examples(seed: int = 2, size: int = 256, findings: tuple[Finding, ...] = ATLAS) -> list[SignExample]:
    """Patient ``seed`` without and with each finding, and the signs to point at."""
    twin = render_case(seed, size, findings=[])
    out = []
    for f in findings:
        case = render_case(seed, size, findings=[f])
        done = case.finding(f.observation)
        out.append(SignExample(case, twin, _signs(case, done) if done else []))
    return out
