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
from xraygpt_lab.data.readers.dicom import has_dicom_magic
from xraygpt_lab.data.records import Record
from xraygpt_lab.data.text.summary import summarize_report


#: Suffixes that are never images: not even opened to look for a DICOM header.
NOT_IMAGES = {".txt", ".json", ".jsonl", ".csv", ".md", ".xml", ".gz", ".tgz", ".tar", ".zip", ".py",
              ".ipynb", ".pdf", ".html", ".log", ".yaml", ".yml", ".safetensors", ".pt", ".pth"}


def is_image_file(root: Path, path: Path) -> bool:
    """An image under ``root`` (hidden files and folders left out): by its suffix, or a DICOM file
    by its header whatever its name (``IM0001``, a UID such as ``1.2.840.113619.2.1``)."""
    if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
        return False
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix in NOT_IMAGES:
        return False
    try:
        return has_dicom_magic(path)
    except OSError:
        return False


def image_files(root: Path) -> list[Path]:
    """Every :func:`is_image_file` under ``root``, recursively, in natural order."""
    files = [p for p in root.rglob("*") if is_image_file(root, p)]
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
