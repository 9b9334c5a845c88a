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
    ellipsoid_chord,
    segment_distance,
    smoothstep,
    soft_inside,
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
    return 5.0 * np.clip(1.0 - (x / 0.10) ** 2, 0.0, None) ** 0.5


def build_maps(params: AnatomyParams, size: int, ctr: float | None = None,
               fractures: list[dict] | None = None) -> Maps:
    """Material maps of this patient at ``size`` pixels; ``ctr`` overrides the heart size and
    ``fractures`` (see ``skeleton.posterior_ribs``) break ribs."""
    x, y = anat.coordinate_grid(params, size)  # [H, W] phantom coordinates
    px = anat.pixel_size(params, size)
    ctr = params.heart_ctr if ctr is None else ctr
    body = anat.body_chord(params, x, y, px) + breast_chord(params, x, y)
    lung = np.zeros_like(x)
    phi = {}
    for side in anat.SIDES:
        chord, phi[side] = anat.lung_chord(params, x, y, side)
        lung += chord
    heart = anat.heart_chord(params, x, y, ctr, edge=0.5 * px)
    vessels_gv = anat.great_vessels_chord(params, x, y, edge=0.5 * px)
    cut_other = np.maximum(vessels_gv, anat.mediastinum_chord(params, x, y))
    spine = spine_cut(params, x, y)
    cut = np.maximum(heart, cut_other) + spine
    trees = lung_trees(params)
    solid = vessel_map(params, trees, size, px, gravity(params))
    extra_air = airway_chord(params, x, y, px) + gastric_bubble_chord(params, x, y, px)
    bone = skeleton(params, x, y, px, fractures)
    maps = Maps(body=body.astype(np.float32), lung=lung.astype(np.float32), lung_cut=cut.astype(np.float32),
                air_frac=np.full_like(x, params.lung_air), solid=solid, fluid=np.zeros_like(x),
                extra_air=extra_air.astype(np.float32), cortical=bone.cortical, medullary=bone.medullary,
                metal=marker_map(params.marker, size), space=np.zeros_like(x))
    aer = maps.aerated()
    field = {side: soft_inside(phi[side], px) * np.clip(aer / 4.0, 0.0, 1.0) for side in anat.SIDES}
    maps.extra.update(x=x, y=y, px=px, params=params, size=size, phi=phi, field=field, trees=trees,
                      heart=heart, ctr=ctr, vessels=solid.copy(), cut_other=cut_other, spine_cut=spine)
    return maps


def lung_field(maps: Maps, side: str) -> np.ndarray:
    """Visible lung on ``side`` in [0, 1]: inside the outline with at least 4 cm of lung left
    after the heart and mediastinum."""
    return maps.extra["field"][side]
