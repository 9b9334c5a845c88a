"""Reader for XrayGPT's dataset layout: ``image/`` + ``filter_cap.json`` (README-DATASET).

``filter_cap.json`` is ``{"annotations": [{"image_id": ..., "caption": ...}]}``, the caption
being the summary. Two flavours:

* **mimic**: ``image/<image_id>.jpg`` (MIMIC-CXR dicom ids).
* **openi**: ids like ``"1384_1"``, which do not match OpenI's PNG names
  (``CXR1384_IM-0231-1001.png``; reported to XrayGPT's tracker as #3). The id is ``<report number>_<k>``: the k-th
  image (1-based, natural name order) of report ``CXR<report number>``. We map ids this way when
  ``image/<image_id>.png`` itself is absent. (A maintainer's example in that issue reads the
  first number as the ``IM-`` study number instead; that reading is not one-to-one: 1,638 of
  the 7,470 OpenI image names collide under it, while report number + rank never does.)

Our synthetic export uses the same layout plus ``labels.csv`` (``image_id`` + one 0/1 column
per CheXpert name, other columns ignored) and ``reports.jsonl`` (full reports); both are
attached when present.
"""
from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from xraygpt_lab.data.readers.common import (
    DUPLICATE_ID,
    EMPTY_REPORT,
    IMAGE_SUFFIXES,
    MALFORMED_ENTRY,
    MALFORMED_LABELS,
    MISSING_IMAGE,
    OUTSIDE,
    Dataset,
    count,
    labels_table,
    natural_key,
    outside,
)
from xraygpt_lab.data.records import Record
from xraygpt_lab.errors import XrayGPTLabError

ANNOTATIONS = "filter_cap.json"
#: Count of lines in ``reports.jsonl`` that give no report (not JSON, or no image_id and report).
UNREADABLE_REPORT_LINE = "unreadable line in reports.jsonl"
_OPENI_ID = re.compile(r"^(\d+)_(\d+)$")
_OPENI_PNG = re.compile(r"^CXR(\d+)[_-]")


def openi_id_index(names: list[str]) -> dict[str, str]:
    """Map XrayGPT openi ids to OpenI file names: ``{"1_1": "CXR1_1_IM-0001-3001.png", ...}``.

    >>> openi_id_index(["CXR1_1_IM-0001-4001.png", "CXR1_1_IM-0001-3001.png", "CXR10_IM-0002-1001.png"])
    {'1_1': 'CXR1_1_IM-0001-3001.png', '1_2': 'CXR1_1_IM-0001-4001.png', '10_1': 'CXR10_IM-0002-1001.png'}
    """
    by_report: dict[str, list[str]] = defaultdict(list)
    for name in names:
        match = _OPENI_PNG.match(name)
        if match:
            by_report[str(int(match.group(1)))].append(name)
    index: dict[str, str] = {}
    for report, files in sorted(by_report.items(), key=lambda kv: int(kv[0])):
        for rank, name in enumerate(sorted(files, key=natural_key), start=1):
            index[f"{report}_{rank}"] = name
    return index


def _load_annotations(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark is no error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise XrayGPTLabError(f"{path}: not valid JSON ({exc})") from exc
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise XrayGPTLabError(f'{path}: expected {{"annotations": [...]}} at the top level')
    return annotations


def _load_labels(path: Path) -> tuple[dict[str, dict | None], set[str]]:
    """``image_id -> labels`` from ``labels.csv``, and the ids whose row has a bad value."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # a BOM would join the first column
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "image_id" not in reader.fieldnames:
                raise XrayGPTLabError(f"{path}: needs an image_id column")
            return labels_table(reader, lambda row: row["image_id"])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise XrayGPTLabError(f"{path}: not a readable UTF-8 CSV table ({exc})") from exc


def _load_reports(path: Path) -> tuple[dict[str, str], int]:
    """``{image_id: report}`` from ``reports.jsonl`` and the number of lines that hold none (not
    JSON, or without an ``image_id`` and a text ``report``); blank lines are not counted."""
    reports: dict[str, str] = {}
    bad = 0
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise XrayGPTLabError(f"{path}: not UTF-8 text ({exc})") from exc
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and row.get("image_id") is not None and isinstance(row.get("report"), str):
            reports[str(row["image_id"])] = row["report"]
        else:
            bad += 1
    return reports, bad


def read_xraygpt(root: str | Path) -> Dataset:
    """Records from an XrayGPT-layout folder; bad rows are skipped and counted."""
    root = Path(root)
    annotations = _load_annotations(root / ANNOTATIONS)
    image_dir = root / "image"
    files = {p.name: p for p in image_dir.iterdir()} if image_dir.is_dir() else {}
    by_stem = {Path(n).stem: p for n, p in files.items() if Path(n).suffix.lower() in IMAGE_SUFFIXES}
    ids = [a.get("image_id") for a in annotations if isinstance(a, dict)]
    openi = bool(ids) and all(isinstance(i, str) and _OPENI_ID.match(i) for i in ids)
    openi_index = openi_id_index(sorted(files)) if openi else {}
    flavour = "openi" if openi else "synthetic" if (root / "world.json").is_file() else "mimic"
    labels_path, reports_path = root / "labels.csv", root / "reports.jsonl"
    labels, bad_labels = _load_labels(labels_path) if labels_path.is_file() else ({}, set())
    reports, bad_report_lines = _load_reports(reports_path) if reports_path.is_file() else ({}, 0)

    records: list[Record] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    mapped = 0
    for entry in annotations:
        image_id = entry.get("image_id") if isinstance(entry, dict) else None
        caption = entry.get("caption") if isinstance(entry, dict) else None
        if not isinstance(image_id, (str, int)) or isinstance(image_id, bool) or not isinstance(
                caption, str):
            skipped[MALFORMED_ENTRY] += 1
            continue
        image_id = str(image_id)
        if not caption.strip():
            skipped[EMPTY_REPORT] += 1
            continue
        if image_id in seen:
            skipped[DUPLICATE_ID] += 1
            continue
        path = by_stem.get(image_id)
        if path is None and image_id in openi_index:
            path = files[openi_index[image_id]]
            mapped += 1
        if path is None:
            unsafe = "/" in image_id or "\\" in image_id or image_id.startswith("..")
            skipped[OUTSIDE if unsafe else MISSING_IMAGE] += 1
            continue
        if outside(root, path):  # a link in image/ that points out of the dataset
            skipped[OUTSIDE] += 1
            continue
        if image_id in bad_labels:
            skipped[MALFORMED_LABELS] += 1
            continue
        seen.add(image_id)
        records.append(Record(image_id=image_id, image_path=path, summary=caption.strip(),
                              report=reports.get(image_id), labels=labels.get(image_id),
                              meta={"flavour": flavour}))
    if bad_report_lines:  # lines of reports.jsonl no record could take a report from
        skipped[UNREADABLE_REPORT_LINE] += bad_report_lines
    details = {"flavour": flavour, "labels_csv": labels_path.is_file(),
               "openi_ids_mapped": mapped} if openi else {"flavour": flavour,
                                                         "labels_csv": labels_path.is_file()}
    return Dataset("xraygpt", root, records, count(skipped), details)
