"""Solution for notebook 05: the pointing game with a tolerance (Zhang et al. 2018)."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt


def pointing_game(saliency: np.ndarray, mask: np.ndarray, tolerance: float) -> bool:
    """True when the map's maximum lies within ``tolerance`` pixels of the lesion mask."""
    if saliency.max() == saliency.min():  # a flat map points nowhere
        return False
    row, col = np.unravel_index(np.argmax(saliency), saliency.shape)
    return bool(distance_transform_edt(~mask.astype(bool))[row, col] <= tolerance)
