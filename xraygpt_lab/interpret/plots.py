"""Pictures of explanations: overlays with colour bars, method comparisons, tables, counterfactuals.

Conventions (Captum tutorials): every overlay names its method, target and BASELINE in the title,
has a colour bar, and draws the radiograph in grey underneath (0 = black air, 1 = white bone; the
patient's left on the image's right, marked "L"). Ground-truth masks are drawn as a cyan contour
and the map's peak as a cross. Figures are created at ``DPI`` (100) with titles of at least 8 pt;
notebooks store them as JPEG to stay small.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping

import numpy as np

from .maps import upsample_grid

DPI = 100


def _plt():
    """``matplotlib.pyplot`` (imported lazily; without a display matplotlib falls back to Agg)."""
    import matplotlib.pyplot as plt

    return plt


def _values(saliency) -> np.ndarray:
    return np.asarray(getattr(saliency, "map", saliency), dtype=np.float32)


#: Longest side an overlay draws at full resolution; a larger film and its map are drawn from
#: block-reduced copies (a figure shows a few hundred pixels a side; a 100-megapixel film drawn
#: whole needs gigabytes of colour arrays).
MAX_DRAWN = 1024


def _block_reduce(values: np.ndarray, step: tuple[int, int], how: str) -> np.ndarray:
    """``values`` ``[H, W]`` reduced by ``step`` (rows, columns) (``"mean"`` or ``"max"`` of each
    block; edge blocks repeat their last row or column)."""
    sr, sc = step
    if sr <= 1 and sc <= 1:
        return values
    h, w = values.shape
    padded = np.pad(values, ((0, -h % sr), (0, -w % sc)), mode="edge")  # [H', W']
    blocks = padded.reshape(padded.shape[0] // sr, sr, padded.shape[1] // sc, sc)
    return blocks.max(axis=(1, 3)) if how == "max" else blocks.mean(axis=(1, 3))


#: Percentile of the positive evidence at which the overlay's colour scale saturates.
CLIP_PERCENTILE = 99.0


def evidence_scale(values: np.ndarray, percentile: float = CLIP_PERCENTILE) -> tuple[np.ndarray, float]:
    """Positive evidence of a map scaled to ``[0, 1]``, clipped at its ``percentile``-th percentile.

    Returns ``(scaled [H, W], top)``; ``top`` is the map value drawn at full colour. A few extreme
    pixels would otherwise take the whole colour range and leave the rest of the map invisible
    (Sundararajan et al. 2017 and Captum's ``visualize_image_attr`` clip the same way).
    """
    positive = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    nonzero = positive[positive > 0]
    top = float(np.percentile(nonzero, percentile)) if nonzero.size else 0.0
    if top <= 0:
        return np.zeros(positive.shape, dtype=np.float32), 0.0
    return np.clip(positive / top, 0.0, 1.0).astype(np.float32), top


def overlay(ax, image: np.ndarray, saliency, *, title: str | None = None, baseline: str | None = None,
            mask: np.ndarray | None = None, mark_peak: bool = True, cmap: str = "inferno", alpha: float = 0.75,
            colorbar: bool = True, signed: bool = False, label: str | None = None):
    """Draw ``saliency`` (an ``AttributionMap`` or ``[H, W]`` array) over ``image`` ``[H, W]`` on ``ax``.

    The one overlay of the toolkit: the radiograph in grey beneath; the map's **positive evidence**
    in a sequential colour map clipped at the 99th percentile (:func:`evidence_scale`), its opacity
    following the value so that cold pixels leave the film visible; the ground-truth mask outlined
    in cyan on top; the map's peak as a green cross; a colour bar in the map's units. ``signed``
    draws a difference map instead (diverging, centred on zero, clipped at the 99th percentile of
    its magnitude). ``label`` names the colour bar's units (default: what is drawn). Returns the
    ``AxesImage`` of the heat map.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    plt = _plt()
    values = _values(saliency)
    image = np.asarray(image, dtype=np.float32)
    if values.shape != image.shape:
        raise ValueError(f"map {values.shape} and image {image.shape} differ; resample with geometry.map_to_image")
    method = getattr(saliency, "method", None)
    baseline = baseline if baseline is not None else getattr(saliency, "baseline", None)
    h, w = image.shape
    step = (-(-h // MAX_DRAWN), -(-w // MAX_DRAWN))  # rows, columns: 1 up to MAX_DRAWN pixels a side
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # drawn in the film's own pixel coordinates at any step
    drawn = _block_reduce(values, step, "max")  # a block keeps its strongest evidence
    ax.imshow(_block_reduce(image, step, "mean"), cmap="gray", vmin=0, vmax=1, interpolation="nearest",
              extent=extent)
    if signed:
        limit = float(np.percentile(np.abs(values), CLIP_PERCENTILE)) or float(np.abs(values).max()) or 1.0
        drawn = _block_reduce(values, step, "mean")
        heat = ax.imshow(drawn, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.6, interpolation="bilinear",
                         extent=extent)
        mappable, default_label = heat, "difference (clipped at 99th pct)"
    else:
        scaled, top = evidence_scale(drawn)
        rgba = colormaps[cmap](scaled)  # [H, W, 4]
        rgba[..., 3] = alpha * np.sqrt(scaled)  # opacity follows the evidence: the film shows through
        heat = ax.imshow(rgba, interpolation="bilinear", extent=extent)
        mappable = ScalarMappable(norm=Normalize(0.0, top or 1.0), cmap=cmap)
        default_label = "positive evidence (clipped at 99th pct)"
    if mask is not None and np.any(mask):
        reduced = _block_reduce(np.asarray(mask, dtype=float), step, "max")
        if min(reduced.shape) >= 2:  # a contour needs two rows and two columns
            rows = np.arange(reduced.shape[0]) * step[0] + (step[0] - 1) / 2  # block centres, in film pixels
            cols = np.arange(reduced.shape[1]) * step[1] + (step[1] - 1) / 2
            ax.contour(cols, rows, reduced, levels=[0.5], colors="cyan", linewidths=1.2)
    if mark_peak:  # the peak of the full-resolution map
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
        bar = plt.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=7)
        bar.formatter.set_powerlimits((-2, 3))
        bar.set_label(label if label is not None else default_label, fontsize=7)
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
        if np.isfinite(curve.auc):
            ax.plot(curve.fractions, curve.normalised, label=f"{name} (AUC {curve.auc:.2f})")
        else:  # the baseline scores as high as the image: nothing to delete (faithfulness.MIN_GAP)
            ax.plot([], [], label=f"{name}: no curve (gap {curve.gap:.2f} nats)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("fraction of pixels changed", fontsize=8)
    ax.set_ylabel("target, 1 = image, 0 = baseline", fontsize=8)
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
    ax.set_yticklabels([repr(t) for t in attention.tokens], fontsize=8)
    ax.set_xticks(range(0, n, max(1, n // 16)))
    ax.tick_params(axis="x", labelsize=8)
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
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows), dpi=DPI, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < q:
            overlay(ax, image, up[i], title=f"q{i}", mark_peak=False, colorbar=False)
    fig.suptitle(title or "where each query token reads (cross-attention rolled out through the ViT)", fontsize=9)
    fig.tight_layout()
    return fig
