"""Pictures of explanations: overlays with colour bars, method comparisons, tables, counterfactuals.

Conventions (Captum tutorials): every overlay names its method, target and BASELINE in the title,
has a colour bar, and draws the radiograph in grey underneath (0 = black air, 1 = white bone; the
patient's left on the image's right, marked "L"). Ground-truth masks are drawn as a cyan contour
and the map's peak as a cross. Figures are created at ``dpi`` ≤ 80 so notebooks stay small.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping

import numpy as np

from .maps import upsample_grid

DPI = 72


def _plt():
    """``matplotlib.pyplot`` (imported lazily; without a display matplotlib falls back to Agg)."""
    import matplotlib.pyplot as plt

    return plt


def _values(saliency) -> np.ndarray:
    return np.asarray(getattr(saliency, "map", saliency), dtype=np.float32)


def overlay(ax, image: np.ndarray, saliency, *, title: str | None = None, baseline: str | None = None,
            mask: np.ndarray | None = None, mark_peak: bool = True, cmap: str = "inferno", alpha: float = 0.55,
            colorbar: bool = True, signed: bool | None = None):
    """Draw ``saliency`` (an ``AttributionMap`` or ``[H, W]`` array) over ``image`` ``[H, W]`` on ``ax``.

    Signed maps (negative values present) use a diverging map centred on zero. Returns the
    ``AxesImage`` of the heat map.
    """
    plt = _plt()
    values = _values(saliency)
    image = np.asarray(image, dtype=np.float32)
    if values.shape != image.shape:
        raise ValueError(f"map {values.shape} and image {image.shape} differ; resample with geometry.map_to_image")
    method = getattr(saliency, "method", None)
    baseline = baseline if baseline is not None else getattr(saliency, "baseline", None)
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    signed = bool(values.min() < 0 < values.max()) if signed is None else signed
    if signed:
        limit = float(np.abs(values).max()) or 1.0
        heat = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=alpha, interpolation="bilinear")
    else:
        heat = ax.imshow(values, cmap=cmap, alpha=alpha, interpolation="bilinear")
    if mask is not None and np.any(mask):
        ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors="cyan", linewidths=1.0)
    if mark_peak:
        r, c = np.unravel_index(int(np.argmax(values)), values.shape)
        ax.plot([c], [r], marker="x", color="lime", markersize=9, mew=2)
    ax.text(0.97, 0.03, "L", color="yellow", transform=ax.transAxes, ha="right", va="bottom", fontsize=9)
    lines = [title or method or "map"]
    if baseline:
        lines.append("baseline: " + baseline)
    ax.set_title("\n".join(textwrap.fill(line, 34) for line in lines), fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        plt.colorbar(heat, ax=ax, fraction=0.046, pad=0.03)
    return heat


def compare_methods(image: np.ndarray, maps: Mapping[str, object], mask: np.ndarray | None = None,
                    columns: int = 4, suptitle: str | None = None):
    """One overlay per method, side by side; returns the ``Figure``."""
    plt = _plt()
    n = len(maps)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.3 * rows), dpi=DPI, squeeze=False)
    for ax, (name, saliency) in zip(axes.flat, maps.items()):
        overlay(ax, image, saliency, title=name, mask=mask)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def table_heatmap(table, ax=None, title: str = "", fmt: str = ".2f", cmap: str = "viridis",
                  vmin: float | None = 0.0, vmax: float | None = 1.0):
    """Seaborn heat map of a method × observation table (the ``n`` column is dropped)."""
    import seaborn as sns

    plt = _plt()
    data = table.drop(columns=[c for c in ("n",) if c in table.columns])
    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * data.shape[1] + 2, 0.45 * data.shape[0] + 1.2), dpi=DPI)
    sns.heatmap(data.astype(float), annot=True, fmt=fmt, cmap=cmap, vmin=vmin, vmax=vmax, ax=ax,
                cbar_kws={"shrink": 0.8})
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("")
    ax.set_xlabel("")
    ax.tick_params(labelsize=8)
    return ax


def curves_plot(curves: Mapping[str, object], ax=None, title: str = ""):
    """Normalised deletion or insertion curves, one line per method, AUC in the legend."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3), dpi=DPI)
    for name, curve in curves.items():
        ax.plot(curve.fractions, curve.normalised, label=f"{name} (AUC {curve.auc:.2f})")
    ax.set_xlabel("fraction of pixels changed")
    ax.set_ylabel("normalised target")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return ax


def counterfactual_figure(cf):
    """Images with/without the finding, pixel diff, both attributions and their diff, report diff."""
    from .counterfactual import format_diff

    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(10, 7.6), dpi=DPI)
    mask = cf.with_case.masks.get(cf.observation)
    axes[0, 0].imshow(cf.with_case.image, cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(f"with {cf.observation}", fontsize=9)
    axes[0, 1].imshow(cf.without_case.image, cmap="gray", vmin=0, vmax=1)
    axes[0, 1].set_title(f"without (same seed {cf.with_case.seed})", fontsize=9)
    diff = cf.pixel_diff
    limit = float(np.abs(diff).max()) or 1.0
    im = axes[0, 2].imshow(diff, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[0, 2].set_title("pixels: with − without", fontsize=9)
    plt.colorbar(im, ax=axes[0, 2], fraction=0.046, pad=0.03)
    overlay(axes[1, 0], cf.with_case.image, cf.map_with, title=f"{cf.map_with.method} with (score {cf.map_with.score:.2f})", mask=mask)
    overlay(axes[1, 1], cf.without_case.image, cf.map_without,
            title=f"{cf.map_without.method} without (score {cf.map_without.score:.2f})", mask=mask)
    overlay(axes[1, 2], cf.with_case.image, cf.attribution_diff, title="attribution: with − without",
            baseline=cf.map_with.baseline, mask=mask, signed=True)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    text = textwrap.fill(f"phrase {cf.phrase!r}. Report diff (without → with): " + format_diff(cf.report_diff), 150)
    fig.text(0.01, 0.005, text, fontsize=7, va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def token_attention_figure(image: np.ndarray, attention, max_tokens: int = 8, layers=None, heads=None):
    """One small overlay per counted answer token: where its query attended among image tokens."""
    plt = _plt()
    maps = attention.grid_maps(layers, heads)[:max_tokens]  # [K, rows, cols]
    size = image.shape[0]
    up = upsample_grid(maps, size).cpu().numpy()
    k = up.shape[0]
    fig, axes = plt.subplots(1, k, figsize=(2.4 * k, 2.8), dpi=DPI, squeeze=False)
    for i in range(k):
        overlay(axes[0, i], image, up[i], title=repr(attention.tokens[i]), baseline="none (attention)",
                colorbar=False)
    fig.tight_layout()
    return fig


def query_attention_figure(attention, title: str = ""):
    """The LLM's attention from each counted answer token (rows) to each image token (columns),
    layers and heads averaged: for the released model, its Q-Former query tokens. Returns the figure."""
    plt = _plt()
    weights = attention.aggregate().numpy()  # [K, N]
    k, n = weights.shape
    fig, ax = plt.subplots(figsize=(min(10.0, 1.5 + 0.22 * n), 0.9 + 0.28 * k), dpi=DPI)
    heat = ax.imshow(weights, cmap="magma", aspect="auto", interpolation="nearest")
    ax.set_yticks(range(k))
    ax.set_yticklabels([repr(t) for t in attention.tokens], fontsize=7)
    ax.set_xticks(range(0, n, max(1, n // 16)))
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("image token (query) index", fontsize=8)
    ax.set_title(title or "answer token → image token attention (mean of layers and heads)", fontsize=8)
    plt.colorbar(heat, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    return fig


def query_maps_figure(image: np.ndarray, maps, columns: int = 8, title: str = ""):
    """One small overlay per query token: where it reads in the image (``maps`` ``[Q, rows, cols]``,
    e.g. ``QFormerStack.layout``), upsampled to ``image`` ``[S, S]``. Returns the figure."""
    import torch

    plt = _plt()
    maps = torch.as_tensor(maps).float()
    up = upsample_grid(maps, image.shape[0]).numpy()  # [Q, S, S]
    q = up.shape[0]
    cols = min(columns, q)
    rows = (q + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.35 * rows), dpi=DPI, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < q:
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.imshow(up[i], cmap="inferno", alpha=0.6)
            ax.set_title(f"q{i}", fontsize=7)
    fig.suptitle(title or "where each query token reads (cross-attention rolled out through the ViT)", fontsize=8)
    fig.tight_layout()
    return fig
