"""Knobs a learner can turn: ipywidgets controls that redraw one picture in place.

* :func:`world_knobs` — the synthetic world: patient (seed), one finding with its side and
  severity, inspiration, dose and view; redraws the film with the finding's outline.
* :func:`attribution_knobs` — an explanation: method, integration steps, baseline; redraws the
  overlay (``interpret.plots.overlay``) with the pointing-game verdict.
* :func:`generation_knobs` — decoding: temperature, top-p, length; rewrites the report.

Each returns a :class:`Knobs`. Displayed in a notebook it shows the controls, then the picture as
an ordinary output that each change replaces in place (``display_id``) — so a saved notebook, a
static viewer or a kernel-less JupyterLab still shows the last picture, and the controls say to
run the cell. Controls redraw when released (``continuous_update=False``). The drawing functions
are plain functions (``world_case``, ``draw_world``, ``explain_with``), tested without a browser.
"""
from __future__ import annotations

from dataclasses import replace
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..data.synthetic.anatomy import set_inspiration
from ..data.synthetic.lesions import ALLOWED_SIDES, DRAWABLE, SEVERITIES, Finding
from ..data.synthetic.world import render_case

#: Methods offered by :func:`attribution_knobs` (fast enough to redraw in seconds on a CPU).
KNOB_METHODS = ("ig", "smoothgrad", "occlusion", "saliency", "gradcam", "feature_ig")
KNOB_BASELINES = ("blur+black", "blur", "black", "mean")


def world_case(seed: int, finding: str = "none", side: str | None = None, severity: str | None = None,
               inspiration: float | None = None, exposure: float | None = None, view: str | None = None,
               size: int = 192):
    """The synthetic study of ``seed`` with one chosen finding (or none) and acquisition changes."""
    findings = [] if finding == "none" else [Finding(finding, side=side, severity=severity)]
    anatomy = render_case(seed, 32, findings=[]).anatomy  # this seed's patient and acquisition
    changes: dict[str, Any] = {}
    if exposure is not None:
        changes["exposure"] = float(exposure)
    if view is not None:
        changes["view"] = view
    anatomy = replace(anatomy, **changes)
    if inspiration is not None:
        set_inspiration(anatomy, float(inspiration))
    return render_case(seed, size, findings=findings, anatomy=anatomy)


def draw_world(ax, case) -> None:
    """The film with each finding's mask outlined and its report's summary as the title."""
    ax.imshow(case.image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for mask in case.masks.values():
        if np.any(mask):
            ax.contour(np.asarray(mask, float), levels=[0.5], colors="cyan", linewidths=1.0)
    ax.set_title("\n".join(_wrap(case.summary, 70)[:3]), fontsize=8)
    ax.axis("off")


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def _figure(width: float = 5.0, height: float = 5.4):
    import matplotlib.pyplot as plt

    from ..interpret.plots import DPI

    return plt.subplots(figsize=(width, height), dpi=DPI)


def _jpeg(fig) -> bytes:
    """The figure as JPEG bytes (radiographs: a fraction of PNG's size); closes it."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", dpi=fig.dpi, pil_kwargs={"quality": 80})
    plt.close(fig)
    return buffer.getvalue()


class Knobs:
    """Controls and the picture they redraw (see the module docstring).

    ``render()`` returns what to show for the current settings: JPEG bytes or text. ``refresh()``
    redraws the displayed picture in place; every control calls it when it changes.
    """

    HINT = "(sliders and menus: run this cell in Jupyter to turn them)"

    def __init__(self, controls: list, render: Callable[[], bytes | str]) -> None:
        import ipywidgets as w

        self.controls = controls
        self.box = w.VBox(controls)
        self.render = render
        self._handle: Any = None
        self._held = False
        for control in controls:
            control.observe(self.refresh, names="value")

    @contextmanager
    def hold(self) -> Iterator[None]:
        """No redraw while several controls change together (one redraw follows from the caller)."""
        self._held = True
        try:
            yield
        finally:
            self._held = False

    @staticmethod
    def _shown(value: bytes | str):
        from IPython.display import Image, Pretty

        return Image(data=value, format="jpeg") if isinstance(value, bytes) else Pretty(value)

    def refresh(self, *_: Any) -> None:
        if self._handle is None or self._held:
            return
        try:
            shown = self._shown(self.render())
        except (ValueError, RuntimeError) as exc:  # a setting the world or the model refuses: say so in place
            from IPython.display import Pretty

            shown = Pretty(f"could not draw this setting: {exc}")
        self._handle.update(shown)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        bundle = self.box._repr_mimebundle_()
        bundle["text/plain"] = self.HINT
        display(bundle, raw=True)
        self._handle = display(self._shown(self.render()), display_id=True)


def world_knobs(seed: int = 1, size: int = 192) -> Knobs:
    """Sliders and menus for one synthetic film."""
    import ipywidgets as w

    layout = {"continuous_update": False, "style": {"description_width": "110px"}}
    style = layout["style"]
    seed_w = w.IntSlider(value=seed, min=0, max=999, description="patient (seed)", **layout)
    finding_w = w.Dropdown(options=["none", *DRAWABLE], value="Pleural Effusion", description="finding", style=style)
    side_w = w.Dropdown(description="side", style=style)
    severity_w = w.Dropdown(description="severity", style=style)
    inspiration_w = w.FloatSlider(value=10.0, min=8.0, max=11.0, step=0.5, description="inspiration (rib)", **layout)
    exposure_w = w.FloatSlider(value=1.0, min=0.15, max=2.0, step=0.05, description="dose", **layout)
    view_w = w.ToggleButtons(options=["PA", "AP"], value="PA", description="view", style=style)

    def choices(*_: Any) -> None:
        obs = finding_w.value
        sides = [s for s in ALLOWED_SIDES.get(obs, (None,)) if s is not None]
        severities = list(SEVERITIES.get(obs, ()))
        with knobs.hold():  # the finding's own change redraws once, after this
            side_w.options, side_w.disabled = (sides or ["—"]), not sides
            severity_w.options, severity_w.disabled = (severities or ["—"]), not severities
            side_w.value, severity_w.value = side_w.options[0], severity_w.options[-1]  # shown, not blank

    def render() -> bytes:
        case = world_case(seed_w.value, finding_w.value, None if side_w.disabled else side_w.value,
                          None if severity_w.disabled else severity_w.value, inspiration_w.value,
                          exposure_w.value, view_w.value, size)
        fig, ax = _figure()
        draw_world(ax, case)
        fig.tight_layout()
        return _jpeg(fig)

    finding_w.observe(choices, names="value")  # before the redraw that Knobs registers
    knobs = Knobs([seed_w, finding_w, side_w, severity_w, inspiration_w, exposure_w, view_w], render)
    choices()
    return knobs


def explain_with(target, pixels, method: str, steps: int, baseline: str):
    """``interpret.attribution.explain`` with the knobs' settings (``blur+black``: two baselines, gated:
    the recommended IG)."""
    from ..interpret.attribution import RECOMMENDED_IG, explain

    kwargs: dict[str, Any] = {}
    names = baseline.split("+")
    if method == "ig":
        kwargs.update(RECOMMENDED_IG if baseline == "blur+black" else {"baseline": names[0], "smooth": 1.0})
        kwargs["n_steps"] = steps
    elif method in ("occlusion",):
        kwargs["baseline"] = names[0]
    elif method == "feature_ig":
        kwargs["n_steps"] = steps
        kwargs["baseline"] = names[-1]
    return explain(target, pixels, method, **kwargs)


def attribution_knobs(model: Any, case, phrase: str, answer: str, observation: str | None = None) -> Knobs:
    """Method, steps and baseline for explaining ``phrase`` in ``answer`` on ``case``'s film."""
    import ipywidgets as w

    from ..data.readers.images import preprocess
    from ..interpret.faithfulness import default_tolerance, pointing_hit
    from ..interpret.plots import overlay
    from ..interpret.targets import phrase_target

    size = model.encoder.config.image_size
    pixels = preprocess(case.image, size)[None].to(model.device)  # [1, 1, S, S]
    target = phrase_target(model, phrase, answer)
    mask = case.masks.get(observation) if observation else None
    style = {"description_width": "70px"}
    method_w = w.Dropdown(options=KNOB_METHODS, value="ig", description="method", style=style)
    steps_w = w.IntSlider(value=16, min=4, max=64, step=4, description="steps", continuous_update=False, style=style)
    baseline_w = w.Dropdown(options=KNOB_BASELINES, value="blur+black", description="baseline", style=style)

    def render() -> bytes:
        import torch

        torch.manual_seed(0)
        result = explain_with(target, pixels, method_w.value, steps_w.value, baseline_w.value)
        verdict = ""
        if mask is not None and np.any(mask):
            hit = pointing_hit(result.map, mask, default_tolerance(size))
            verdict = f" — peak {'on' if hit else 'off'} the finding"
        fig, ax = _figure(4.8, 4.8)
        overlay(ax, case.image, result, title=f"{method_w.value}: {phrase!r}{verdict}", mask=mask)
        fig.tight_layout()
        return _jpeg(fig)

    return Knobs([method_w, steps_w, baseline_w], render)


def generation_knobs(model: Any, pixels, instruction: str = "Describe the given chest x-ray image in detail.") -> Knobs:
    """Temperature, top-p and length for one image's report (``pixels`` ``[1, C, S, S]``)."""
    import ipywidgets as w
    import torch

    style = {"description_width": "90px"}
    temperature_w = w.FloatSlider(value=0.0, min=0.0, max=1.5, step=0.1, description="temperature",
                                  continuous_update=False, style=style)
    top_p_w = w.FloatSlider(value=0.9, min=0.1, max=1.0, step=0.05, description="top-p", continuous_update=False,
                            style=style)
    length_w = w.IntSlider(value=96, min=16, max=160, step=16, description="max tokens", continuous_update=False,
                           style=style)
    seed_w = w.IntSlider(value=0, min=0, max=9, description="sample seed", continuous_update=False, style=style)

    def render() -> str:
        torch.manual_seed(seed_w.value)
        sample = temperature_w.value > 0
        kwargs = {"do_sample": True, "temperature": temperature_w.value, "top_p": top_p_w.value} if sample else {}
        text = model.describe(pixels.to(model.device), instruction=instruction, max_new_tokens=length_w.value,
                              **kwargs)[0]
        mode = (f"sampled, temperature {temperature_w.value:.1f}, top-p {top_p_w.value:.2f}, seed {seed_w.value}"
                if sample else "greedy (temperature 0)")
        return f"[{mode}]\n" + "\n".join(_wrap(text, 90))

    return Knobs([temperature_w, top_p_w, length_w, seed_w], render)


__all__ = ["Knobs", "attribution_knobs", "draw_world", "explain_with", "generation_knobs", "world_case", "world_knobs"]
