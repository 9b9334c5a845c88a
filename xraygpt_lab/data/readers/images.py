"""Reading radiographs (PNG, JPEG, DICOM) and the MedCLIP preprocessing transform.

Contract (docs/CONTRIBUTING.md): an image in memory is ``np.ndarray`` float32 ``[H, W]`` in
``[0, 1]`` with 0 = black (air) and 1 = white (bone), whatever the file stored.

* PNG / JPEG / other Pillow formats: 8- or 16-bit, modes L, I;16, I, F, RGB, RGBA, LA, P, CMYK
  are reduced to one grey channel (ITU-R 601-2 luma for colour, alpha composited over black);
  an EXIF orientation is applied, as image viewers do.
* DICOM (pydicom, compressed ones too): :mod:`xraygpt_lab.data.readers.dicom` (modality and VOI
  LUTs, MONOCHROME1 inverted so that bone is always white).

Every failure raises :class:`xraygpt_lab.errors.ImageLoadError` naming the file and the reason;
:func:`xraygpt_lab.data.readers.headers.check_image` makes the same checks without decoding.

The model input transform is MedCLIP's (RyanWangZf/MedCLIP ``MedCLIPProcessor``): pad to a
square with 0, bicubic resize, centre crop, normalise with the mean/std below.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xraygpt_lab.data.readers.dicom import CORRUPT, load_dicom, min_max
from xraygpt_lab.data.readers.headers import MAX_PIXELS, check_file, is_dicom, pillow_size
from xraygpt_lab.errors import ImageLoadError

#: MedCLIP pixel statistics (MedCLIP ``constants.py``: IMG_MEAN / IMG_STD), on a [0, 1] scale.
MEDCLIP_MEAN: float = 0.5862785803043838
MEDCLIP_STD: float = 0.27950088968644304

__all__ = ["MAX_PIXELS", "MEDCLIP_MEAN", "MEDCLIP_STD", "center_crop", "denormalize", "load_image",
           "pad_to_square", "preprocess"]


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a radiograph as float32 ``[H, W]`` in ``[0, 1]`` (0 = air, 1 = bone).

    Raises :class:`ImageLoadError` when the file is missing, empty, truncated or corrupt,
    not an image, larger than ``max_pixels`` pixels, or a DICOM with an unsupported
    photometric interpretation.
    """
    path = Path(path)
    check_file(path)
    image = load_dicom(path, max_pixels) if is_dicom(path) else _load_pillow(path, max_pixels)
    if not np.isfinite(image).all():
        raise ImageLoadError(f"{path}: image contains NaN or infinite values", CORRUPT)
    return np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)  # [H, W]


# --------------------------------------------------------------------------- Pillow formats


def _load_pillow(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image, ImageOps

    pillow_size(path, max_pixels)  # not an image, decompression bomb: refused from the header
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.seek(0)  # first frame of animated / multi-page files
                im.load()
                # the EXIF orientation (a phone's or a scanner's JPEG), applied as every viewer does
                return _pillow_to_gray(ImageOps.exif_transpose(im))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"{path}: truncated or corrupt image data ({exc})", CORRUPT) from exc


def _pillow_to_gray(im) -> np.ndarray:
    """One grey channel in [0, 1] from any Pillow mode."""
    from PIL import Image

    mode = im.mode
    if mode.startswith("I;16"):  # 16-bit grey (PNG/TIFF)
        return np.asarray(im, dtype=np.float32) / 65535.0
    if mode == "I":  # 32-bit int: Pillow's container for 16-bit grey PNGs in some versions
        values = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if values.max(initial=0) > 255 else 255.0
        return (values / scale).astype(np.float32)
    if mode == "F":  # float images: already [0, 1], or min-max scaled
        values = np.asarray(im, dtype=np.float32)
        if not np.isfinite(values).all():
            return values  # refused by the caller, naming the file (scaled, ±inf would become 0)
        return values if values.min() >= 0 and values.max() <= 1 else min_max(values)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA"):
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))  # transparent = air
        im = Image.alpha_composite(black, im.convert("RGBA"))
    gray = im if im.mode == "L" else im.convert("L")  # "1", RGB, CMYK, YCbCr, ...
    return np.asarray(gray, dtype=np.float32) / 255.0


# --------------------------------------------------------------------------- MedCLIP transform


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad ``[H, W]`` with zeros (black) to ``[S, S]``, S = max(H, W), content centred."""
    height, width = image.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = np.zeros((side, side), dtype=np.float32)  # [S, S]
    square[top:top + height, left:left + width] = image
    return square


def preprocess(image: np.ndarray, size: int) -> torch.Tensor:
    """MedCLIP transform: float32 ``[1, size, size]`` ready for the encoder.

    Pad to square (fill 0) -> bicubic resize to ``size`` (antialiased, like Pillow's) ->
    centre crop ``size`` -> normalise ``(x - MEDCLIP_MEAN) / MEDCLIP_STD``. MedCLIP works on
    8-bit Pillow images, so bicubic overshoot is clipped to [0, 1] before normalising; we keep
    float precision instead of rounding to 8 bits. Use ``size = TINY.image_size`` (128) for the
    tiny profile and 224 for MedCLIP.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"preprocess expects a numpy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise ValueError(f"preprocess expects a 2-D [H, W] image, got shape {image.shape}")
    if image.size == 0:
        raise ValueError("preprocess got an empty image")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if not np.isfinite(image).all():
        raise ValueError("preprocess got an image with NaN or infinite values")
    square = torch.from_numpy(pad_to_square(image.astype(np.float32)))  # [S, S]
    resized = F.interpolate(square[None, None], size=(size, size), mode="bicubic",
                            align_corners=False, antialias=True)[0]  # [1, size, size]
    resized = center_crop(resized, size).clamp(0.0, 1.0)  # [1, size, size]
    return ((resized - MEDCLIP_MEAN) / MEDCLIP_STD).contiguous()  # [1, size, size]


def center_crop(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """Crop the central ``size x size`` window of ``[C, H, W]`` (torchvision CenterCrop rule)."""
    height, width = tensor.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"cannot centre-crop {height}x{width} to {size}x{size}")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return tensor[..., top:top + size, left:left + size]  # [C, size, size]


def denormalize(tensor: torch.Tensor) -> torch.Tensor:
    """Undo the MedCLIP normalisation (for display): ``x * std + mean``, same shape."""
    return tensor * MEDCLIP_STD + MEDCLIP_MEAN


# --------------------------------------------------------------------------- a model's pixel space


@dataclass(frozen=True)
class PixelSpace:
    """How a model's input tensor ``[B, C, S, S]`` relates to the grey radiograph ``[H, W]`` in ``[0, 1]``.

    ``mean`` / ``std`` per channel (``x = (grey - mean) / std``); ``fit`` says how the image became a
    square: ``"pad"`` (pad with black, then resize: MedCLIP's transform, :func:`preprocess`) or
    ``"stretch"`` (resize to the square, aspect not kept: BLIP-2's eval processor). Attribution
    baselines, the model view of the chat panel and maps back onto the image read it.
    """

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fit: str
    mean_name: str  # what the all-zero input is, e.g. "MedCLIP mean grey"

    @property
    def channels(self) -> int:
        return len(self.mean)

    def level(self, grey: float) -> list[float]:
        """The normalised value of a flat grey level in ``[0, 1]``, per channel."""
        return [(float(grey) - m) / s for m, s in zip(self.mean, self.std)]

    def to_grey(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Undo the normalisation: ``[B, C, S, S]`` → grey ``[B, S, S]`` in ``[0, 1]`` (channel mean)."""
        shape = (1, self.channels, 1, 1)
        x = pixel_values.detach().float().cpu()
        x = x * torch.tensor(self.std).view(shape) + torch.tensor(self.mean).view(shape)  # [B, C, S, S]
        return np.clip(x.mean(dim=1).numpy(), 0.0, 1.0).astype(np.float32)


#: The toolkit's encoders read MedCLIP's grey input (:func:`preprocess`).
MEDCLIP_SPACE = PixelSpace("MedCLIP grey", (MEDCLIP_MEAN,), (MEDCLIP_STD,), "pad", "MedCLIP mean grey")
