"""Attributions over radiographs with Captum: which pixels (or image tokens) raise a target.

A *target* (``interpret.targets``) maps pixels ``[B, C, S, S]`` to one number per image: the
log-probability of an answer or of one phrase in it, or a zero-shot score. :func:`attribute` runs
one Captum method on it and returns an :class:`AttributionMap` at the model's input resolution.
The same code serves the tiny model (MedCLIP's grey ``C = 1``, a Swin encoder) and the released
XrayGPT (BLIP-2's RGB ``C = 3``, EVA ViT + Q-Former): what differs is asked of the model (its
pixel space, ``encoder.token_grid_layer()``, ``encoder.feature_layer()``, ``interpret.stacks``).
Pixel maps sum the channels (attributions are additive; occlusion's per-channel copies are
averaged).

=================  =================================================  ====================
method             Captum class (reference)                           resolution
=================  =================================================  ====================
``ig``             IntegratedGradients (Sundararajan et al. 2017)     pixel
``smoothgrad``     NoiseTunnel(Saliency) (Smilkov et al. 2017)        pixel
``occlusion``      Occlusion (Zeiler & Fergus 2014)                   window / stride
``saliency``       Saliency, |∂y/∂x| (Simonyan et al. 2014)           pixel
``gradientshap``   GradientShap (Lundberg & Lee 2017)                 pixel
``gradcam``        LayerGradCam (Selvaraju et al. 2017) on the        token grid
                   encoder's token grid: the last Swin stage, or the
                   last ViT block the Q-Former reads
``layer_ig``       LayerIntegratedGradients on the projection output  token grid (Swin) /
                   (the image embeddings the LLM reads), per image    patch grid (queries
                   token; query tokens spread by their cross-attention placed by attention)
``feature_ig``     LayerIntegratedGradients on an early feature map   feature map: stride
                   (``encoder.feature_layer``), summed over channels  4 (Swin) / patch (ViT)
=================  =================================================  ====================

Baselines (``interpret.maps``, Sturmfels et al. 2020) are chosen with ``baseline=`` and always
named in the result: ``"black"``, ``"mean"``, ``"blur"`` (the default), a grey level in ``[0, 1]``
or a tensor in normalised units. IG also takes a *list* of baselines and averages its
attributions over them (a two-point version of expected gradients, Erion et al. 2021; Sturmfels
et al. 2020, Sec. "averaging over multiple baselines"): each baseline hides what it shares with
the image — a blurred copy still holds a large effusion, a black image still holds nothing
bright — so the average credits both kinds of finding. ``smooth=σ`` blurs the final map with a
Gaussian of σ px (a map's single-pixel maximum is noise).

``gate=True`` multiplies the IG pixel map by the positive part of ``feature_ig`` (black
baseline), upsampled, at each stride of ``gate_strides`` (default 4 and 8): pixels count only
where the encoder's features at both scales also support the target. This is how Guided Grad-CAM
combines a fine map with a coarse one (Selvaraju et al. 2017, Sec. 3.1: guided backpropagation ⊙
Grad-CAM). Pixel IG alone peaks on bright or sharp anatomy that the baselines remove too (the
mediastinum, rib edges); a feature map alone is coarser; the stride-8 factor removes stride-4
peaks on the wrong side of the chest. On the tiny run the product points best
(``RECOMMENDED_IG``; numbers in ``docs/design-notes.md``). Strides that resolve to the same layer
count once: Swin's own patch embedding has a single early map, and so has a ViT (its patch
embedding, stride 14 on the released model), so there the gate is one factor.

Every method accepts ``internal_batch_size`` (Captum's chunking of the steps, noise samples or
occluded copies), so memory stays bounded on a 7B model.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.readers.images import PixelSpace
from .attention import ENCODER_METHODS, attention_explanation, encoder_explanation
from .hooks import TokenGrid, token_grid  # noqa: F401  (re-exported: Grad-CAM's grid)
from .maps import (BASELINES, AttributionMap, gaussian_blur, make_baseline, pixel_space_of,  # noqa: F401
                   upsample_grid)
from .stacks import vision_stack
from .targets import target_device

Target = Callable[[torch.Tensor], torch.Tensor]

METHODS: tuple[str, ...] = ("ig", "smoothgrad", "occlusion", "saliency", "gradientshap", "gradcam", "layer_ig",
                             "feature_ig")
#: IG settings that point best on the tiny run (``benchmarks/faithfulness.py``, docs/design-notes.md): averaged
#: over a blurred and a black baseline, gated by the early-feature IG, map smoothed by 1 px. Used by
#: the benchmark, the ``explain`` CLI and the chat panel.
RECOMMENDED_IG: dict = {"baseline": ("blur", "black"), "gate": True, "smooth": 1.0}
#: Baseline of ``feature_ig`` and of the gate: in feature space the black image's features (an
#: empty film) beat the blurred image's (docs/design-notes.md).
FEATURE_BASELINE = "black"
#: Feature-map strides whose feature IG gates the recommended IG (``attribute(..., gate=True)``).
GATE_STRIDES: tuple[int, ...] = (4, 8)
#: Attention map kinds every model supports (``interpret.attention``).
ATTENTION_METHODS: tuple[str, ...] = ("attention", "rollout", "grad_rollout")
#: Every map kind both the tiny and the released model support: Captum methods + attention maps.
ALL_METHODS: tuple[str, ...] = METHODS + ATTENTION_METHODS
#: Map kinds only a Q-Former has (the released XrayGPT): its cross-attention, rolled out.
QUERY_METHODS: tuple[str, ...] = ("cross_attention",)
#: Everything :func:`explain` accepts.
MAP_KINDS: tuple[str, ...] = ALL_METHODS + QUERY_METHODS


def map_kinds(model: nn.Module) -> tuple[str, ...]:
    """The map kinds :func:`explain` can draw for ``model`` (its encoder decides)."""
    return MAP_KINDS if hasattr(model.encoder, "query_tokens") else ALL_METHODS


@dataclass
class _Job:
    """One :func:`attribute` call: the target, its pixels on its device, their pixel space, the settings."""

    target: Target
    pixels: torch.Tensor  # [B, C, S, S]
    space: PixelSpace
    baseline: str | float | torch.Tensor | list | tuple
    n_steps: int
    internal_batch_size: int | None
    nt_samples: int
    nt_stdev: float
    occlusion_window: int | None
    occlusion_stride: int | None
    shap_samples: int
    ig_method: str
    gate: bool
    gate_steps: int
    gate_strides: tuple[int, ...]
    feature_stride: int

    def base(self, baseline=None) -> tuple[torch.Tensor, str]:
        """A baseline for these pixels (default: the job's) and its name."""
        return make_baseline(self.pixels, self.baseline if baseline is None else baseline, self.space)


@dataclass
class _Result:
    """What one method returns before it becomes :class:`AttributionMap` s."""

    maps: torch.Tensor  # [B, S, S]
    raw: torch.Tensor
    baseline: str
    resolution: str = "pixel"
    grid: torch.Tensor | None = None  # [B, rows, cols]
    delta: np.ndarray | None = None  # [B]


def attribute(target: Target, pixel_values: torch.Tensor, method: str = "ig", *,
              baseline: str | float | torch.Tensor | list | tuple | None = None, n_steps: int = 32,
              internal_batch_size: int | None = None, nt_samples: int = 8, nt_stdev: float = 0.5,
              occlusion_window: int | None = None, occlusion_stride: int | None = None,
              shap_samples: int = 16, ig_method: str = "gausslegendre", smooth: float = 0.0,
              gate: bool = False, gate_steps: int = 16, gate_strides: tuple[int, ...] = GATE_STRIDES,
              feature_stride: int = 4) -> list[AttributionMap]:
    """Run ``method`` on every image of ``pixel_values`` ``[B, C, S, S]``; one map per image.

    ``n_steps``: integration steps of IG / layer IG, placed by ``ig_method`` (Captum's
    ``"gausslegendre"`` default, or ``"riemann_middle"``, ``"riemann_trapezoid"`` …). ``nt_samples``/``nt_stdev``: SmoothGrad noise
    samples and their σ in normalised units (0.5 ≈ 14 % of the input range, Smilkov et al.
    recommend 10–20 %). Occlusion windows default to S/8 px with stride S/16. GradientShap draws
    ``shap_samples`` points between the input (+ noise) and the baselines black, mean and blur.
    ``baseline``: one baseline, or for ``ig`` a list of them (attributions averaged over the list);
    default ``"blur"``, and :data:`FEATURE_BASELINE` for ``feature_ig``.
    ``smooth``: σ in px of a Gaussian applied to each final map (0: none). ``gate`` (``ig`` only):
    multiply the map by the positive part of a ``gate_steps``-step ``feature_ig`` map at each
    stride of ``gate_strides``. ``feature_stride``: the feature map ``feature_ig`` reads.
    """
    if baseline is None:
        baseline = FEATURE_BASELINE if method == "feature_ig" else "blur"
    _check_settings(method, baseline, n_steps, smooth, gate, gate_steps, gate_strides)
    pixels = _check_inputs(pixel_values)
    device = target_device(target)
    if device is not None:  # CPU images (a model's image_processor) onto the model's device, once
        pixels = pixels.to(device)
    job = _Job(target, pixels, pixel_space_of(target), baseline, n_steps, internal_batch_size, nt_samples,
               nt_stdev, occlusion_window, occlusion_stride, shap_samples, ig_method, gate, gate_steps,
               tuple(gate_strides) if isinstance(gate_strides, (list, tuple)) else gate_strides, feature_stride)
    with torch.no_grad():
        scores = target(pixels).detach().float()  # [B]
    result = _RUNNERS[method](job)
    if smooth > 0:
        result.maps = gaussian_blur(result.maps.detach()[:, None].float(), float(smooth))[:, 0]  # [B, S, S]
        result.resolution = f"{result.resolution}, map smoothed (Gaussian σ={smooth:g} px)"
    return _to_maps(method, target, scores, result)


def _check_settings(method: str, baseline, n_steps: int, smooth: float, gate: bool, gate_steps: int,
                    gate_strides) -> None:
    """One-line ``ValueError`` for the first setting that does not fit ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {list(METHODS)}")
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or smooth < 0:
        raise ValueError(f"smooth is a Gaussian σ in pixels >= 0, got {smooth!r}")
    if not isinstance(gate, bool):
        raise ValueError(f"gate is True or False, got {gate!r}")
    if gate and method != "ig":
        raise ValueError(f"gate=True gates an 'ig' map by the feature-level IG; it does not apply to {method!r}")
    if gate and gate_steps < 2:
        raise ValueError(f"gate_steps must be >= 2, got {gate_steps}")
    if gate and (not isinstance(gate_strides, (list, tuple)) or not gate_strides
                 or any(isinstance(v, bool) or not isinstance(v, int) for v in gate_strides)):
        raise ValueError(f"gate_strides is a non-empty tuple of strides (e.g. (4, 8)), got {gate_strides!r}")
    if isinstance(baseline, (list, tuple)) and (method != "ig" or not baseline):
        raise ValueError("a list of baselines is for method 'ig' and must not be empty"
                         if method == "ig" else f"a list of baselines is for method 'ig' only, not {method!r}")


def _check_inputs(pixel_values: torch.Tensor) -> torch.Tensor:
    if (not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4
            or pixel_values.shape[1] not in (1, 3)):
        shape = list(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise ValueError("pixel_values must be [batch, 1, S, S] (grey, data.images.preprocess) or [batch, 3, S, S] "
                         f"(the released model's image_processor), stacked; got {shape}")
    return pixel_values.detach()


def _to_maps(method: str, target: Target, scores: torch.Tensor, result: _Result) -> list[AttributionMap]:
    """One CPU :class:`AttributionMap` per image, whatever device the model computed on."""
    maps = result.maps.detach().float().cpu().numpy().astype(np.float32)
    grid = None if result.grid is None else result.grid.detach().float().cpu().numpy()
    raw = result.raw.detach().cpu()
    return [AttributionMap(method=method, map=maps[i], baseline=result.baseline,
                           target=getattr(target, "description", "target"), score=float(scores[i]),
                           resolution=result.resolution, raw=raw[i], grid=None if grid is None else grid[i],
                           delta=None if result.delta is None else float(result.delta[i]))
            for i in range(maps.shape[0])]


def _pixel_map(attr: torch.Tensor) -> torch.Tensor:
    """Per-pixel attribution ``[B, S, S]`` from ``[B, C, S, S]``: the channels' sum (attributions add up)."""
    return attr.sum(dim=1)


def _grid_result(grid: torch.Tensor, size: int, raw: torch.Tensor, baseline: str, resolution: str) -> _Result:
    return _Result(maps=upsample_grid(grid, size), raw=raw, baseline=baseline, resolution=resolution, grid=grid)


# ----------------------------------------------------------------------------------------------
# The methods: one function each, _Job → _Result
# ----------------------------------------------------------------------------------------------
def _run_ig(job: _Job) -> _Result:
    from captum.attr import IntegratedGradients

    several = isinstance(job.baseline, (list, tuple))
    attrs, deltas, names = [], [], []
    for one in (job.baseline if several else [job.baseline]):
        base, name = job.base(one)
        a, d = IntegratedGradients(job.target).attribute(
            job.pixels, baselines=base, n_steps=job.n_steps, method=job.ig_method,
            internal_batch_size=job.internal_batch_size, return_convergence_delta=True)
        attrs.append(a)  # [B, C, S, S]
        deltas.append(d.abs())  # [B]
        names.append(name)
    attr = torch.stack(attrs).mean(0)  # [B, C, S, S]
    delta = torch.stack(deltas).mean(0).detach().cpu().numpy()
    maps = _pixel_map(attr)  # [B, S, S] signed
    base_name = (f"average over {len(names)} baselines ({'; '.join(names)})" if several else names[0])
    result = _Result(maps=maps, raw=attr, baseline=f"{base_name}; {job.n_steps} steps", delta=delta)
    if job.gate:
        weights, gate_name, strides = _gate(job)  # [B, S, S] >= 0
        result.maps = maps * weights  # [B, S, S]
        result.resolution = f"pixel, gated by feature IG (stride {' × '.join(map(str, strides))})"
        result.baseline = f"{result.baseline}; gate: feature IG from the {gate_name}"
    return result


def _run_smoothgrad(job: _Job) -> _Result:
    from captum.attr import NoiseTunnel, Saliency

    attr = NoiseTunnel(Saliency(job.target)).attribute(
        job.pixels, nt_type="smoothgrad", nt_samples=job.nt_samples, stdevs=job.nt_stdev,
        nt_samples_batch_size=job.internal_batch_size, abs=True)
    return _Result(maps=_pixel_map(attr), raw=attr,
                   baseline=f"none (gradient magnitude, {job.nt_samples} samples, noise σ={job.nt_stdev:g})")


def _run_saliency(job: _Job) -> _Result:
    from captum.attr import Saliency

    attr = Saliency(job.target).attribute(job.pixels, abs=True)
    return _Result(maps=_pixel_map(attr), raw=attr, baseline="none (gradient magnitude)")


def _run_occlusion(job: _Job) -> _Result:
    from captum.attr import Occlusion

    channels, size = job.pixels.shape[1], job.pixels.shape[-1]
    window = job.occlusion_window or max(2, size // 8)
    stride = job.occlusion_stride or max(1, window // 2)
    base, base_name = job.base()
    attr = Occlusion(job.target).attribute(  # a window covers every channel: the patch is greyed out whole
        job.pixels, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
        baselines=base, perturbations_per_eval=job.internal_batch_size or 16)
    return _Result(maps=attr.mean(dim=1), raw=attr, baseline=f"patches replaced by {base_name}",
                   resolution=f"occlusion window {window} px / stride {stride} px")


def _run_gradientshap(job: _Job) -> _Result:
    from captum.attr import GradientShap

    candidates = [make_baseline(job.pixels[:1], b, job.space)[0] for b in BASELINES]
    base = torch.cat(candidates, dim=0)  # [3, C, S, S]
    attr = GradientShap(job.target).attribute(job.pixels, baselines=base, n_samples=job.shap_samples, stdevs=0.1)
    return _Result(maps=_pixel_map(attr), raw=attr,
                   baseline=f"distribution of black / mean / blur images; {job.shap_samples} samples")


def _run_gradcam(job: _Job) -> _Result:
    from captum.attr import LayerGradCam

    with token_grid(_encoder_of(job.target)) as grid_module:
        attr = LayerGradCam(job.target, grid_module).attribute(job.pixels, relu_attributions=True)  # [B, 1, r, c]
    grid = attr[:, 0].detach()
    rows, cols = grid.shape[-2:]
    return _grid_result(grid, job.pixels.shape[-1], attr, "none (gradient-weighted activations, ReLU)",
                        f"token grid {rows}x{cols}")


def _run_feature_ig(job: _Job) -> _Result:
    layer, stride = _feature_layer(job.target, job.feature_stride)
    grid, name = _feature_ig(job, job.baseline, job.n_steps, layer)
    rows, cols = grid.shape[-2:]
    return _grid_result(grid, job.pixels.shape[-1], grid, f"features of the {name}; {job.n_steps} steps",
                        f"feature map {rows}x{cols} (stride {stride})")


def _run_layer_ig(job: _Job) -> _Result:
    from captum.attr import LayerIntegratedGradients

    model = getattr(job.target, "model", None)
    if model is None or not hasattr(model, "hook_projection"):
        raise ValueError("layer_ig needs a text target (answer_target / phrase_target) with an XrayGPT model")
    base, base_name = job.base()
    attr = LayerIntegratedGradients(job.target, model.hook_projection).attribute(
        job.pixels, baselines=base, n_steps=job.n_steps, method=job.ig_method,
        internal_batch_size=job.internal_batch_size)  # [B, N, d_llm]
    tokens = attr.sum(dim=-1).detach()  # [B, N]
    stack = vision_stack(model.encoder)
    grid = stack.tokens_to_grid(tokens, job.pixels)  # [B, rows, cols]
    return _grid_result(grid, job.pixels.shape[-1], attr, f"projection output of the {base_name}; {job.n_steps} steps",
                        stack.token_resolution)


_RUNNERS: dict[str, Callable[[_Job], _Result]] = {
    "ig": _run_ig, "smoothgrad": _run_smoothgrad, "occlusion": _run_occlusion, "saliency": _run_saliency,
    "gradientshap": _run_gradientshap, "gradcam": _run_gradcam, "layer_ig": _run_layer_ig,
    "feature_ig": _run_feature_ig,
}


# ----------------------------------------------------------------------------------------------
# Feature-level IG and the gate
# ----------------------------------------------------------------------------------------------
def _gate(job: _Job) -> tuple[torch.Tensor, str, list[int]]:
    """``Π_s relu(upsample(feature IG at stride s))`` ``[B, S, S]``; each distinct layer once.

    Returns the gate, the baseline's name and the strides of the layers used.
    """
    layers: dict[int, tuple[nn.Module, int]] = {}
    for wanted in job.gate_strides:
        layer, stride = _feature_layer(job.target, wanted)
        layers.setdefault(id(layer), (layer, stride))
    size = job.pixels.shape[-1]
    weights, name = None, FEATURE_BASELINE
    for layer, _ in layers.values():
        grid, name = _feature_ig(job, FEATURE_BASELINE, job.gate_steps, layer)  # [B, h, w]
        part = upsample_grid(grid, size).clamp(min=0)  # [B, S, S]
        weights = part if weights is None else weights * part
    return weights, name, [stride for _, stride in layers.values()]


def _feature_layer(target: Target, stride: int) -> tuple[nn.Module, int]:
    """``encoder.feature_layer(stride)`` of the target's encoder: the layer and its actual stride."""
    encoder = _encoder_of(target)
    if not hasattr(encoder, "feature_layer"):
        raise ValueError("feature_ig and the gate need an encoder with a feature map (encoder.feature_layer())")
    return encoder.feature_layer(stride)


def _feature_ig(job: _Job, baseline: str | float | torch.Tensor, n_steps: int,
                layer: nn.Module) -> tuple[torch.Tensor, str]:
    """LayerIntegratedGradients at ``layer`` (a :func:`_feature_layer`), summed over channels.

    Returns the map ``[B, h, w]`` and the pixel baseline's name. Captum integrates along the
    straight line between the layer's activations for the baseline and for the input, so
    completeness holds at that layer (Σ attributions ≈ f(x) − f(baseline)).
    """
    from captum.attr import LayerIntegratedGradients

    base, name = job.base(baseline)
    attr = LayerIntegratedGradients(job.target, layer).attribute(
        job.pixels, baselines=base, n_steps=n_steps, method=job.ig_method,
        internal_batch_size=job.internal_batch_size)  # [B, C, h, w]
    if attr.dim() != 4:
        raise ValueError(f"feature_ig expects a spatial feature map [B, C, h, w], got {list(attr.shape)}")
    return attr.sum(dim=1).detach(), name


def _encoder_of(target: Target) -> nn.Module:
    encoder = getattr(target, "encoder", None)
    if encoder is None or not hasattr(encoder, "token_grid_layer"):
        raise ValueError("gradcam and feature_ig need a target with an .encoder (the toolkit's VisionEncoder "
                         "or the released ViT + Q-Former)")
    return encoder


# ----------------------------------------------------------------------------------------------
# Every map kind
# ----------------------------------------------------------------------------------------------
def explain(target: Target, pixel_values: torch.Tensor, method: str = "ig", **kwargs) -> AttributionMap:
    """One image ``[C, S, S]`` or ``[1, C, S, S]`` → one :class:`AttributionMap`.

    ``method`` is any of :data:`MAP_KINDS`: a Captum method (keyword arguments go to
    :func:`attribute`), ``"attention"`` (LLM attention from the target's tokens to the image
    tokens), ``"rollout"``, ``"grad_rollout"`` or, on the released model, ``"cross_attention"``
    (``interpret.attention``).
    """
    if pixel_values.dim() == 3:
        pixel_values = pixel_values[None]
    if pixel_values.dim() != 4 or pixel_values.shape[0] != 1:
        raise ValueError(f"explain takes one image [1, C, S, S]; use attribute() for a batch, got {list(pixel_values.shape)}")
    if method == "attention":
        if not hasattr(target, "from_image_embeds"):
            raise ValueError("attention needs a text target (answer_target / phrase_target)")
        return attention_explanation(target, pixel_values.detach(), **kwargs)
    if method in ENCODER_METHODS:
        return encoder_explanation(method, pixel_values.detach(), target=target, **kwargs)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(MAP_KINDS)}")
    return attribute(target, pixel_values, method, **kwargs)[0]
