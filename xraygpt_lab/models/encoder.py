"""The frozen vision encoder: a Swin backbone plus MedCLIP's bias-free projection.

XrayGPT (arXiv 2306.07971, Sec. 3) feeds the patch tokens of MedCLIP's vision encoder through one
linear layer into the LLM. MedCLIP (Wang et al. 2022, repository RyanWangZf/MedCLIP) uses
``microsoft/swin-tiny-patch4-window7-224``: ``pooler_output`` (768) → ``Linear(768, 512,
bias=False)`` → L2 normalisation, with a 1-channel radiograph repeated to 3 channels.

Two outputs matter:

* ``tokens`` ``[B, N, d]`` — the last stage's patch tokens (after the final LayerNorm), read
  row by row from a ``grid = (rows, cols)`` map; the alignment layer consumes these.
* ``embedding`` ``[B, p]`` — mean-pooled, projected, L2-normalised; the contrastive loss and
  zero-shot classification use it.

Sizes (``EncoderConfig``):

=========  =====  =====  ======  ==============  ==============  ======  ==========
profile    image  patch  window  depths          heads           grid    tokens × d
=========  =====  =====  ======  ==============  ==============  ======  ==========
``full``   224    4      7       2, 2, 6, 2      3, 6, 12, 24    7 × 7   49 × 768
``tiny``   128    8      4       2, 2, 2         2, 4, 8         4 × 4   16 × 128
=========  =====  =====  ======  ==============  ==============  ======  ==========

The tiny encoder embeds patches with a convolutional stem and adds absolute position embeddings
(``EncoderConfig.tiny``; why in ``models.conv_stem``); the full one is MedCLIP's as released.

Tiny grid: 128 px / patch 8 = 16 × 16 patches (each 8 × 8 px, small enough for a lesion of a
few pixels to own a patch), merged twice → 8 × 8 → 4 × 4 tokens, each covering 32 × 32 px.
Token ``i`` sits at row ``i // cols``, column ``i % cols``; the image's right half (columns
``cols // 2`` and up) is the patient's left.

Interpretability access points (TransformerLens-style ``nn.Identity`` hook points; register a
forward hook on them to read or patch the tensor):

* ``encoder.hook_tokens``    — ``[B, N, d]`` last-stage tokens (what the LLM sees)
* ``encoder.hook_pooled``    — ``[B, d]`` mean over tokens
* ``encoder.hook_embedding`` — ``[B, p]`` projected, before normalisation

Attention weights: ``encoder(x, output_attentions=True).attentions`` is a tuple with one tensor
per stage (the last block of that stage), shaped ``[B * windows, heads, w*w, w*w]`` where
``w`` is the window side (clamped to the stage's grid). The backbone switches to eager attention
for that call, because SDPA kernels do not return weights.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import SwinConfig, SwinModel

from ..atomic import atomic_write
from ..config import TINY
from ..data.readers.images import MEDCLIP_SPACE, load_image, preprocess
from ..errors import RunFolderError
from ..run_folder import load_model_folder, save_model_folder

#: File names inside an encoder folder written by ``save_pretrained``.
CONFIG_FILE = "encoder_config.json"
WEIGHTS_FILE = "encoder.safetensors"


@dataclass
class EncoderConfig:
    """Sizes of the Swin backbone and projection (see the table in the module docstring)."""

    image_size: int = 128
    patch_size: int = 8
    num_channels: int = 1  # channels the backbone's patch embedding expects (MedCLIP: 3)
    embed_dim: int = 32
    depths: list[int] = field(default_factory=lambda: [2, 2, 2])
    num_heads: list[int] = field(default_factory=lambda: [2, 4, 8])
    window_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    projection_dim: int = 128
    layer_norm_eps: float = 1e-5
    #: "patch": Swin's linear patch embedding (MedCLIP); "conv": ``models.conv_stem.ConvStem``
    stem: str = "patch"
    stem_width: int = 16
    #: convolutions per scale of the conv stem (the first strided, the others stride 1)
    stem_depth: int = 1
    #: learned absolute position embeddings on the patch grid (Swin's ``use_absolute_embeddings``)
    absolute_position: bool = False

    @classmethod
    def tiny(cls, image_size: int | None = None, **overrides: Any) -> "EncoderConfig":
        """Toy Swin for CPU training at ``config.TINY.image_size`` (128 px → 4 × 4 tokens of 128).

        Two departures from MedCLIP's layout, both for learning from little data on a CPU: a
        convolutional stem (``models.conv_stem``) and absolute position embeddings, so that a
        token knows whether it lies on the patient's left or right (a shuffled-free 4 × 4 grid
        where a finding's side is part of the label). ``overrides`` replace any field.
        """

        return cls(**{"image_size": image_size or TINY.image_size, "stem": "conv", "stem_depth": 2,
                      "absolute_position": True, **overrides})

    @classmethod
    def full(cls) -> "EncoderConfig":
        """MedCLIP's layout: ``microsoft/swin-tiny-patch4-window7-224`` + ``Linear(768, 512)``.

        Swin-T numbers from Liu et al. 2021 (Table 1) / the Hugging Face config; drop-path 0.1 is
        that config's default (irrelevant when frozen).
        """
        return cls(
            image_size=224,
            patch_size=4,
            num_channels=3,
            embed_dim=96,
            depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24],
            window_size=7,
            drop_path_rate=0.1,
            projection_dim=512,
        )

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid ``(rows, cols)`` of the last stage."""
        side = self.image_size // self.patch_size
        for _ in range(len(self.depths) - 1):
            side = (side + 1) // 2
        return (side, side)

    @property
    def token_dim(self) -> int:
        """Width ``d`` of the last stage's tokens (``embed_dim · 2^(stages-1)``)."""
        return int(self.embed_dim * 2 ** (len(self.depths) - 1))

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending field when the sizes cannot build a Swin."""
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(
                f"depths {self.depths} and num_heads {self.num_heads} must be non-empty and of equal length"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for stage, heads in enumerate(self.num_heads):
            width = self.embed_dim * 2**stage
            if width % heads:
                raise ValueError(f"stage {stage}: width {width} is not divisible by {heads} heads")
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"stem must be 'patch' or 'conv', got {self.stem!r}")
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(f"stem 'conv' needs a power-of-two patch_size >= 2, got {self.patch_size}")
        if self.stem_depth < 1:
            raise ValueError(f"stem_depth must be >= 1, got {self.stem_depth}")
        if self.num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {self.num_channels}")

    def to_swin_config(self) -> SwinConfig:
        """The ``transformers.SwinConfig`` with these sizes."""
        return SwinConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            embed_dim=self.embed_dim,
            depths=list(self.depths),
            num_heads=list(self.num_heads),
            window_size=self.window_size,
            mlp_ratio=self.mlp_ratio,
            drop_path_rate=self.drop_path_rate,
            layer_norm_eps=self.layer_norm_eps,
            use_absolute_embeddings=self.absolute_position,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EncoderConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EncoderConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


@dataclass
class EncoderOutput:
    """What ``VisionEncoder.forward`` returns."""

    tokens: torch.Tensor  # [B, N, d] last-stage patch tokens (after LayerNorm)
    pooled: torch.Tensor  # [B, d] mean over tokens (Swin's pooler_output)
    embedding: torch.Tensor  # [B, p] projected and L2-normalised
    attentions: tuple[torch.Tensor, ...] | None = None  # per stage [B*windows, heads, w*w, w*w]


class VisionEncoder(nn.Module):
    """Swin backbone → tokens; mean pool → ``Linear(d, p, bias=False)`` → L2 norm (MedCLIP)."""

    #: MedCLIP's grey, padded-to-square input (``data.readers.images.preprocess``).
    pixel_space = MEDCLIP_SPACE

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or EncoderConfig.tiny()
        self.config.validate()
        self.backbone = SwinModel(self.config.to_swin_config(), add_pooling_layer=True)
        if self.config.stem == "conv":
            from .conv_stem import ConvStem

            self.backbone.embeddings.patch_embeddings.projection = ConvStem(
                self.config.num_channels, self.config.embed_dim, self.config.patch_size, self.config.stem_width,
                self.config.stem_depth)
        self.projection = nn.Linear(self.config.token_dim, self.config.projection_dim, bias=False)
        self.hook_tokens = nn.Identity()  # [B, N, d]
        self.hook_pooled = nn.Identity()  # [B, d]
        self.hook_embedding = nn.Identity()  # [B, p] before normalisation

    @property
    def token_dim(self) -> int:
        """``d``: width of each patch token."""
        return self.config.token_dim

    @property
    def grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of the token map; ``N = rows * cols``."""
        return self.config.grid

    @property
    def num_tokens(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def image_size(self) -> int:
        """Side ``S`` of the square input."""
        return self.config.image_size

    def image_processor(self, image: np.ndarray | str | os.PathLike) -> torch.Tensor:
        """A grey image ``[H, W]`` (or its file) as this encoder reads it: ``[1, 1, S, S]`` (MedCLIP's transform)."""
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        return preprocess(image, self.config.image_size)[None]

    def token_grid_layer(self) -> tuple[nn.Module, tuple[int, int], int]:
        """Where the LLM's image tokens lie on a grid: the module whose output is ``[B, prefix + rows·cols, d]``,
        ``(rows, cols)`` and ``prefix`` (tokens before the grid). Grad-CAM hooks it (``interpret.hooks``)."""
        return self.hook_tokens, self.grid, 0

    def _check_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Validate ``[B, C, S, S]`` and repeat one channel to the backbone's channel count."""
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        size = self.config.image_size
        if pixel_values.dim() != 4 or pixel_values.shape[-2:] != (size, size):
            raise ValueError(
                f"pixel_values must be [batch, 1, {size}, {size}] (from data.images.preprocess(image, {size})), "
                f"got shape {list(pixel_values.shape)}"
            )
        channels = pixel_values.shape[1]
        want = self.config.num_channels
        if channels == want:
            return pixel_values
        if channels == 1:
            return pixel_values.expand(-1, want, -1, -1)  # [B, 3, S, S] MedCLIP repeats grey to RGB
        raise ValueError(f"pixel_values has {channels} channels; expected 1 or {want}")

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool = False) -> EncoderOutput:
        """Encode ``pixel_values`` ``[B, 1, S, S]`` (``data.images.preprocess`` output, stacked)."""
        pixel_values = self._check_pixels(pixel_values)
        param = next(self.backbone.parameters())
        pixel_values = pixel_values.to(device=param.device, dtype=param.dtype)
        previous = self.backbone.config._attn_implementation
        if output_attentions and previous != "eager":
            self.backbone.set_attn_implementation("eager")
        try:
            out = self.backbone(pixel_values=pixel_values, output_attentions=output_attentions)
        finally:
            if output_attentions and previous != "eager":
                self.backbone.set_attn_implementation(previous)
        tokens = self.hook_tokens(out.last_hidden_state)  # [B, N, d]
        pooled = self.hook_pooled(tokens.mean(dim=1))  # [B, d]
        projected = self.hook_embedding(self.projection(pooled))  # [B, p]
        embedding = nn.functional.normalize(projected, dim=-1)  # [B, p]
        return EncoderOutput(
            tokens=tokens,
            pooled=pooled,
            embedding=embedding,
            attentions=tuple(out.attentions) if output_attentions and out.attentions else None,
        )

    def pooled_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Mean-pooled features of each level of the backbone, for ``pixel_values`` ``[B, 1, S, S]``:
        the patch embedding's output, then each Swin stage's output (after its patch merging), the
        last one after the final LayerNorm (the tokens the projection reads). A list of ``[B, d_l]``."""
        pixel_values = self._check_pixels(pixel_values)
        param = next(self.backbone.parameters())
        out = self.backbone(pixel_values=pixel_values.to(device=param.device, dtype=param.dtype),
                            output_hidden_states=True)
        levels = [*out.hidden_states[:-1], out.last_hidden_state]  # each [B, N_l, d_l]
        return [level.mean(dim=1) for level in levels]  # each [B, d_l]

    def encode_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch tokens only: ``[B, N, d]``."""
        return self.forward(pixel_values).tokens

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Contrastive embedding only: ``[B, p]``, unit length."""
        return self.forward(pixel_values).embedding

    def token_map(self, values: torch.Tensor) -> torch.Tensor:
        """Reshape per-token values ``[B, N, ...]`` to the grid ``[B, rows, cols, ...]``."""
        rows, cols = self.grid
        if values.shape[1] != rows * cols:
            raise ValueError(f"expected {rows * cols} tokens on dim 1, got shape {list(values.shape)}")
        return values.reshape(values.shape[0], rows, cols, *values.shape[2:])

    def feature_layer(self, stride: int = 4) -> tuple[nn.Module, int]:
        """An early module whose output is a spatial feature map ``[B, C, S/s, S/s]``, and its stride s.

        The conv stem's scale of stride ``stride`` (or its last scale when coarser); with Swin's
        own patch embedding (MedCLIP's layout) the patch projection, whose stride is the patch
        size (4 for swin-tiny). Feature-level attributions (``interpret.attribution``, method
        ``feature_ig``) are taken here: fine enough to point at a nodule, past the raw pixels.
        """
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 2 or stride & (stride - 1):
            raise ValueError(f"stride must be a power of two >= 2, got {stride!r}")
        projection = self.backbone.embeddings.patch_embeddings.projection
        if self.config.stem == "conv":
            scale = min(stride.bit_length() - 2, projection.scales - 1)
            return projection.scale_end(scale), 2 ** (scale + 1)
        return projection, self.config.patch_size

    def freeze(self) -> "VisionEncoder":
        """Freeze every parameter and switch to eval mode (XrayGPT keeps the encoder frozen)."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``encoder_config.json`` then ``encoder.safetensors`` into ``folder`` (each atomically;
        the weights last, so that their presence means the folder is complete)."""
        return save_model_folder(folder, self.config.to_dict(), self.state_dict(), CONFIG_FILE, WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> "VisionEncoder":
        """Load what ``save_pretrained`` wrote; ``RunFolderError`` names a missing file,
        ``CorruptFileError`` an unreadable one or weights whose sizes do not match the config."""
        model = load_model_folder(folder, CONFIG_FILE, WEIGHTS_FILE, lambda c: cls(EncoderConfig.from_dict(c)),
                                  "VisionEncoder.save_pretrained")
        return model.to(device)
