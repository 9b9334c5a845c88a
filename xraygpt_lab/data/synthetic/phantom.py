"""Assemble one patient's thorax as material path lengths (``film.Maps``) on the pixel grid.

Soft tissue of the body; two lungs whose depth the heart, great vessels, central mediastinum
and vertebral bodies take their share of; the pulmonary vessel tree; the trachea, main bronchi
and gastric bubble (air); breasts when present; the skeleton; a laterality marker. Findings
(``lesions``) then edit these maps, and ``film`` turns them into a radiograph.
"""
from __future__ import annotations

import numpy as np

from xraygpt_lab.data.synthetic import anatomy as anat
from xraygpt_lab.data.synthetic.anatomy import AnatomyParams
from xraygpt_lab.data.synthetic.film import Maps, marker_map
from xraygpt_lab.data.synthetic.geometry import (
    CM_PER_UNIT,
    clamp,
    ellipsoid_chord,
    segment_distance,
    smoothstep,
    tube_chord,
)
from xraygpt_lab.data.synthetic.skeleton import skeleton
from xraygpt_lab.data.synthetic.vessels import gravity, lung_trees, vessel_map


def airway_chord(params: AnatomyParams, x, y, pixel: float):
    """Air path length (cm) of the trachea (about 18 mm wide) and the main bronchi: the right one
    short and steep, the left one longer and more horizontal."""
    cx, cy = anat.carina_point(params)
    trachea = tube_chord(segment_distance(x, y, (cx, -1.3), (cx, cy)), 0.045, 2.2, pixel)
    right = tube_chord(segment_distance(x, y, (cx, cy), (cx - 0.10, cy + 0.10)), 0.030, 1.2, pixel)
    left = tube_chord(segment_distance(x, y, (cx, cy), (cx + 0.15, cy + 0.08)), 0.027, 1.1, pixel)
    return np.maximum(trachea, np.maximum(right, left))


def gastric_bubble_chord(params: AnatomyParams, x, y, pixel: float):
    """Air (cm) in the gastric fundus under the left hemidiaphragm."""
    r = params.gastric_bubble
    if r <= 0:
        return np.zeros_like(x)
    gy = params.dome_peak("left") + r + 0.035
    return ellipsoid_chord(x, y, 0.30, gy, 1.4 * r, r, 2 * r * CM_PER_UNIT * 0.8, 0.0, 0.5 * pixel)


def breast_chord(params: AnatomyParams, x, y):
    """Soft tissue (cm) of both breasts: over the lower zones, with a sharp curved lower edge
    (the inframammary fold) and a margin fading upwards."""
    if params.breasts <= 0:
        return np.zeros_like(x)
    u = np.abs(x)
    cy = params.dome_peak("right") - 0.12
    chord = ellipsoid_chord(u, y, 0.55 * params.thorax_half_width, cy, 0.30, 0.22, 5.0 * params.breasts)
    return chord * smoothstep(cy - 0.24, cy + 0.04, y)


def spine_cut(params: AnatomyParams, x, y):
    """Depth (cm) the vertebral bodies and paraspinal muscles occupy where no lung can be."""
    return 4.0 * clamp(1.0 - (x / 0.10) ** 2, 0.0, None) ** 0.5


def build_maps(params: AnatomyParams, size: int, ctr: float | None = None,
               fractures: list[dict] | None = None) -> Maps:
    """Material maps of this patient at ``size`` pixels; ``ctr`` overrides the heart size and
    ``fractures`` (see ``skeleton.posterior_ribs``) break ribs."""
    x, y = anat.coordinate_grid(params, size)  # [H, W] phantom coordinates
    px = anat.pixel_size(params, size)
    ctr = params.heart_ctr if ctr is None else ctr
    w, mw = params.thorax_half_width, params.mediastinum_half_width
    top, bottom = params.apex_y - 0.06, params.costophrenic("left") + 0.16
    body = anat.body_chord(params, x, y, px)
    for s in (-1.0, 1.0):
        body += anat.in_window(breast_chord, params, x, y, (s * 0.1 * w, s * (w + 0.4), -0.4, bottom))
    lung = np.zeros_like(x)
    phi = {}
    for side in anat.SIDES:
        s = anat.side_sign(side)
        box = (min(0.0, s * (w + 0.12)), max(0.0, s * (w + 0.12)), top, bottom)
        chord, phi[side] = anat.in_window(anat.lung_chord, params, x, y, box, side)
        phi[side][chord == 0] = np.maximum(phi[side][chord == 0], px)  # outside the window: outside
        lung += chord
    heart = heart_map(params, x, y, ctr, px)
    gv_box = (-mw - 0.12, mw + 0.12, params.clavicle_y - 0.15, params.dome_peak("left") + 0.12)
    vessels_gv = anat.in_window(anat.great_vessels_chord, params, x, y, gv_box, 0.5 * px)
    medi_w = 1.1 * max(mw + 0.06, *(float(np.max(h)) for h in anat.mediastinal_half_widths(params, np.linspace(-1.5, 1.5, 61))))
    medi = anat.in_window(anat.mediastinum_chord, params, x, y, (-medi_w, medi_w, -1.5, 1.5))
    cut_other = np.maximum(vessels_gv, medi)
    spine = anat.in_window(spine_cut, params, x, y, (-0.1, 0.1, -1.5, 1.5))
    cut = np.maximum(heart, cut_other) + spine
    trees = lung_trees(params)
    solid = vessel_map(params, trees, size, px, gravity(params))
    cx, cy = anat.carina_point(params)
    extra_air = anat.in_window(airway_chord, params, x, y, (-0.16, 0.22, -1.5, cy + 0.14), px)
    r = params.gastric_bubble
    bubble_box = (0.30 - 1.5 * r, 0.30 + 1.5 * r, params.dome_peak("left"), params.dome_peak("left") + 2.2 * r + 0.06)
    extra_air += anat.in_window(gastric_bubble_chord, params, x, y, bubble_box, px)
    bone = skeleton(params, x, y, px, fractures)
    maps = Maps(body=body.astype(np.float32), lung=lung.astype(np.float32), lung_cut=cut.astype(np.float32),
                air_frac=np.full_like(x, params.lung_air), solid=solid, fluid=np.zeros_like(x),
                extra_air=extra_air.astype(np.float32), cortical=bone.cortical, medullary=bone.medullary,
                metal=marker_map(params.marker, size), space=np.zeros_like(x))
    maps.extra.update(x=x, y=y, px=px, params=params, size=size, phi=phi, trees=trees,
                      heart=heart, ctr=ctr, vessels=solid.copy(), cut_other=cut_other, spine_cut=spine)
    return maps


def heart_box(params: AnatomyParams, ctr: float) -> tuple[float, float, float, float]:
    """Phantom box that holds the heart for ``ctr``."""
    g = anat.heart_geometry(params, ctr)
    bottom = 2 * g["cy"] - g["top"] + 0.05  # centre + half-height
    return -g["right"] - 0.04, g["left"] + 0.04, g["top"] - 0.05, bottom


def heart_map(params: AnatomyParams, x, y, ctr: float, pixel: float) -> np.ndarray:
    """Heart chord (cm) for ``ctr`` evaluated in the heart's box."""
    return anat.in_window(anat.heart_chord, params, x, y, heart_box(params, ctr), ctr, 0.5 * pixel)
