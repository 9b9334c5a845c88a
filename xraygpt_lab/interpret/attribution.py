"""Attributions over radiographs with Captum: which pixels (or image tokens) raise a target.

A *target* (``interpret.targets``) maps pixels ``[B, 1, S, S]`` to one number per image: the
log-probability of an answer or of one phrase in it, or a zero-shot score. :func:`attribute` runs
one Captum method on it and returns an :class:`AttributionMap` at the model's input resolution.

=================  =================================================  ====================
method             Captum class (reference)                           resolution
=================  =================================================  ====================
``ig``             IntegratedGradients (Sundararajan et al. 2017)     pixel
``smoothgrad``     NoiseTunnel(Saliency) (Smilkov et al. 2017)        pixel
``occlusion``      Occlusion (Zeiler & Fergus 2014)                   window / stride
``saliency``       Saliency, |∂y/∂x| (Simonyan et al. 2014)           pixel
``gradientshap``   GradientShap (Lundberg & Lee 2017)                 pixel
``gradcam``        LayerGradCam on the last Swin stage (Selvaraju     token grid
                   et al. 2017)
``layer_ig``       LayerIntegratedGradients on the projection output  token grid
                   (the image embeddings the LLM reads)
``feature_ig``     LayerIntegratedGradients on an early feature map   feature map, stride 4
                   (``VisionEncoder.feature_layer``), summed over     (``feature_stride``)
                   channels
=================  =================================================  ====================

Baselines (what "absence of signal" means; Sturmfels et al. 2020, "Visualizing the Impact of
Feature Attribution Baselines") are chosen with ``baseline=`` and always named in the result:
``"black"`` (pixel value 0, air), ``"mean"`` (MedCLIP's mean grey), ``"blur"`` (the image blurred
with a Gaussian of σ = S/16 px: keeps the exposure, removes local detail; the default) or a number
in ``[0, 1]`` (a flat image of that grey) or a tensor in normalised units. IG also takes a
*list* of baselines and averages its attributions over them (a two-point version of expected
gradients, Erion et al. 2021; Sturmfels et al. 2020, Sec. "averaging over multiple baselines"):
each baseline hides what it shares with the image — a blurred copy still holds a large effusion,
a black image still holds nothing bright — so the average credits both kinds of finding.
``smooth=σ`` blurs the final map with a Gaussian of σ px (a map's single-pixel maximum is noise).

``gate=True`` multiplies the IG pixel map by the positive part of ``feature_ig`` (black
baseline), upsampled, at each stride of ``gate_strides`` (default 4 and 8): pixels count only
where the encoder's features at both scales also support the target. This is how Guided Grad-CAM
combines a fine map with a coarse one (Selvaraju et al. 2017, Sec. 3.1: guided backpropagation ⊙
Grad-CAM). Pixel IG alone peaks on bright or sharp anatomy that the baselines remove too (the
mediastinum, rib edges); a feature map alone is coarser; the stride-8 factor removes stride-4
peaks on the wrong side of the chest. On the tiny run the product points best
(``RECOMMENDED_IG``; numbers in ``docs/design-notes.md``). Strides that resolve to the same layer (Swin's
own patch embedding has a single early map) count once.

Swin stages return tuples, so Grad-CAM does not hook a stage: :func:`token_grid` routes the last
stage's tokens (``VisionEncoder.hook_tokens``, after the final LayerNorm) through an identity
module whose output is laid out ``[B, d, rows, cols]``, the layout ``LayerGradCam`` expects.

Every method accepts ``internal_batch_size`` (Captum's chunking of the steps, noise samples or
occluded copies), so memory stays bounded on a 7B model.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.readers.images import MEDCLIP_MEAN, MEDCLIP_STD
from .targets import target_device

Target = Callable[[torch.Tensor], torch.Tensor]

METHODS: tuple[str, ...] = ("ig", "smoothgrad", "occlusion", "saliency", "gradientshap", "gradcam", "layer_ig",
                             "feature_ig")
BASELINES: tuple[str, ...] = ("black", "mean", "blur")
#: IG settings that point best on the tiny run (``benchmarks/faithfulness.py``, docs/design-notes.md): averaged
#: over a blurred and a black baseline, gated by the early-feature IG, map smoothed by 1 px. Used by
#: the benchmark, the ``explain`` CLI and the chat panel.
RECOMMENDED_IG: dict = {"baseline": ("blur", "black"), "gate": True, "smooth": 1.0}
#: Baseline of ``feature_ig`` and of the gate: in feature space the black image's features (an
#: empty film) beat the blurred image's (docs/design-notes.md).
FEATURE_BASELINE = "black"
#: Feature-map strides whose feature IG gates the recommended IG (``attribute(..., gate=True)``).
GATE_STRIDES: tuple[int, ...] = (4, 8)
#: Everything :func:`explain` accepts: the Captum methods plus the attention maps of ``attention.py``.
ATTENTION_METHODS: tuple[str, ...] = ("attention", "rollout", "grad_rollout")
ALL_METHODS: tuple[str, ...] = METHODS + ATTENTION_METHODS


@dataclass
class AttributionMap:
    """One explanation of one image.

    ``map`` ``[S, S]`` float32 at the model's input resolution (token-level methods are bilinearly
    upsampled from ``grid``); higher = more evidence FOR the target (Saliency and SmoothGrad are
    unsigned magnitudes). ``raw`` is Captum's output before reduction. Every field is on the CPU
    (numpy arrays, a CPU tensor), whichever device the model runs on.
    """

    method: str
    map: np.ndarray  # [S, S]
    baseline: str  # named in every plot: what "absence" meant
    target: str
    score: float  # target value at the input
    resolution: str  # "pixel", "token grid 4x4", "occlusion window 16 px / stride 8 px"
    raw: torch.Tensor | None = field(default=None, repr=False)
    grid: np.ndarray | None = field(default=None, repr=False)  # [rows, cols] token-level values
    delta: float | None = None  # IG completeness error |Σ attr − (f(x) − f(baseline))|

    @property
    def peak(self) -> tuple[int, int]:
        """``(row, col)`` of the map's maximum at model resolution."""
        r, c = np.unravel_index(int(np.argmax(self.map)), self.map.shape)
        return int(r), int(c)


# ----------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------
def gaussian_blur(pixel_values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, S, S]`` with reflect padding (same shape)."""
    if sigma <= 0:
        return pixel_values.clone()
    radius = max(1, int(round(3 * sigma)))
    radius = min(radius, pixel_values.shape[-1] - 1)
    x = torch.arange(-radius, radius + 1, dtype=pixel_values.dtype, device=pixel_values.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = pixel_values.shape[1]
    out = F.pad(pixel_values, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # [B, C, S, S]


def make_baseline(pixel_values: torch.Tensor, baseline: str | float | torch.Tensor = "blur") -> tuple[torch.Tensor, str]:
    """Baseline tensor (same shape, normalised units) and its human-readable name."""
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != pixel_values.shape:
            raise ValueError(f"baseline tensor shape {list(baseline.shape)} != input shape {list(pixel_values.shape)}")
        return baseline.to(pixel_values), "custom tensor"
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not 0.0 <= float(baseline) <= 1.0:
            raise ValueError(f"a numeric baseline is a grey level in [0, 1], got {baseline}")
        value = (float(baseline) - MEDCLIP_MEAN) / MEDCLIP_STD
        return torch.full_like(pixel_values, value), f"flat grey {float(baseline):.2f}"
    if baseline == "black":
        return torch.full_like(pixel_values, (0.0 - MEDCLIP_MEAN) / MEDCLIP_STD), "black image (air)"
    if baseline == "mean":
        return torch.zeros_like(pixel_values), "MedCLIP mean grey"
    if baseline == "blur":
        sigma = pixel_values.shape[-1] / 16
        return gaussian_blur(pixel_values, sigma), f"blurred image (Gaussian σ={sigma:g} px)"
    raise ValueError(f"unknown baseline {baseline!r}; choose one of {list(BASELINES)}, a grey level or a tensor")


# ----------------------------------------------------------------------------------------------
# Token grid hook (Grad-CAM on the last Swin stage)
# ----------------------------------------------------------------------------------------------
class TokenGrid(nn.Identity):
    """Identity whose output is the last stage's tokens laid out ``[B, d, rows, cols]``."""


@contextlib.contextmanager
def token_grid(encoder: nn.Module) -> Iterator[TokenGrid]:
    """While active, ``encoder.hook_tokens`` output passes through a :class:`TokenGrid` module.

    Yields that module: give it to ``LayerGradCam`` (or hook it) to read a spatial tensor instead
    of the tuple a ``SwinStage`` returns.
    """
    rows, cols = encoder.grid
    grid_module = TokenGrid()

    def reroute(_module: nn.Module, _inputs: tuple, tokens: torch.Tensor) -> torch.Tensor:
        b, n, d = tokens.shape  # [B, N, d]
        spatial = tokens.transpose(1, 2).reshape(b, d, rows, cols)  # [B, d, rows, cols]
        return grid_module(spatial).reshape(b, d, n).transpose(1, 2)  # [B, N, d]

    handle = encoder.hook_tokens.register_forward_hook(reroute)
    try:
        yield grid_module
    finally:
        handle.remove()


def upsample_grid(grid: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, rows, cols]`` → ``[B, size, size]`` bilinear (each token covers size/cols pixels)."""
    return F.interpolate(grid[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


# ----------------------------------------------------------------------------------------------
# The methods
# ----------------------------------------------------------------------------------------------
def _check_inputs(pixel_values: torch.Tensor) -> torch.Tensor:
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4 or pixel_values.shape[1] != 1:
        shape = list(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise ValueError(f"pixel_values must be [batch, 1, S, S] (data.images.preprocess, stacked), got {shape}")
    return pixel_values.detach()


def attribute(target: Target, pixel_values: torch.Tensor, method: str = "ig", *,
              baseline: str | float | torch.Tensor | list | tuple | None = None, n_steps: int = 32,
              internal_batch_size: int | None = None, nt_samples: int = 8, nt_stdev: float = 0.5,
              occlusion_window: int | None = None, occlusion_stride: int | None = None,
              shap_samples: int = 16, ig_method: str = "gausslegendre", smooth: float = 0.0,
              gate: bool = False, gate_steps: int = 16, gate_strides: tuple[int, ...] = GATE_STRIDES,
              feature_stride: int = 4) -> list[AttributionMap]:
    """Run ``method`` on every image of ``pixel_values`` ``[B, 1, S, S]``; one map per image.

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
    from captum.attr import (IntegratedGradients, LayerGradCam, LayerIntegratedGradients, NoiseTunnel,
                             Occlusion, Saliency, GradientShap)

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
    if baseline is None:
        baseline = FEATURE_BASELINE if method == "feature_ig" else "blur"
    several = isinstance(baseline, (list, tuple))
    if several and (method != "ig" or not baseline):
        raise ValueError("a list of baselines is for method 'ig' and must not be empty"
                         if method == "ig" else f"a list of baselines is for method 'ig' only, not {method!r}")
    pixels = _check_inputs(pixel_values)
    device = target_device(target)
    if device is not None:  # CPU images (data.images.preprocess) onto the model's device, once
        pixels = pixels.to(device)
    size = pixels.shape[-1]
    with torch.no_grad():
        scores = target(pixels).detach().float()  # [B]
    delta = None
    grid = None
    resolution = "pixel"
    if method == "ig":
        attrs, deltas, names = [], [], []
        for one in (baseline if several else [baseline]):
            base, name = make_baseline(pixels, one)
            a, d = IntegratedGradients(target).attribute(
                pixels, baselines=base, n_steps=n_steps, method=ig_method, internal_batch_size=internal_batch_size,
                return_convergence_delta=True)
            attrs.append(a)  # [B, 1, S, S]
            deltas.append(d.abs())  # [B]
            names.append(name)
        attr = torch.stack(attrs).mean(0)  # [B, 1, S, S]
        delta = torch.stack(deltas).mean(0).detach().cpu().numpy()
        maps = attr[:, 0]  # [B, S, S] signed
        base_name = (f"average over {len(names)} baselines ({'; '.join(names)})" if several else names[0])
        base_name = f"{base_name}; {n_steps} steps"
        if gate:
            weights, gate_name, strides = _gate(target, pixels, gate_strides, gate_steps, ig_method,
                                                internal_batch_size)  # [B, S, S] >= 0
            maps = maps * weights  # [B, S, S]
            resolution = f"pixel, gated by feature IG (stride {' × '.join(map(str, strides))})"
            base_name = f"{base_name}; gate: feature IG from the {gate_name}"
    elif method == "smoothgrad":
        attr = NoiseTunnel(Saliency(target)).attribute(
            pixels, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=nt_stdev,
            nt_samples_batch_size=internal_batch_size, abs=True)
        maps = attr[:, 0]
        base_name = f"none (gradient magnitude, {nt_samples} samples, noise σ={nt_stdev:g})"
    elif method == "saliency":
        attr = Saliency(target).attribute(pixels, abs=True)
        maps = attr[:, 0]
        base_name = "none (gradient magnitude)"
    elif method == "occlusion":
        window = occlusion_window or max(2, size // 8)
        stride = occlusion_stride or max(1, window // 2)
        base, base_name = make_baseline(pixels, baseline)
        attr = Occlusion(target).attribute(
            pixels, sliding_window_shapes=(1, window, window), strides=(1, stride, stride),
            baselines=base, perturbations_per_eval=internal_batch_size or 16)
        maps = attr[:, 0]
        resolution = f"occlusion window {window} px / stride {stride} px"
        base_name = f"patches replaced by {base_name}"
    elif method == "gradientshap":
        candidates = [make_baseline(pixels[:1], b)[0] for b in BASELINES]
        base = torch.cat(candidates, dim=0)  # [3, 1, S, S]
        attr = GradientShap(target).attribute(pixels, baselines=base, n_samples=shap_samples, stdevs=0.1)
        maps = attr[:, 0]
        base_name = f"distribution of black / mean / blur images; {shap_samples} samples"
    elif method == "gradcam":
        encoder = _encoder_of(target)
        with token_grid(encoder) as grid_module:
            attr = LayerGradCam(target, grid_module).attribute(pixels, relu_attributions=True)  # [B, 1, r, c]
        grid = attr[:, 0].detach()
        maps = upsample_grid(grid, size)
        rows, cols = grid.shape[-2:]
        resolution = f"token grid {rows}x{cols}"
        base_name = "none (gradient-weighted activations, ReLU)"
    elif method == "feature_ig":
        layer, stride = _feature_layer(target, feature_stride)
        grid, name = _feature_ig(target, pixels, baseline, n_steps, ig_method, internal_batch_size, layer)
        base_name = f"features of the {name}; {n_steps} steps"
        attr = grid
        maps = upsample_grid(grid, size)
        rows, cols = grid.shape[-2:]
        resolution = f"feature map {rows}x{cols} (stride {stride})"
    else:  # layer_ig
        model = getattr(target, "model", None)
        if model is None or not hasattr(model, "hook_projection"):
            raise ValueError("layer_ig needs a text target (answer_target / phrase_target) with an XrayGPT model")
        base, base_name = make_baseline(pixels, baseline)
        attr = LayerIntegratedGradients(target, model.hook_projection).attribute(
            pixels, baselines=base, n_steps=n_steps, method=ig_method,
            internal_batch_size=internal_batch_size)  # [B, N, d_llm]
        tokens = attr.sum(dim=-1).detach()  # [B, N]
        grid = model.encoder.token_map(tokens)  # [B, rows, cols]
        maps = upsample_grid(grid, size)
        rows, cols = grid.shape[-2:]
        resolution = f"token grid {rows}x{cols}"
        base_name = f"projection output of the {base_name}; {n_steps} steps"
    if smooth > 0:
        maps = gaussian_blur(maps.detach()[:, None].float(), float(smooth))[:, 0]  # [B, S, S]
        resolution = f"{resolution}, map smoothed (Gaussian σ={smooth:g} px)"
    # what leaves the library lives on the CPU, whatever device the model computed on
    maps_np = maps.detach().float().cpu().numpy().astype(np.float32)
    grid_np = None if grid is None else grid.detach().float().cpu().numpy()
    raw = attr.detach().cpu()
    out = []
    for i in range(pixels.shape[0]):
        out.append(AttributionMap(
            method=method, map=maps_np[i], baseline=base_name, target=getattr(target, "description", "target"),
            score=float(scores[i]), resolution=resolution, raw=raw[i],
            grid=None if grid_np is None else grid_np[i],
            delta=None if delta is None else float(delta[i])))
    return out


def _gate(target: Target, pixels: torch.Tensor, strides: tuple[int, ...], n_steps: int, ig_method: str,
          internal_batch_size: int | None) -> tuple[torch.Tensor, str, list[int]]:
    """``Π_s relu(upsample(feature IG at stride s))`` ``[B, S, S]``; each distinct layer once.

    Returns the gate, the baseline's name and the strides of the layers used.
    """
    layers: dict[int, tuple[nn.Module, int]] = {}
    for wanted in strides:
        layer, stride = _feature_layer(target, wanted)
        layers.setdefault(id(layer), (layer, stride))
    size = pixels.shape[-1]
    weights, name = None, FEATURE_BASELINE
    for layer, _ in layers.values():
        grid, name = _feature_ig(target, pixels, FEATURE_BASELINE, n_steps, ig_method, internal_batch_size,
                                 layer)  # [B, h, w]
        part = upsample_grid(grid, size).clamp(min=0)  # [B, S, S]
        weights = part if weights is None else weights * part
    return weights, name, [stride for _, stride in layers.values()]


def _feature_layer(target: Target, stride: int) -> tuple[nn.Module, int]:
    """``encoder.feature_layer(stride)`` of the target's encoder: the layer and its actual stride."""
    encoder = _encoder_of(target)
    if not hasattr(encoder, "feature_layer"):
        raise ValueError("feature_ig and the gate need a VisionEncoder (they read encoder.feature_layer())")
    return encoder.feature_layer(stride)


def _feature_ig(target: Target, pixels: torch.Tensor, baseline: str | float | torch.Tensor, n_steps: int,
                ig_method: str, internal_batch_size: int | None, layer: nn.Module) -> tuple[torch.Tensor, str]:
    """LayerIntegratedGradients at ``layer`` (a :func:`_feature_layer`), summed over channels.

    Returns the map ``[B, h, w]`` and the pixel baseline's name. Captum integrates along the
    straight line between the layer's activations for the baseline and for the input, so
    completeness holds at that layer (Σ attributions ≈ f(x) − f(baseline)).
    """
    from captum.attr import LayerIntegratedGradients

    base, name = make_baseline(pixels, baseline)
    attr = LayerIntegratedGradients(target, layer).attribute(
        pixels, baselines=base, n_steps=n_steps, method=ig_method,
        internal_batch_size=internal_batch_size)  # [B, C, h, w]
    if attr.dim() != 4:
        raise ValueError(f"feature_ig expects a spatial feature map [B, C, h, w], got {list(attr.shape)}")
    return attr.sum(dim=1).detach(), name


def _encoder_of(target: Target) -> nn.Module:
    encoder = getattr(target, "encoder", None)
    if encoder is None or not hasattr(encoder, "hook_tokens"):
        raise ValueError("gradcam and feature_ig need a target with an .encoder (VisionEncoder with hook_tokens)")
    return encoder


def explain(target: Target, pixel_values: torch.Tensor, method: str = "ig", **kwargs) -> AttributionMap:
    """One image ``[1, S, S]`` or ``[1, 1, S, S]`` → one :class:`AttributionMap`.

    ``method`` is any of :data:`ALL_METHODS`: a Captum method (keyword arguments go to
    :func:`attribute`), ``"attention"`` (LLM attention from the target's tokens to the image),
    ``"rollout"`` or ``"grad_rollout"`` (Swin encoder, see ``interpret.attention``).
    """
    if pixel_values.dim() == 3:
        pixel_values = pixel_values[None]
    if pixel_values.dim() != 4 or pixel_values.shape[0] != 1:
        raise ValueError(f"explain takes one image [1, 1, S, S]; use attribute() for a batch, got {list(pixel_values.shape)}")
    if method in ATTENTION_METHODS:
        from .attention import attention_explanation, encoder_explanation

        if method == "attention":
            if not hasattr(target, "from_image_embeds"):
                raise ValueError("attention needs a text target (answer_target / phrase_target)")
            return attention_explanation(target, pixel_values.detach(), **kwargs)
        return encoder_explanation(method, pixel_values.detach(), target=target, **kwargs)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(ALL_METHODS)}")
    return attribute(target, pixel_values, method, **kwargs)[0]
