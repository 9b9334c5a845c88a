"""Cheap checks that a file is a readable radiograph, without decoding its pixels.

:func:`check_image` reads the header (Pillow's ``Image.open`` or a pydicom read that leaves the
pixel data on disk) and the last bytes of PNG / JPEG files, and raises
:class:`~xraygpt_lab.errors.ImageLoadError` with a ``reason`` for: a missing or empty file, a file
that is no image (a text file renamed ``.png``), a truncated PNG / JPEG / DICOM, a DICOM without
pixel data or without a decoder for its compression, and a decompression bomb (more than
``MAX_PIXELS``). :func:`check_records` applies it to a dataset and counts the bad records under
``skipped`` by reason; ``data summary`` and ``evaluate`` use it.
"""
from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

from xraygpt_lab.data.readers.common import MISSING_IMAGE, Dataset, summary_details
from xraygpt_lab.data.readers.dicom import (CORRUPT, DICOM_SUFFIXES, NOT_DICOM, TOO_LARGE, check_header,
                                           has_dicom_magic, read_header)
from xraygpt_lab.errors import ImageLoadError

#: Refuse images with more pixels than this (decompression-bomb guard). 100 MP is ~3x the
#: largest digital chest radiographs (about 4,300 x 3,500); callers may pass another limit.
MAX_PIXELS: int = 100_000_000

EMPTY = "empty file"
NOT_A_FILE = "not a regular file"
NOT_AN_IMAGE = NOT_DICOM
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with
_JPEG_END = b"\xff\xd9"  # EOI marker (may be followed by a few padding bytes)

#: At most this many unreadable files are listed by name in ``details["unreadable"]``.
LISTED_UNREADABLE = 20


def is_dicom(path: Path) -> bool:
    """DICOM Part 10 files carry ``DICM`` at byte 128; also trust the usual suffixes."""
    return path.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(path)


def check_file(path: Path) -> None:
    """The file exists, is a regular file and is not empty."""
    if not path.exists():
        raise ImageLoadError(f"{path}: file does not exist", MISSING_IMAGE)
    if not path.is_file():
        raise ImageLoadError(f"{path}: not a regular file", NOT_A_FILE)
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path}: file is empty (zero bytes)", EMPTY)


def pillow_size(path: Path, max_pixels: int) -> tuple[int, int, str]:
    """``(width, height, format)`` from the header; refuses a non-image and a decompression bomb."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height, kind = *im.size, str(im.format or "")
    except Image.DecompressionBombError as exc:  # Pillow's own, larger limit: name ours, and the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else "more pixels than Pillow opens"
        raise ImageLoadError(f"{path}: {size} exceeds the limit of {max_pixels} (possible decompression bomb)",
                             TOO_LARGE) from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{path}: not an image (unrecognised file format)", NOT_AN_IMAGE) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"{path}: truncated or corrupt image data ({exc})", CORRUPT) from exc
    if width * height > max_pixels:
        raise ImageLoadError(f"{path}: {width}x{height} = {width * height} pixels exceeds the limit of "
                             f"{max_pixels} (possible decompression bomb)", TOO_LARGE)
    return width, height, kind


def _check_ending(path: Path, kind: str) -> None:
    """A PNG must end with its IEND chunk, a JPEG with EOI: otherwise the file was cut short."""
    ending = {"PNG": _PNG_END, "JPEG": _JPEG_END}.get(kind)
    if ending is None:
        return
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64))
        tail = handle.read()
    if ending not in tail:
        raise ImageLoadError(f"{path}: truncated {kind} file (no end marker)", CORRUPT)


def check_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`ImageLoadError` (with ``reason``) unless ``path`` looks like a readable image."""
    path = Path(path)
    check_file(path)
    if is_dicom(path):
        check_header(path, read_header(path), max_pixels)
        return
    _, _, kind = pillow_size(path, max_pixels)
    _check_ending(path, kind)


def check_records(dataset: Dataset, max_pixels: int = MAX_PIXELS) -> Dataset:
    """``dataset`` without the records whose image fails :func:`check_image`, counted by reason.

    ``details["unreadable"]`` lists the first few such files with the full message.
    """
    kept, skipped, listed = [], Counter(dataset.skipped), []
    for record in dataset.records:
        if record.image_path is None:
            kept.append(record)
            continue
        try:
            check_image(record.image_path, max_pixels)
        except ImageLoadError as exc:
            skipped[exc.reason] += 1
            if len(listed) < LISTED_UNREADABLE:
                listed.append({"image_id": record.image_id, "error": str(exc)})
            continue
        kept.append(record)
    details = {**dataset.details, "unreadable": listed} if listed else dict(dataset.details)
    if "with_summary" in details:  # counted again over the records that are left
        details.update(summary_details(kept))
    return replace(dataset, records=kept, skipped=dict(skipped), details=details)
