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


#: Suffixes that are never images: not even opened to look for a DICOM header.
NOT_IMAGES = {".txt", ".json", ".jsonl", ".csv", ".md", ".xml", ".gz", ".tgz", ".tar", ".zip", ".py",
              ".ipynb", ".pdf", ".html", ".log", ".yaml", ".yml", ".safetensors", ".pt", ".pth"}


def _dicom_without_suffix(path: Path) -> bool:
    """A DICOM file named without ``.dcm`` (``IM0001``, a UID such as ``1.2.840.113619.2.1``):
    Part 10 files carry ``DICM`` at byte 128."""
    if path.suffix.lower() in NOT_IMAGES:
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def image_files(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively, hidden files and folders left out): by suffix, or
    DICOM files by their header whatever their name."""
    files = [p for p in root.rglob("*") if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)
             and (p.suffix.lower() in IMAGE_SUFFIXES or _dicom_without_suffix(p))]
    return sorted(files, key=lambda p: natural_key(p.relative_to(root).as_posix()))


def image_id(root: Path, path: Path) -> str:
    """The relative path, without an image suffix (a DICOM named by its UID keeps every part)."""
    relative = path.relative_to(root)
    return (relative.with_suffix("") if path.suffix.lower() in IMAGE_SUFFIXES else relative).as_posix()


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
        record_id = image_id(root, path)
        if outside(root, path):  # a link that points out of the folder
            skipped[OUTSIDE] += 1
            continue
        if path.stat().st_size == 0:
            skipped[EMPTY_FILE] += 1
            continue
        if record_id in seen:
            skipped[DUPLICATE_ID] += 1
            continue
        seen.add(record_id)
        report_path = path.with_name(path.name + ".txt") if path.suffix.lower() not in IMAGE_SUFFIXES \
            else path.with_suffix(".txt")
        report = read_report_text(report_path).strip() if report_path.is_file() else None
        summary = summarize_report(report).text if report else None
        records.append(Record(image_id=record_id, image_path=path, report=report or None,
                              summary=summary))
    return Dataset("folder", root, records, count(skipped))
