"""``widgets.knobs``: turning a control redraws the picture with that setting."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from xraygpt_lab.widgets.knobs import world_case, world_knobs  # noqa: E402


def test_world_case_applies_each_knob_to_the_film() -> None:
    base = world_case(3, "none", size=96)
    effusion = world_case(3, "Pleural Effusion", "left", "large", size=96)
    assert effusion.labels["Pleural Effusion"] == 1 and effusion.masks["Pleural Effusion"].any()
    assert base.labels["No Finding"] == 1 and "pleural effusion" in effusion.summary.lower()
    changed = ~np.isclose(base.image, effusion.image, atol=1e-3)
    mask = effusion.masks["Pleural Effusion"]
    assert changed[mask].mean() > 0.5 > changed[~mask].mean()  # the finding changes its own region
    low_dose = world_case(3, "none", exposure=0.15, size=96)
    assert np.std(np.diff(low_dose.image, axis=1)) > np.std(np.diff(base.image, axis=1))  # more quantum noise
    poor = world_case(3, "none", inspiration=8.0, size=96)
    assert poor.anatomy.inspiration == 8.0 and poor.anatomy.costophrenic_y < base.anatomy.costophrenic_y
    assert world_case(3, "none", view="AP", size=96).anatomy.view == "AP"


def test_world_knobs_redraw_once_per_change_with_consistent_settings() -> None:
    pytest.importorskip("ipywidgets")
    knobs = world_knobs(seed=2, size=64)
    seed, finding, side, severity = knobs.controls[:4]
    assert finding.value == "Pleural Effusion" and set(side.options) == {"left", "right"}
    picture = knobs.render()
    assert picture[:2] == b"\xff\xd8"  # a JPEG
    drawn = []
    knobs._handle = type("Handle", (), {"update": lambda self, shown: drawn.append(shown)})()  # as if displayed
    finding.value = "Cardiomegaly"  # no side, its own severities: one redraw, never an invalid mix
    assert side.disabled and list(severity.options) == ["mild", "moderate", "severe"] and len(drawn) == 1
    assert severity.value == "severe"  # a value is always selected, never a blank menu
    finding.value = "Support Devices"
    assert side.disabled and severity.disabled and len(drawn) == 2
    seed.value = 5
    assert len(drawn) == 3 and drawn[-1].data != picture  # another patient, another film
    assert "run this cell" in knobs.HINT


def test_a_refused_setting_is_said_in_place_of_the_picture() -> None:
    pytest.importorskip("ipywidgets")
    import ipywidgets as w

    from xraygpt_lab.widgets.knobs import Knobs

    def render() -> str:
        raise ValueError("severity must be one of ['small', 'moderate', 'large']")

    slider = w.IntSlider()
    knobs = Knobs([slider], render)
    shown = []
    knobs._handle = type("Handle", (), {"update": lambda self, value: shown.append(value)})()
    slider.value = 3
    assert "could not draw this setting: severity must be" in shown[-1].data
