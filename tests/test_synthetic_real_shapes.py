"""Lung-field shapes from the real lung segmentations in the torchxrayvision wheel: used when the
table is cached, built-in (with a warning) otherwise; compared by nearest-neighbour IoU."""
from __future__ import annotations

import numpy as np
import pytest

from xraygpt_lab.data.synthetic import real_shapes
from xraygpt_lab.data.synthetic.anatomy import sample_anatomy
from xraygpt_lab.data.synthetic.world import WorldConfig, render_case

CACHED = real_shapes.masks_path().is_file()
needs_table = pytest.mark.skipif(not CACHED, reason=f"the wheel's lung masks are not cached at "
                                                    f"{real_shapes.masks_path()} (benchmarks/lung_shape_iou.py --download)")


def test_without_the_table_the_world_keeps_built_in_shapes_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAYGPT_LAB_CACHE", str(tmp_path))
    real_shapes.fitted_shapes.cache_clear()
    try:
        with pytest.warns(UserWarning, match="lung shapes: built-in"):
            case = render_case(3, 64, WorldConfig(lung_shapes="real"))
        assert np.array_equal(case.image, render_case(3, 64).image)
    finally:
        real_shapes.fitted_shapes.cache_clear()


def test_bad_lung_shapes_setting_is_rejected():
    with pytest.raises(ValueError, match="lung_shapes"):
        WorldConfig(lung_shapes="mine")


@pytest.fixture(scope="module")
def shapes():
    real = real_shapes.read_real_masks(real_shapes.masks_path())
    builtin, fitted = [], []
    for i in range(120):
        p = sample_anatomy(np.random.default_rng([i, 0]))
        builtin.append(real_shapes.synthetic_mask(p))
        real_shapes.apply_real_shape(p, np.random.default_rng([i, 6]))
        fitted.append(real_shapes.synthetic_mask(p))
    return real, np.array(builtin), np.array(fitted)


@needs_table
def test_real_shapes_change_the_lungs_deterministically():
    a = render_case(4, 64, WorldConfig(lung_shapes="real"))
    b = render_case(4, 64, WorldConfig(lung_shapes="real"))
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, render_case(4, 64).image)
    assert a.labels == render_case(4, 64).labels


@needs_table
def test_real_shapes_come_closer_to_real_lungs_than_built_in_ones(shapes):
    real, builtin, fitted = shapes
    assert real_shapes.nearest_iou(fitted, real).mean() > real_shapes.nearest_iou(builtin, real).mean() + 0.01


@needs_table
def test_synthetic_lungs_match_real_ones_as_well_as_real_ones_match_each_other(shapes):
    real, _, fitted = shapes
    assert real_shapes.nearest_iou(fitted, real).mean() >= real_shapes.nearest_iou(real, real, same=True).mean()


def test_a_fitted_shape_keeps_the_patients_size_and_inspiration():
    p = sample_anatomy(np.random.default_rng(5))
    before = (p.thorax_half_width, p.apex_y, p.inspiration, p.heart_ctr)
    shape = {k: 0.5 * (lo + hi) for k, (lo, hi) in real_shapes.SHAPE_RANGES.items()}
    real_shapes.shape_onto(p, shape)
    assert (p.thorax_half_width, p.apex_y, p.inspiration, p.heart_ctr) == before
    assert p.dome_power == shape["dome_power"]
    assert p.costophrenic("right") > p.dome_peak("right") > p.apex_y


def test_the_fit_recovers_a_parametric_shape():
    values = {k: lo + 0.4 * (hi - lo) for k, (lo, hi) in real_shapes.SHAPE_RANGES.items()}
    target = real_shapes.field_sdf(real_shapes.framed(np.array(list(values.values())))) < 0
    fit = real_shapes.fit_shapes(target[None], bank=200, evals=150, progress=False)[0]
    got = real_shapes.field_sdf(real_shapes.framed(np.array([fit[k] for k in real_shapes.SHAPE_FIELDS]))) < 0
    assert (got & target).sum() / (got | target).sum() > 0.95
