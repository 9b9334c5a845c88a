"""From the model's square input back to the radiograph the user gave.

``data.images.preprocess`` pads ``[H, W]`` with black to a square of side ``max(H, W)`` (content
centred), resizes it to ``S × S`` and centre-crops ``S`` (a no-op after an exact resize). A map
computed at ``S × S`` is therefore brought back by the inverse steps: resize to the padded square
(pixel centres ``u ↦ (u + ½)·side/S − ½``, i.e. bilinear with ``align_corners=False``), then cut
the padding away. Peaks are taken on the restored map, so they can never fall in the padding.

The released XrayGPT reads images through BLIP-2's eval processor, which resizes to the square
without padding (``PixelSpace.fit == "stretch"``): its maps come back by one bilinear resize to
``[H, W]``. Every function takes ``fit`` (``"pad"``, the default, or ``"stretch"``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def padding_offsets(shape: tuple[int, int]) -> tuple[int, int, int]:
    """``(side, top, left)`` of ``pad_to_square`` for an image of ``shape`` ``(H, W)``."""
    height, width = (int(v) for v in shape)
    if height < 1 or width < 1:
        raise ValueError(f"image shape must be positive, got {shape}")
    side = max(height, width)
    return side, (side - height) // 2, (side - width) // 2


def _check_fit(fit: str) -> None:
    if fit not in ("pad", "stretch"):
        raise ValueError(f"fit must be 'pad' or 'stretch', got {fit!r}")


def map_to_image(saliency: np.ndarray, shape: tuple[int, int], fit: str = "pad") -> np.ndarray:
    """Resample a model-resolution map ``[S, S]`` onto the original image ``[H, W]``."""
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.ndim != 2 or saliency.shape[0] != saliency.shape[1]:
        raise ValueError(f"expected a square [S, S] map, got {saliency.shape}")
    _check_fit(fit)
    height, width = int(shape[0]), int(shape[1])
    if fit == "stretch":
        padding_offsets(shape)  # checks the shape
        return F.interpolate(torch.from_numpy(saliency)[None, None], size=(height, width), mode="bilinear",
                             align_corners=False)[0, 0].numpy()  # [H, W]
    side, top, left = padding_offsets(shape)
    square = F.interpolate(torch.from_numpy(saliency)[None, None], size=(side, side), mode="bilinear",
                           align_corners=False)[0, 0]  # [side, side]
    return square[top:top + height, left:left + width].numpy()  # [H, W]


def peak_in_image(saliency: np.ndarray, shape: tuple[int, int], fit: str = "pad") -> tuple[int, int]:
    """``(row, col)`` of the map's maximum in the original image's pixel coordinates."""
    restored = map_to_image(saliency, shape, fit)
    r, c = np.unravel_index(int(np.argmax(restored)), restored.shape)
    return int(r), int(c)


def model_to_image(row: float, col: float, size: int, shape: tuple[int, int], fit: str = "pad") -> tuple[float, float]:
    """A point at model resolution ``size`` → the same point in the original ``[H, W]`` image."""
    _check_fit(fit)
    if fit == "stretch":
        return (row + 0.5) * shape[0] / size - 0.5, (col + 0.5) * shape[1] / size - 0.5
    side, top, left = padding_offsets(shape)
    scale = side / size
    return (row + 0.5) * scale - 0.5 - top, (col + 0.5) * scale - 0.5 - left
