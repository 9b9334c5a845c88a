"""Hooks the explanations need on kept modules: eager attention, and a token grid Grad-CAM can read.

Both encoders say where their tokens lie on a grid (``token_grid_layer()``): the tiny Swin its
last-stage tokens ``[B, rows·cols, d]`` (what the LLM sees); the released EVA ViT its last block
the Q-Former reads, ``[B, 1 + P, D]`` after ``ln_vision``, whose first token is [CLS]. Those
modules return token sequences, not the ``[B, d, rows, cols]`` layout ``LayerGradCam`` expects, so
:func:`token_grid` routes the grid part through an identity module laid out spatially.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eager_attention(module: nn.Module) -> Iterator[None]:
    """Switch a Hugging Face model to eager attention (SDPA kernels return no weights), then back."""
    previous = module.config._attn_implementation
    if previous != "eager":
        module.set_attn_implementation("eager")
    try:
        yield
    finally:
        if previous != "eager":
            module.set_attn_implementation(previous)


class TokenGrid(nn.Identity):
    """Identity whose output is the encoder's grid tokens laid out ``[B, d, rows, cols]``."""


@contextlib.contextmanager
def token_grid(encoder: nn.Module) -> Iterator[TokenGrid]:
    """While active, the output of ``encoder.token_grid_layer()`` passes through a :class:`TokenGrid`.

    Yields that module: give it to ``LayerGradCam`` (or hook it) to read a spatial tensor instead
    of a token sequence. Tokens before the grid (a ViT's [CLS]) pass unchanged.
    """
    layer, (rows, cols), prefix = encoder.token_grid_layer()
    grid_module = TokenGrid()

    def reroute(_module: nn.Module, _inputs: tuple, tokens: torch.Tensor) -> torch.Tensor:
        head, tokens = tokens[:, :prefix], tokens[:, prefix:]  # [B, prefix, d], [B, N, d]
        b, n, d = tokens.shape
        spatial = tokens.transpose(1, 2).reshape(b, d, rows, cols)  # [B, d, rows, cols]
        routed = grid_module(spatial).reshape(b, d, n).transpose(1, 2)  # [B, N, d]
        return torch.cat([head, routed], dim=1) if prefix else routed

    handle = layer.register_forward_hook(reroute)
    try:
        yield grid_module
    finally:
        handle.remove()
