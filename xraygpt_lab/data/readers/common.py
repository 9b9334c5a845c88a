"""What every dataset reader returns: a :class:`Dataset` of records plus counted skips."""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xraygpt_lab.data.findings import CHEXPERT_OBSERVATIONS
from xraygpt_lab.data.records import Record

#: File suffixes read as images (``load_image`` handles them all).
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff"})

# Skip reasons shared by the readers (so counts from different layouts line up).
MISSING_IMAGE = "missing image"
EMPTY_REPORT = "empty report"
MISSING_REPORT = "missing report"
MALFORMED_ENTRY = "malformed entry"
MALFORMED_LABELS = "malformed labels"
DUPLICATE_ID = "duplicate id"
EMPTY_FILE = "empty file"
NO_IMAGES = "report without images"
OUTSIDE = "path outside the dataset folder"


def outside(base: Path, path: Path) -> bool:
    """True when ``path`` (``..``, absolute parts and symlinks followed) leaves ``base``.

    Readers check every image path built from an id in a metadata file and every file they list,
    and count such records under :data:`OUTSIDE` instead of opening them. ``base`` is the dataset
    folder; it may itself be a link, but links inside it must stay inside it.
    """
    from xraygpt_lab.paths import is_inside

    return not is_inside(base, path)


@dataclass
class Dataset:
    """Records read from one folder, the layout they were read as, and what was skipped.

    ``skipped`` maps a reason ("missing image", "duplicate id", ...) to a count: bad rows are
    never dropped silently. ``details`` holds layout-specific facts (flavour, which CSVs).
    """

    layout: str
    root: Path
    records: list[Record]
    skipped: dict[str, int] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def summary(self) -> dict:
        """The JSON printed by ``xraygpt-lab data summary``."""
        return {"layout": self.layout, "records": len(self.records),
                "skipped": dict(sorted(self.skipped.items())), "details": self.details}


def natural_key(text: str) -> list:
    """Sort key in which digit runs compare as numbers: ``CXR2_...`` before ``CXR10_...``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def parse_label(value: object) -> int | None:
    """A CheXpert cell as 1 / 0 / -1 / None: accepts ``1``, ``"1.0"``, ``""``, NaN.

    Raises ``ValueError`` for anything else (the caller counts the row as malformed).
    """
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN (pandas' blank)
        return None
    text = str(value).strip()
    if text == "" or text.lower() == "nan":
        return None
    number = float(text)
    if number not in (1.0, 0.0, -1.0):
        raise ValueError(f"label value {text!r} is not 1, 0, -1 or blank")
    return int(number)


def labels_from_row(row: dict) -> dict[str, int | None] | None:
    """The CheXpert columns present in a CSV row, parsed; None when the row has none."""
    present = [name for name in CHEXPERT_OBSERVATIONS if name in row]
    if not present:
        return None
    return {name: parse_label(row[name]) for name in present}


def labels_table(rows: Iterable[dict], key: Callable[[dict], Hashable]) -> tuple[dict, set]:
    """``key(row) -> labels`` (:func:`labels_from_row`) of a CheXpert-style table, and the keys
    whose row holds a value other than 1, 0, -1 or blank (or lacks a cell: a short CSV row)."""
    table: dict = {}
    bad: set = set()
    for row in rows:
        k = key(row)
        try:
            table[k] = labels_from_row(row)
        except (ValueError, TypeError):
            bad.add(k)
    return table, bad


def count(skipped: Counter[str]) -> dict[str, int]:
    return {reason: n for reason, n in skipped.items() if n}
