"""Reader for OpenI / IU X-ray: ``ecgen-radiology/*.xml`` (or ``NLMCXR_reports.tgz``) + PNGs.

One record per image (``parentImage`` id = PNG stem in ``NLMCXR_png/``), carrying its study's
report, the XrayGPT summary, and the MeSH terms in ``meta``. Without a PNG folder the records
have ``image_path=None`` (reports only, e.g. for labeler validation).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from xraygpt_lab.data.text.openi_reports import REPORTS_TGZ, read_openi_reports
from xraygpt_lab.data.readers.common import (
    EMPTY_REPORT,
    MISSING_IMAGE,
    NO_IMAGES,
    OUTSIDE,
    Dataset,
    count,
    outside,
    summary_details,
)
from xraygpt_lab.data.records import Record
from xraygpt_lab.data.text.summary import summarize_sections

_PNG_FOLDERS = ("NLMCXR_png", "png", "images", "image")


def reports_source(root: Path) -> Path | None:
    """Where the XML reports are: ``ecgen-radiology/``, ``NLMCXR_reports.tgz`` or ``root``."""
    for candidate in (root / "ecgen-radiology", root / REPORTS_TGZ):
        if candidate.exists():
            return candidate
    if root.is_file() and root.name.endswith((".tgz", ".tar.gz", ".tar")):
        return root
    if root.is_dir() and next(root.glob("*.xml"), None) is not None:
        return root
    return None


def png_folder(root: Path) -> Path | None:
    """The first of ``NLMCXR_png/``, ``png/``, ``images/``, ``image/`` holding PNG files."""
    for name in _PNG_FOLDERS:
        folder = root / name
        if folder.is_dir() and next(folder.glob("*.png"), None) is not None:
            return folder
    return None


def read_openi(root: str | Path, png_dir: str | Path | None = None) -> Dataset:
    """Records of OpenI. Skipped and counted: malformed XML, duplicate report ids, reports
    with neither findings nor impression, reports without images, and (when a PNG folder is
    there) images whose PNG is missing or whose path leaves that folder."""
    root = Path(root)
    source = reports_source(root)
    if source is None:
        raise FileNotFoundError(f"{root}: no ecgen-radiology/ folder, {REPORTS_TGZ} or XML files")
    base = root if root.is_dir() else root.parent
    images = Path(png_dir) if png_dir is not None else png_folder(base)
    reports, skipped_reports = read_openi_reports(source)
    skipped: Counter[str] = Counter(skipped_reports)
    records: list[Record] = []
    for report in reports:
        if not (report.findings or report.impression):
            skipped[EMPTY_REPORT] += 1
            continue
        if not report.image_ids:
            skipped[NO_IMAGES] += 1
            continue
        summary = summarize_sections(report.findings, report.impression)
        meta = {"report_id": report.report_id, "mesh_major": list(report.mesh_major),
                "mesh_minor": list(report.mesh_minor)}
        if summary.dropped:
            meta["summary_dropped"] = summary.dropped
        for image_id in report.image_ids:
            path = images / f"{image_id}.png" if images is not None else None
            if path is not None and outside(images, path):  # "../../x" as image id, or a link out
                skipped[OUTSIDE] += 1
                continue
            if path is not None and not path.is_file():
                skipped[MISSING_IMAGE] += 1
                continue
            records.append(Record(image_id=image_id, image_path=path, summary=summary.text,
                                  report=report.text, meta=dict(meta)))
    details = {"reports": len(reports), "png_folder": str(images) if images else None,
               **summary_details(records)}
    return Dataset("openi", root, records, count(skipped), details)
