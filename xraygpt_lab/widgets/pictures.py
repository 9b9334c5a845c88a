"""Small PNGs for the widgets: radiograph thumbnails and heat-map overlays (no figure needed)."""
from __future__ import annotations

import io

import numpy as np


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"{name} must be a 2-D [H, W] array, got shape {list(array.shape)}")
    return np.clip(np.nan_to_num(array), 0.0, 1.0)


def png_bytes(rgb_or_gray: np.ndarray) -> bytes:
    """Encode ``[H, W]`` or ``[H, W, 3]`` floats in ``[0, 1]`` as PNG."""
    from PIL import Image

    array = np.clip(np.asarray(rgb_or_gray, dtype=np.float32), 0.0, 1.0)
    buffer = io.BytesIO()
    Image.fromarray((array * 255.0 + 0.5).astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def resize(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink ``[H, W]`` or ``[H, W, 3]`` so that its longer side is at most ``max_side`` (bilinear)."""
    from PIL import Image

    array = np.asarray(image, dtype=np.float32)
    height, width = array.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if array.ndim == 2:
        return np.asarray(Image.fromarray(array, mode="F").resize(size, Image.BILINEAR), dtype=np.float32)
    channels = [np.asarray(Image.fromarray(array[..., c], mode="F").resize(size, Image.BILINEAR))
                for c in range(array.shape[2])]
    return np.stack(channels, axis=-1).astype(np.float32)


def thumbnail_png(image: np.ndarray, max_side: int = 192) -> bytes:
    """A grey PNG of a radiograph ``[H, W]`` in ``[0, 1]``, longer side ``max_side`` at most."""
    return png_bytes(resize(_check_image(image), max_side))


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.55,
                colormap: str = "inferno") -> np.ndarray:
    """Blend ``heatmap`` ``[H, W]`` in ``[0, 1]`` over the grey ``image`` → ``[H, W, 3]``.

    The opacity follows the heat value, so cold pixels leave the radiograph visible.
    """
    from matplotlib import colormaps

    gray = _check_image(image)
    heat = _check_image(heatmap, "heatmap")
    if heat.shape != gray.shape:
        raise ValueError(f"heatmap {list(heat.shape)} and image {list(gray.shape)} differ in shape")
    colours = colormaps[colormap](heat)[..., :3].astype(np.float32)  # [H, W, 3]
    weight = (alpha * heat)[..., None]  # [H, W, 1]
    return (1.0 - weight) * gray[..., None] + weight * colours


def overlay_png(image: np.ndarray, heatmap: np.ndarray, max_side: int = 256, alpha: float = 0.55) -> bytes:
    """PNG of :func:`overlay_rgb` with the longer side at most ``max_side``."""
    return png_bytes(resize(overlay_rgb(image, heatmap, alpha), max_side))


def set_picture(image_widget, png: bytes) -> None:
    """Show ``png`` in an ``ipywidgets.Image``, or hide the widget when ``png`` is empty.

    An empty Image widget draws the browser's broken-image icon; hiding it avoids that.
    """
    image_widget.value = png
    image_widget.layout.display = "" if png else "none"
