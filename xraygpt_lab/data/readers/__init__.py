"""Open any supported dataset folder as one list of :class:`~xraygpt_lab.data.records.Record`.

``open_dataset(path)`` detects the layout (checked in this order) and calls its reader:

=================  ==========================================================  ================
layout             what identifies it                                           reader
=================  ==========================================================  ================
``xraygpt``        ``filter_cap.json`` (+ ``image/``; our synthetic export too)  ``read_xraygpt``
``mimic-cxr-jpg``  ``mimic-cxr-2.0.0-metadata.csv[.gz]`` or ``files/pNN/`` (JPG   ``read_mimic_cxr``
                   or DICOM release)
``openi``          ``ecgen-radiology/``, ``NLMCXR_reports.tgz`` or ``*.xml``     ``read_openi``
``folder``         any image files (PNG, JPEG, DICOM, ...)                       ``read_image_folder``
=================  ==========================================================  ================

Every reader skips bad rows and counts them in ``Dataset.skipped`` by reason.
"""
from __future__ import annotations

import os
from pathlib import Path

from xraygpt_lab.data.readers.common import Dataset
from xraygpt_lab.data.readers.folder import is_image_file, read_image_folder
from xraygpt_lab.data.readers.mimic import find_csv, read_mimic_cxr
from xraygpt_lab.data.readers.openi import read_openi, reports_source
from xraygpt_lab.data.readers.xraygpt import ANNOTATIONS, read_xraygpt
from xraygpt_lab.errors import XrayGPTLabError

__all__ = ["LAYOUTS", "Dataset", "detect_layout", "open_dataset", "read_image_folder",
           "read_mimic_cxr", "read_openi", "read_xraygpt"]

LAYOUTS = ("xraygpt", "mimic-cxr-jpg", "openi", "folder")


def detect_layout(path: str | os.PathLike) -> str:
    """Name of the layout of ``path`` (see the table above); raises if none fits."""
    root = Path(path)
    if not root.exists():
        raise XrayGPTLabError(f"{root}: no such file or folder")
    if root.is_file():
        if root.name == ANNOTATIONS:
            return "xraygpt"
        if root.name.endswith((".tgz", ".tar.gz", ".tar")):
            return "openi"
        raise XrayGPTLabError(f"{root}: expected a dataset folder, filter_cap.json or a .tgz")
    if (root / ANNOTATIONS).is_file():
        return "xraygpt"
    if find_csv(root, "metadata") is not None or next((root / "files").glob("p[0-9][0-9]"),
                                                      None) is not None:
        return "mimic-cxr-jpg"
    if reports_source(root) is not None:
        return "openi"
    if any(is_image_file(root, p) for p in root.rglob("*")):  # stops at the first image
        return "folder"
    raise XrayGPTLabError(
        f"{root}: no dataset found (expected {ANNOTATIONS}, MIMIC-CXR(-JPG) files/pNN/ + CSVs, "
        "OpenI ecgen-radiology/ XML reports, or image files)")


def open_dataset(path: str | os.PathLike, layout: str | None = None) -> Dataset:
    """Read the dataset at ``path`` with ``layout`` (auto-detected when None)."""
    root = Path(path)
    # detect_layout says this for itself; a layout given by name must not read nothing quietly
    if layout is not None and not root.exists():
        raise XrayGPTLabError(f"{root}: no such file or folder")
    if layout in ("mimic-cxr-jpg", "folder") and not root.is_dir():
        raise XrayGPTLabError(f"{root}: is a file; the {layout} layout is a folder")
    layout = layout or detect_layout(root)
    if layout == "xraygpt":
        return read_xraygpt(root.parent if root.is_file() else root)
    if layout == "mimic-cxr-jpg":
        return read_mimic_cxr(root)
    if layout == "openi":
        return read_openi(root)
    if layout == "folder":
        return read_image_folder(root)
    raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
