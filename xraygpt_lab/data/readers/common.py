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

    # ``path`` was built from ``base`` (``base / id``), so a relative one is relative to the working
    # folder, as ``base`` is: taken from ``base`` instead, it would be looked up at ``base/base/...``
    return not is_inside(base, Path(path).absolute())


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
    """The CheXpert columns present in a CSV row, parsed; None when the row has none.

    The tables are read as text (``csv.DictReader``; pandas with ``dtype=str`` and
    ``keep_default_na=False``), so a blank cell is ``""``: a ``None`` or NaN cell is one a short
    row lacks, and raises ``ValueError`` like a bad value.
    """
    present = [name for name in CHEXPERT_OBSERVATIONS if name in row]
    if not present:
        return None
    for name in present:
        value = row[name]
        if value is None or (isinstance(value, float) and value != value):
            raise ValueError(f"the row has no cell for {name!r} (a short row)")
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


def read_report_text(path: Path) -> str:
    """A report file's text: UTF-8, or, where its bytes are not UTF-8, Windows-1252 (a superset of
    Latin-1, which older exports use), so "Café" never becomes "Caf\ufffd"."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def summary_details(records: Iterable) -> dict:
    """How many records have an XrayGPT summary, and why the others have none (the reason
    ``summary.summarize_report`` gave, kept in each record's ``meta["summary_dropped"]``)."""
    records = list(records)
    dropped = Counter(str(r.meta["summary_dropped"]) for r in records
                      if r.summary is None and r.meta and r.meta.get("summary_dropped"))
    return {"with_summary": sum(r.summary is not None for r in records),
            "without_summary": dict(sorted(dropped.items()))}


def count(skipped: Counter[str]) -> dict[str, int]:
    return {reason: n for reason, n in skipped.items() if n}
