"""What every explanation is made of: the map type, its baselines, and grids brought to pixels.

Shared by ``attribution`` (Captum methods), ``attention`` (attention maps) and ``faithfulness``;
model-agnostic: the pixel space (normalisation per channel, ``data.readers.images.PixelSpace``) is
read off the target's model or encoder, so a black baseline is black for MedCLIP's grey input and
for BLIP-2's CLIP-normalised RGB alike.

Baselines (what "absence of signal" means; Sturmfels et al. 2020, "Visualizing the Impact of
Feature Attribution Baselines"): ``"black"`` (pixel value 0, air), ``"mean"`` (the normalisation's
mean: all zeros), ``"blur"`` (the image blurred with a Gaussian of σ = S/16 px: keeps the exposure,
removes local detail), a grey level in ``[0, 1]`` (a flat image), or a tensor in normalised units.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.readers.images import MEDCLIP_SPACE, PixelSpace

BASELINES: tuple[str, ...] = ("black", "mean", "blur")


@dataclass
class AttributionMap:
    """One explanation of one image.

    ``map`` ``[S, S]`` float32 at the model's input resolution (token-level methods are bilinearly
    upsampled from ``grid``); higher = more evidence FOR the target (Saliency and SmoothGrad are
    unsigned magnitudes). ``raw`` is the method's output before reduction. Every field is on the
    CPU (numpy arrays, a CPU tensor), whichever device the model runs on.
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


def pixel_space_of(target: Any) -> PixelSpace:
    """The pixel space a target reads: its model's, else its encoder's, else MedCLIP's grey."""
    for owner in (getattr(target, "model", None), getattr(target, "encoder", None)):
        space = getattr(owner, "pixel_space", None)
        if isinstance(space, PixelSpace):
            return space
    return MEDCLIP_SPACE


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


def _flat(pixel_values: torch.Tensor, values: list[float]) -> torch.Tensor:
    """A flat image of one normalised value per channel, shaped like ``pixel_values``."""
    if len(values) not in (1, pixel_values.shape[1]):
        raise ValueError(f"pixel_values have {pixel_values.shape[1]} channels, the model's pixel space "
                         f"{len(values)}: give the pixels its image_processor makes")
    level = torch.tensor(values, dtype=pixel_values.dtype, device=pixel_values.device)
    return level.view(1, -1, 1, 1).expand_as(pixel_values).clone()  # [B, C, S, S]


def make_baseline(pixel_values: torch.Tensor, baseline: str | float | torch.Tensor = "blur",
                  space: PixelSpace = MEDCLIP_SPACE) -> tuple[torch.Tensor, str]:
    """Baseline tensor (same shape, normalised units of ``space``) and its human-readable name."""
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != pixel_values.shape:
            raise ValueError(f"baseline tensor shape {list(baseline.shape)} != input shape {list(pixel_values.shape)}")
        return baseline.to(pixel_values), "custom tensor"
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not 0.0 <= float(baseline) <= 1.0:
            raise ValueError(f"a numeric baseline is a grey level in [0, 1], got {baseline}")
        return _flat(pixel_values, space.level(float(baseline))), f"flat grey {float(baseline):.2f}"
    if baseline == "black":
        return _flat(pixel_values, space.level(0.0)), "black image (air)"
    if baseline == "mean":
        return torch.zeros_like(pixel_values), space.mean_name
    if baseline == "blur":
        sigma = pixel_values.shape[-1] / 16
        return gaussian_blur(pixel_values, sigma), f"blurred image (Gaussian σ={sigma:g} px)"
    raise ValueError(f"unknown baseline {baseline!r}; choose one of {list(BASELINES)}, a grey level or a tensor")


def upsample_grid(grid: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, rows, cols]`` → ``[B, size, size]`` bilinear (each token covers size/cols pixels)."""
    return F.interpolate(grid[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def grid_map(method: str, grid: np.ndarray, size: int, *, baseline: str, target: str, score: float,
             resolution: str, raw: torch.Tensor | None = None) -> AttributionMap:
    """An :class:`AttributionMap` from a token- or patch-level ``grid`` ``[rows, cols]`` (upsampled to ``size``)."""
    grid = np.ascontiguousarray(grid, dtype=np.float32)
    image = upsample_grid(torch.from_numpy(grid)[None], size)[0].numpy()
    return AttributionMap(method=method, map=image, baseline=baseline, target=target, score=score,
                          resolution=resolution, raw=raw, grid=grid)
