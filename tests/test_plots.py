"""``interpret.plots``: the one overlay shows positive evidence a reader can see."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from xraygpt_lab.interpret.plots import DPI, evidence_scale, overlay  # noqa: E402


def test_one_extreme_pixel_does_not_hide_the_rest_of_the_map() -> None:
    rng = np.random.default_rng(0)
    values = np.zeros((64, 64))
    values[20:40, 10:30] = 1.0 + 0.1 * rng.random((20, 20))  # the evidence
    values[0, 0] = 1e4  # one outlier, as gradients produce
    values[50:, 50:] = -5.0  # negative evidence is not drawn
    scaled, top = evidence_scale(values)
    assert scaled.shape == values.shape and 0.0 <= scaled.min() and scaled.max() <= 1.0
    assert scaled[20:40, 10:30].mean() > 0.8  # visible, not crushed to 1e-4 by the outlier
    assert top < 10 and (scaled[50:, 50:] == 0).all()
    assert evidence_scale(-np.ones((4, 4)))[1] == 0.0  # nothing positive: nothing drawn


def _rendered(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)  # [H, W, 3]


def test_overlay_keeps_the_film_visible_and_outlines_the_mask() -> None:
    image = np.tile(np.linspace(0.2, 0.8, 64), (64, 1))  # [64, 64] a grey ramp
    values = np.zeros((64, 64))
    values[30:34, 30:34] = 1.0
    mask = np.zeros((64, 64), bool)
    mask[28:36, 28:36] = True
    fig, ax = plt.subplots(figsize=(3, 3), dpi=DPI)
    heat = overlay(ax, image, values, title="test", mask=mask)
    assert len(fig.axes) == 2 and "positive evidence" in fig.axes[1].get_ylabel()  # the colour bar, labelled
    rgba = heat.get_array()
    assert rgba.shape == (64, 64, 4) and rgba[0, 0, 3] == 0 and rgba[31, 31, 3] > 0.5  # cold pixels transparent
    assert ax.collections, "the mask outline is drawn"
    pixels = _rendered(fig)
    assert np.ptp(pixels) > 100  # the grey film is visible beneath the map
    plt.close(fig)


def test_overlay_rejects_a_map_of_another_shape() -> None:
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="differ"):
        overlay(ax, np.zeros((8, 8)), np.zeros((4, 4)))
    plt.close(fig)


def test_a_huge_film_is_drawn_from_a_reduced_copy_with_the_true_peak():
    """A 3,000-pixel film is drawn from block-reduced arrays of at most MAX_DRAWN pixels a side, in
    the film's own coordinates; the cross marks the full-resolution map's peak."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xraygpt_lab.interpret.plots import MAX_DRAWN, overlay

    rng = np.random.default_rng(0)
    image = rng.random((3000, 2000), dtype=np.float32)  # [H, W]
    values = np.zeros_like(image)
    values[2100, 1700] = 5.0  # one hot pixel: a block mean would dilute it, a block max keeps it
    mask = np.zeros(image.shape, dtype=bool)
    mask[2000:2200, 1600:1800] = True
    fig, ax = plt.subplots()
    try:
        overlay(ax, image, values, mask=mask)
        drawn = [im.get_array().shape[:2] for im in ax.images]
        assert all(max(shape) <= MAX_DRAWN for shape in drawn), drawn
        assert all(im.get_extent() == [-0.5, 1999.5, 2999.5, -0.5] for im in ax.images)
        heat = ax.images[1].get_array()  # [h, w, 4] RGBA
        r, c = np.unravel_index(int(np.argmax(heat[..., 3])), heat.shape[:2])
        step = (-(-3000 // MAX_DRAWN), -(-2000 // MAX_DRAWN))
        assert (r, c) == (2100 // step[0], 1700 // step[1])
        cross = ax.lines[-1].get_xydata()[0]
        assert tuple(cross) == (1700, 2100)
    finally:
        plt.close(fig)

    fig, ax = plt.subplots()  # a thin strip with a mask: reduced along its long side only
    try:
        strip = rng.random((2, 3000), dtype=np.float32)
        overlay(ax, strip, strip, mask=strip > 0.5)
        assert ax.images[0].get_array().shape == (2, 1000)
    finally:
        plt.close(fig)
