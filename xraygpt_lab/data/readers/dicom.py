"""Reading DICOM radiographs (pydicom), compressed ones included, and checking their headers.

* Photometric interpretation MONOCHROME1/2: the modality LUT (Rescale Slope/Intercept) is applied,
  then the VOI LUT Sequence or the Window Center/Width (DICOM PS3.3 C.11.2.1.2), and MONOCHROME1
  ("higher value = darker") is inverted so that bone is always white.
* RGB / YBR (secondary captures) and PALETTE COLOR (through its colour tables): reduced to grey
  with the ITU-R 601-2 luma weights, as Pillow images are.
* A ``.dcm`` file without the Part 10 preamble and file meta (the bare data set older archives
  wrote) is read as that data set.
* Compressed transfer syntaxes are decoded by pydicom's plugins: JPEG Baseline / 12-bit Extended,
  JPEG Lossless (process 14) and JPEG-LS through ``pylibjpeg`` + ``pylibjpeg-libjpeg``, JPEG 2000
  through ``pylibjpeg-openjpeg`` (dependencies of the toolkit), RLE by pydicom's own decoder
  (``pylibjpeg-rle`` is ten times faster, 0.04 against 0.37 s for 3072 x 2560 pixels, but aborts
  with a Rust panic on damaged data). A syntax with no decoder installed raises "no decoder for
  transfer syntax X; install Y", distinct from a damaged file ("truncated or corrupt DICOM pixel
  data").
* Header values are checked before they are used: a size, frame count or bit depth that is not a
  number is a corrupt file (the error names the field); an unusable window (empty, not a number,
  width < 1) is ignored and the full range of values shown, as viewers do.

Every failure raises :class:`xraygpt_lab.errors.ImageLoadError` with a ``reason`` category.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xraygpt_lab.errors import ImageLoadError

MONOCHROME = {"MONOCHROME1", "MONOCHROME2"}
COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420"}
PALETTE = "PALETTE COLOR"
PIXEL_DATA = 0x7FE00010
#: File names trusted as DICOM even without the ``DICM`` magic at byte 128.
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}

# reason categories (ImageLoadError.reason), shared with readers.headers
NOT_DICOM = "not an image"
CORRUPT = "truncated or corrupt image"
NO_PIXELS = "DICOM without pixel data"
UNSUPPORTED = "unsupported image type"
NO_DECODER = "no decoder for the compression"
TOO_LARGE = "too many pixels (possible decompression bomb)"

#: What to install for each family of compressed transfer syntaxes (pydicom's pixel plugins).
_DECODER_PACKAGES = (
    ("JPEG 2000", "pylibjpeg and pylibjpeg-openjpeg"),
    ("JPEG", "pylibjpeg and pylibjpeg-libjpeg"),  # Baseline, Extended, Lossless, JPEG-LS
    ("RLE", "pylibjpeg and pylibjpeg-rle"),
)


def has_dicom_magic(path: Path) -> bool:
    """True when ``path`` is a DICOM Part 10 file by its content: ``DICM`` at byte 128 (PS3.10 7.1)."""
    with path.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def read_header(path: Path):
    """The dataset with its pixel data left on disk (``defer_size``): cheap for any file size.

    A file named ``*.dcm`` without the Part 10 preamble and file meta (older archives write the
    bare data set, as ACR-NEMA did) is read as a bare data set when that yields an image; its
    transfer syntax is then the uncompressed one pydicom detected, as it is for a file meta that
    lacks one. A file that starts with ``DICM`` (its preamble stripped) is read with it put back.
    A file that ends inside its data is refused as truncated.
    """
    import warnings

    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings(record=True) as said:  # pydicom's notes on damaged files: read below
        warnings.simplefilter("always")
        try:
            ds = _fill_transfer_syntax(pydicom.dcmread(path, defer_size="4 KB"))
        except InvalidDicomError as exc:
            ds = _without_preamble(path)
            if ds is None:
                ds = _bare_dataset(path) if path.suffix.lower() in DICOM_SUFFIXES else None
            if ds is None:
                raise ImageLoadError(f"{path}: not a DICOM file ({_first_line(exc)})", NOT_DICOM) from exc
        except Exception as exc:  # pydicom raises many types on damaged headers
            raise ImageLoadError(f"{path}: truncated or corrupt DICOM header ({_first_line(exc)})", CORRUPT) from exc
    if any("end of file" in str(w.message).lower() for w in said):  # cut off inside its data
        raise ImageLoadError(f"{path}: truncated DICOM (the file ends before its data does)", CORRUPT)
    return ds


def _fill_transfer_syntax(ds: Any) -> Any:
    """``ds`` with a Transfer Syntax UID in its file meta: where the file leaves it out, the
    uncompressed syntax pydicom detected while reading (an encapsulated one cannot be guessed)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None):
        return ds
    encoding = getattr(ds, "original_encoding", None)
    if not encoding or encoding[0] is None:
        return ds
    implicit, little = encoding
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                      ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def _without_preamble(path: Path) -> Any:
    """A Part 10 file whose 128-byte preamble was stripped (it starts with ``DICM``), read with the
    preamble put back; ``None`` for any other file."""
    import io

    import pydicom

    with open(path, "rb") as handle:
        if handle.read(4) != b"DICM":
            return None
        handle.seek(0)
        data = b"\0" * 128 + handle.read()
    try:
        ds = _fill_transfer_syntax(pydicom.dcmread(io.BytesIO(data)))
    except Exception:  # then it is not a readable DICOM after all
        return None
    ds.xraygpt_source_bytes = len(data)  # sizes in check_header count from the restored preamble
    return ds


def _bare_dataset(path: Path):
    """A data set without preamble or file meta, or ``None`` when the bytes do not read as one
    (pixel data or a SOP class / modality must be present: forced reading accepts almost anything)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, defer_size="4 KB", force=True)
        if "PixelData" not in ds and "SOPClassUID" not in ds and "Modality" not in ds:
            return None
    except Exception:  # anything else is simply not a DICOM file
        return None
    return _fill_transfer_syntax(ds)


def _install_hint(syntax_name: str) -> str:
    for family, packages in _DECODER_PACKAGES:
        if family in syntax_name:
            return packages
    return "python-gdcm"


def header_number(path: Path, ds, keyword: str, default: float | None, *, integer: bool = True,
                  first: bool = False) -> float | None:
    """The number in header field ``keyword``, ``default`` when it is absent or empty.

    ``first`` takes the first of several values (Window Center/Width may list alternatives,
    PS3.3 C.11.2.1.2); otherwise a multi-valued field is corrupt. Raises :class:`ImageLoadError`
    naming the field when the value is not a finite number (or not a whole one for ``integer``).
    """
    from pydicom.multival import MultiValue

    try:
        value = ds.get(keyword)
    except Exception as exc:  # pydicom converts the raw value on access and may fail there
        raise ImageLoadError(f"{path}: DICOM header field {keyword} is unreadable ({_first_line(exc)})",
                             CORRUPT) from exc
    if isinstance(value, (MultiValue, list, tuple)):
        if len(value) == 0:
            return default
        if len(value) > 1 and not first:
            raise ImageLoadError(f"{path}: DICOM header field {keyword} holds {len(value)} values, expected one",
                                 CORRUPT)
        value = value[0]
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or (integer and number != int(number)):
        raise ImageLoadError(f"{path}: DICOM header field {keyword} has the unusable value {str(value)[:40]!r}",
                             CORRUPT)
    return int(number) if integer else number


def check_header(path: Path, ds, max_pixels: int) -> None:
    """Refuse, without decoding, a DICOM that cannot become a radiograph (reason in the error)."""
    from pydicom.pixels import get_decoder

    if "PixelData" not in ds:
        raise ImageLoadError(f"{path}: DICOM file has no pixel data (not an image)", NO_PIXELS)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in MONOCHROME | COLOUR | {PALETTE}:
        raise ImageLoadError(
            f"{path}: unsupported photometric interpretation {photometric or '(missing)'!r}; "
            "radiographs must be MONOCHROME1, MONOCHROME2, RGB/YBR or PALETTE COLOR", UNSUPPORTED)
    rows, cols = header_number(path, ds, "Rows", 0), header_number(path, ds, "Columns", 0)
    if rows < 1 or cols < 1:
        raise ImageLoadError(f"{path}: DICOM header gives no image size (Rows {rows}, Columns {cols})", CORRUPT)
    if rows * cols > max_pixels:
        raise ImageLoadError(f"{path}: {cols}x{rows} = {rows * cols} pixels exceeds the limit of {max_pixels} "
                             "(possible decompression bomb)", TOO_LARGE)
    frames = header_number(path, ds, "NumberOfFrames", 1)
    samples = header_number(path, ds, "SamplesPerPixel", 1)
    bits = header_number(path, ds, "BitsAllocated", 8)
    for keyword, value in (("NumberOfFrames", frames), ("SamplesPerPixel", samples), ("BitsAllocated", bits)):
        if value < 1:
            raise ImageLoadError(f"{path}: DICOM header field {keyword} is {value}, expected at least 1", CORRUPT)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        compressed = syntax is not None and syntax.is_compressed
    except ValueError:  # a UID that is not a transfer syntax (pydicom: "UID is not a transfer syntax")
        raise ImageLoadError(f"{path}: unknown transfer syntax {str(syntax)[:64]!r} in the file meta", CORRUPT) from None
    if compressed:
        name = f"{syntax.name} ({syntax})"
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:  # no pydicom plugin exists for it
            raise ImageLoadError(f"{path}: no decoder for transfer syntax {name}; install GDCM (its gdcmconv --raw) "
                                 "and convert the file to an uncompressed DICOM", NO_DECODER) from None
        plugins = set(decoder.available_plugins)
        if not plugins or (plugins == {"pillow"} and bits > 8):  # Pillow decodes 8-bit JPEG only
            raise ImageLoadError(f"{path}: no decoder for transfer syntax {name}; install "
                                 f"{_install_hint(syntax.name)}", NO_DECODER)
    else:
        from pydicom.uid import DeflatedExplicitVRLittleEndian

        raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
        expected = _expected_bytes(ds, rows * cols * frames * samples * bits // 8)
        length = getattr(raw, "length", None)
        tell = getattr(raw, "value_tell", None)
        # a deflated file is inflated in memory: its offsets do not count bytes of the file on disk
        size = (None if syntax == DeflatedExplicitVRLittleEndian else
                getattr(ds, "xraygpt_source_bytes", None) or path.stat().st_size)
        if length is not None and tell is not None and ((size is not None and tell + length > size)
                                                        or length < expected):
            present = length if size is None else min(length, size - tell)
            raise ImageLoadError(f"{path}: truncated or corrupt DICOM pixel data ({present} "
                                 f"of {expected} bytes present)", CORRUPT)


def _expected_bytes(ds, plain: int) -> int:
    """Bytes of uncompressed pixel data the header describes (pydicom's count, which knows that
    YBR_FULL_422 keeps two samples of colour per two pixels); ``plain`` where pydicom cannot say."""
    from pydicom.pixels.utils import get_expected_length

    try:
        return int(get_expected_length(ds, unit="bytes"))
    except Exception:  # a header pydicom cannot count from; the fields were checked above
        return plain


def load_dicom(path: Path, max_pixels: int) -> np.ndarray:
    """Float ``[H, W]`` in ``[0, 1]`` (bone white) from a DICOM file; see the module docstring."""
    from pydicom.uid import RLELossless

    ds = read_header(path)
    check_header(path, ds, max_pixels)
    # the first frame only, whatever NumberOfFrames says: a multi-frame file is not decoded whole
    # (150 frames of 4096 x 4096 would be 5 GB)
    options: dict = {"index": 0}
    if getattr(ds.file_meta, "TransferSyntaxUID", None) == RLELossless:
        options["decoding_plugin"] = "pydicom"  # pylibjpeg-rle panics on damaged data
    ds.pixel_array_options(**options)
    try:
        stored = ds.pixel_array
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the decoder's own words, first line: "Unable to decode …"; Rust
        # decoders raise pyo3's PanicException, which is not an Exception
        detail = _first_line(exc).rstrip(":")
        raise ImageLoadError(f"{path}: truncated or corrupt DICOM pixel data ({detail})", CORRUPT) from exc
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == PALETTE:  # indices into the red/green/blue tables (PS3.3 C.7.6.3.1.5)
        stored, top = _palette_rgb(path, ds, stored)
    else:
        stored_bits = header_number(path, ds, "BitsStored", None)
        allocated = header_number(path, ds, "BitsAllocated", 8)
        top = float(2 ** (stored_bits if stored_bits and 1 <= stored_bits <= allocated else allocated) - 1)
    if photometric in COLOUR | {PALETTE}:  # pixel_array gives RGB for YBR too: ITU-R 601-2 luma, as Pillow's "L"
        if stored.ndim != 3 or stored.shape[-1] != 3:
            raise ImageLoadError(f"{path}: expected an RGB image, got pixel array of shape {stored.shape}", CORRUPT)
        return (stored.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / top).astype(np.float32)
    if stored.ndim != 2:
        raise ImageLoadError(f"{path}: expected a 2-D image, got pixel array of shape {stored.shape}", CORRUPT)
    return _grey_values(path, ds, stored, photometric)


def _first_line(exc: Exception) -> str:
    """The first line of an exception's message (a decoder's own words), or its type's name."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _palette_rgb(path: Path, ds, stored: np.ndarray) -> tuple[np.ndarray, float]:
    """``[H, W, 3]`` colours of a PALETTE COLOR image and their largest value (the tables' depth)."""
    from pydicom.pixels import apply_color_lut

    try:
        rgb = apply_color_lut(stored, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    except Exception as exc:  # missing or inconsistent lookup tables
        raise ImageLoadError(f"{path}: PALETTE COLOR image with unusable colour tables ({_first_line(exc)})",
                             CORRUPT) from exc
    return rgb, float(2 ** (16 if bits > 8 else 8) - 1)


def _grey_values(path: Path, ds, stored: np.ndarray, photometric: str) -> np.ndarray:
    """Grey values in [0, 1]: modality LUT, then the VOI LUT or window (PS3.3 C.11.1, C.11.2)."""
    from pydicom.pixels import apply_modality_lut, apply_voi

    if "ModalityLUTSequence" in ds:
        try:
            values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        except Exception as exc:
            raise ImageLoadError(f"{path}: unusable Modality LUT Sequence ({_first_line(exc)})", CORRUPT) from exc
    else:  # Rescale Slope / Intercept (PS3.3 C.11.1.1.2)
        slope = header_number(path, ds, "RescaleSlope", 1.0, integer=False)
        intercept = header_number(path, ds, "RescaleIntercept", 0.0, integer=False)
        values = stored.astype(np.float64) * slope + intercept
    voi_sequence = ds.get("VOILUTSequence")
    center, width = _window(path, ds)
    if voi_sequence:
        try:
            lut_bits = int(voi_sequence[0].LUTDescriptor[2])
            values = apply_voi(values.astype(np.int64), ds).astype(np.float64) / (2**lut_bits - 1)
        except Exception as exc:  # missing or inconsistent table
            raise ImageLoadError(f"{path}: unusable VOI LUT Sequence ({_first_line(exc)})", CORRUPT) from exc
    elif center is not None and width is not None:
        values = window(values, center, width, str(ds.get("VOILUTFunction", "LINEAR")).strip().upper())
    else:
        values = min_max(values)
    if photometric == "MONOCHROME1":  # high values are dark: invert so bone is white
        values = 1.0 - values
    return values.astype(np.float32)


def min_max(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


def _window(path: Path, ds) -> tuple[float | None, float | None]:
    """The first Window Center and Width (the header may list alternative views), or ``None``
    for both when either is absent or unusable (not a number, width < 1): the full range is shown."""
    try:
        center = header_number(path, ds, "WindowCenter", None, integer=False, first=True)
        width = header_number(path, ds, "WindowWidth", None, integer=False, first=True)
    except ImageLoadError:
        return None, None
    if center is None or width is None or width < 1:
        return None, None
    return center, width


def window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Map ``values`` to [0, 1] through a VOI window (DICOM PS3.3 C.11.2.1.2.1 and .2)."""
    if width < 1:
        raise ValueError(f"DICOM Window Width must be >= 1, got {width}")
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - (center - width / 2)) / width, 0.0, 1.0)
    # LINEAR (default): x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 1
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
