"""Reader for a plain folder of images (optionally a ``<name>.txt`` report beside each)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from xraygpt_lab.data.readers.common import (
    DUPLICATE_ID,
    EMPTY_FILE,
    IMAGE_SUFFIXES,
    OUTSIDE,
    Dataset,
    count,
    natural_key,
    outside,
    read_report_text,
)
from xraygpt_lab.data.records import Record
from xraygpt_lab.data.text.summary import summarize_report


def image_files(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively, hidden files and folders left out)."""
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(files, key=lambda p: natural_key(p.relative_to(root).as_posix()))


def read_image_folder(root: str | Path) -> Dataset:
    """Every image under ``root``; its id is the relative path without suffix.

    Zero-byte files are skipped ("empty file"), as is a second file with the same id
    ("duplicate id", e.g. ``a.png`` and ``a.jpg``), and a link that points out of ``root``.
    A ``a.txt`` beside ``a.png`` is its report.
    Images are not decoded here: ``load_image`` reports unreadable files when they are used.
    """
    root = Path(root)
    records: list[Record] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    for path in image_files(root):
        image_id = path.relative_to(root).with_suffix("").as_posix()
        if outside(root, path):  # a link that points out of the folder
            skipped[OUTSIDE] += 1
            continue
        if path.stat().st_size == 0:
            skipped[EMPTY_FILE] += 1
            continue
        if image_id in seen:
            skipped[DUPLICATE_ID] += 1
            continue
        seen.add(image_id)
        report_path = path.with_suffix(".txt")
        report = read_report_text(report_path).strip() if report_path.is_file() else None
        summary = summarize_report(report).text if report else None
        records.append(Record(image_id=image_id, image_path=path, report=report or None,
                              summary=summary))
    return Dataset("folder", root, records, count(skipped))
