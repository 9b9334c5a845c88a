"""A convolutional stem for Swin's patch embedding (the tiny profile's choice).

Swin (Liu et al. 2021, Sec. 3.1) embeds patches with one strided convolution: a *linear* map of
each ``p × p`` patch. Xiao et al. 2021 ("Early Convolutions Help Transformers See Better",
NeurIPS) replace that linear patchify by a few stride-2 3 × 3 convolutions with normalisation and
a non-linearity: same output grid and width, markedly easier optimisation and better accuracy,
most of all when data and training are small. That is the tiny profile's situation (a few
thousand synthetic radiographs, ~10³ steps on a CPU): with the linear patchify the tiny Swin
learned the large findings only, and not devices, atelectasis or nodules in the walkthrough's
budget (measured in docs/design-notes.md).

The stem slots in where ``SwinPatchEmbeddings.projection`` sits (``[B, C, S, S] → [B, d, S/p,
S/p]``), so the rest of ``transformers.SwinModel`` — window attention, shifted windows, patch
merging — is unchanged. The ``full`` profile keeps MedCLIP's linear patch embedding, so its
released weights load as they are.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvStem(nn.Module):
    """``log2(patch)`` scales of [Conv3×3 stride 2 → BN → GELU, then ``depth − 1`` × (Conv3×3
    stride 1 → BN → GELU)], then a 1 × 1 conv to ``embed_dim``.

    Widths double per scale from ``width``: for ``patch=8``, ``width=16``: 16 → 32 → 64 → d.
    ``depth = 2`` (the tiny profile's) gives each scale a second, unstrided convolution, as in
    Xiao et al.'s stems (their Table 1 stacks stride-2 and stride-1 3 × 3 convolutions): it is
    what lets the tiny Swin see nodules and rib fractures, a few pixels each at 128 px (1,200
    steps, 300 held-out images, token label head macro-F1: depth 1 → 0.78, depth 2 → 0.85;
    lung lesion 0.37 → 0.43, fracture 0.07 → 0.41).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, width: int = 16, depth: int = 1) -> None:
        super().__init__()
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"the conv stem needs a power-of-two patch_size >= 2, got {patch_size}")
        if width < 1:
            raise ValueError(f"stem width must be >= 1, got {width}")
        if depth < 1:
            raise ValueError(f"stem depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        channels, stages = in_channels, patch_size.bit_length() - 1
        for i in range(stages):
            out = width * 2**i
            for k in range(depth):
                layers += [nn.Conv2d(channels, out, 3, stride=1 if k else 2, padding=1, bias=False),
                           nn.BatchNorm2d(out), nn.GELU()]
                channels = out
        layers.append(nn.Conv2d(channels, embed_dim, 1))
        self.layers = nn.Sequential(*layers)
        self.depth, self.scales = depth, stages

    def scale_end(self, scale: int) -> nn.Module:
        """The module whose output ends scale ``scale`` (0-based): ``[B, width·2^scale, S/2^(scale+1), …]``.

        Scale ``k`` has stride ``2^(k+1)``; ``interpret.attribution`` reads the stride-4 map
        (scale 1) for its feature-level attributions.
        """
        if not 0 <= scale < self.scales:
            raise ValueError(f"the stem has scales 0..{self.scales - 1}, got {scale}")
        return self.layers[3 * self.depth * (scale + 1) - 1]  # the GELU closing that scale

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, C, S, S]`` → ``[B, embed_dim, S / patch, S / patch]``."""
        return self.layers(pixel_values)
