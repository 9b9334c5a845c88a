"""Attention maps: where the answer's tokens look in the image, and what the encoder mixes.

Views (notebooks 06 and 09), one code path for the tiny model and the released XrayGPT
(``interpret.stacks`` knows how each lays its image tokens on the image):

* **LLM → image tokens** (:func:`llm_image_attention`). With the answer teacher-forced, read the
  LLM's attention weights from each answer token's query to the ``N`` image slots of the prompt,
  per layer and head ``[L, H, K, N]``, then average (or pick) layers and heads and lay the slots
  out on the image: the tiny model's slots are Swin grid cells; the released model's are its 32
  Q-Former query tokens, each spread over the patches by its rolled-out cross-attention. By
  default the query is the position that *predicts* the token (logits at ``t - 1`` choose token
  ``t``): that is where the decision was made. ``query="token"`` uses the token's own position.
* **Encoder rollout** (:func:`encoder_explanation`): ``"rollout"`` (target-free) and
  ``"grad_rollout"`` (gradient-weighted, Chefer et al. 2021) through the Swin windows
  (``interpret.swin_attention``) or through ViT and Q-Former (``interpret.qformer_attention``);
  ``"cross_attention"`` (released only): the queries' cross-attention rolled out to the patches.

Attention is not explanation (Jain & Wallace 2019): high weight says where information was read,
not that it mattered.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .hooks import eager_attention
from .maps import AttributionMap, grid_map, upsample_grid
from .stacks import vision_stack
from .swin_attention import (BlockAttention, attention_rollout, gradient_rollout, merge_matrix,  # noqa: F401
                             swin_attention_blocks)

#: Map kinds made from attention weights (:func:`attention_explanation`, :func:`encoder_explanation`).
ENCODER_METHODS: tuple[str, ...] = ("rollout", "grad_rollout", "cross_attention")


@dataclass
class ImageAttention:
    """Attention of answer tokens to image tokens: ``weights`` ``[L, H, K, N]`` (on the CPU).

    ``layout`` ``[N, rows, cols]`` places each image token on the image (the released model's
    queries); ``None`` when token ``n`` is grid cell ``n`` (the tiny model's Swin tokens).
    """

    weights: torch.Tensor  # [layers, heads, K counted tokens, N image tokens]
    tokens: list[str]  # the K counted answer tokens
    grid: tuple[int, int]  # (rows, cols) of the maps
    image_share: torch.Tensor = field(repr=False, default=None)  # [L, H, K] total weight on the image
    layout: torch.Tensor | None = field(repr=False, default=None)  # [N, rows, cols]

    def aggregate(self, layers: list[int] | None = None, heads: list[int] | None = None) -> torch.Tensor:
        """Mean over the chosen layers and heads (all by default): ``[K, N]``."""
        w = self.weights
        if layers is not None:
            w = w[list(layers)]
        if heads is not None:
            w = w[:, list(heads)]
        return w.mean(dim=(0, 1))

    def grid_maps(self, layers: list[int] | None = None, heads: list[int] | None = None) -> torch.Tensor:
        """Per counted token, its attention laid out on the grid: ``[K, rows, cols]``."""
        rows, cols = self.grid
        agg = self.aggregate(layers, heads)  # [K, N]
        if self.layout is not None:
            return torch.einsum("kn,nhw->khw", agg, self.layout)
        return agg.reshape(agg.shape[0], rows, cols)

    def image_map(self, size: int, layers: list[int] | None = None, heads: list[int] | None = None) -> np.ndarray:
        """Mean over counted tokens, upsampled to the image: ``[size, size]``."""
        grid = self.grid_maps(layers, heads).mean(dim=0, keepdim=True)  # [1, rows, cols]
        return upsample_grid(grid, size)[0].cpu().numpy()


def llm_image_attention(target, pixel_values: torch.Tensor, query: str = "predicting") -> ImageAttention:
    """Teacher-forced LLM attention from ``target``'s counted answer tokens to the image slots.

    ``target``: an ``interpret.targets.TextTarget`` (answer or phrase); ``pixel_values``
    ``[1, C, S, S]``. ``query``: ``"predicting"`` (position ``t-1``) or ``"token"`` (position ``t``).
    The weights are copied to the CPU, whichever device the model runs on.
    """
    if query not in ("predicting", "token"):
        raise ValueError(f"query must be 'predicting' or 'token', got {query!r}")
    if pixel_values.dim() != 4 or pixel_values.shape[0] != 1:
        raise ValueError(f"pixel_values must be [1, C, S, S], got {list(pixel_values.shape)}")
    model = target.model
    stack = vision_stack(model.encoder)
    cache = target._prepared()
    with torch.no_grad(), eager_attention(model.llm):
        tokens = model.encoder.encode_tokens(pixel_values)  # [1, N, d_vision]
        embeds = model.embed_image(features=tokens)  # [1, N, d_llm]
        _, out = target.from_image_embeds(embeds, output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise RuntimeError("the LLM returned no attention weights (needs eager attention)")
    rows = cache["predict_positions"] if query == "predicting" else cache["target_positions"]  # [K]
    start, n = cache["image_start"], cache["n_image"]
    stacked = torch.stack([a[0] for a in out.attentions])  # [L, H, T, T]
    picked = stacked[:, :, rows]  # [L, H, K, T]
    weights = picked[..., start:start + n].float().cpu()  # [L, H, K, N]
    return ImageAttention(weights=weights, tokens=target.target_token_texts, grid=stack.grid,
                          image_share=weights.sum(dim=-1), layout=stack.layout(pixel_values))


def _score(target, pixel_values: torch.Tensor) -> float:
    with torch.no_grad():
        return float(target(pixel_values)[0])


def attention_explanation(target, pixel_values: torch.Tensor, query: str = "predicting") -> AttributionMap:
    """:func:`llm_image_attention` averaged over layers, heads and counted tokens, as a map."""
    attention = llm_image_attention(target, pixel_values, query)
    grid = attention.grid_maps().mean(dim=0)  # [rows, cols]
    return grid_map("attention", grid.numpy(), pixel_values.shape[-1],
                    baseline="none (attention weights, mean of layers and heads)", target=target.description,
                    score=_score(target, pixel_values), resolution=vision_stack(target.model.encoder).token_resolution,
                    raw=attention.weights)


_ENCODER_BASELINES = {
    "grad_rollout": "none (gradient-weighted attention, Chefer et al. 2021)",
    "cross_attention": "none (Q-Former cross-attention, mean of the queries, rolled out through the ViT)",
}


def encoder_explanation(method: str, pixel_values: torch.Tensor, target=None, encoder=None) -> AttributionMap:
    """``method`` ``"rollout"`` or ``"cross_attention"`` (need ``encoder`` or ``target``) or
    ``"grad_rollout"`` (needs ``target``) as a map on the encoder's patch grid."""
    if method not in ENCODER_METHODS:
        raise ValueError(f"unknown encoder attention method {method!r}; choose one of {list(ENCODER_METHODS)}")
    if method == "grad_rollout" and target is None:
        raise ValueError("grad_rollout needs a target")
    encoder = encoder if encoder is not None else target.encoder
    stack = vision_stack(encoder)
    if method == "grad_rollout":
        grid, what = stack.grad_rollout(target, pixel_values), target.description
    else:
        grid = stack.rollout(pixel_values) if method == "rollout" else stack.cross_attention(pixel_values)
        what = "encoder (target-free)"
    baseline = stack.rollout_name if method == "rollout" else _ENCODER_BASELINES[method]
    score = float("nan") if target is None else _score(target, pixel_values)
    h0, w0 = grid.shape
    return grid_map(method, grid, pixel_values.shape[-1], baseline=baseline, target=what,
                    score=score, resolution=f"patch grid {h0}x{w0}")
