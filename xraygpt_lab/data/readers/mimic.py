"""Reader for MIMIC-CXR-JPG 2.0.0 and MIMIC-CXR 2.0.0 (DICOM), with the report text files.

Layout (PhysioNet): ``files/p10/p10000032/s50414267/<dicom_id>.jpg`` (MIMIC-CXR-JPG) or
``<dicom_id>.dcm`` (MIMIC-CXR, the DICOM release), with
``mimic-cxr-2.0.0-metadata.csv[.gz]`` (dicom_id, subject_id, study_id, ViewPosition, ...),
``mimic-cxr-2.0.0-chexpert.csv[.gz]`` (subject_id, study_id, 14 observations),
``mimic-cxr-2.0.0-split.csv[.gz]`` (dicom_id, study_id, subject_id, split) and the reports as
``files/p10/p10000032/s50414267.txt`` (from MIMIC-CXR, in this root or in ``reports_dir``).
The DICOM release lists its images in ``cxr-record-list.csv[.gz]`` (subject_id, study_id,
dicom_id, path) instead of the metadata table; without either, the tree itself is read.
Each record is one image; its study's report is summarised with XrayGPT's rules.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from xraygpt_lab.data.readers.common import (
    DUPLICATE_ID,
    EMPTY_REPORT,
    MALFORMED_ENTRY,
    MALFORMED_LABELS,
    MISSING_IMAGE,
    MISSING_REPORT,
    OUTSIDE,
    Dataset,
    count,
    labels_table,
    natural_key,
    outside,
    read_report_text,
    summary_details,
)
from xraygpt_lab.data.records import Record
from xraygpt_lab.data.text.summary import summarize_report
from xraygpt_lab.errors import ImageLoadError, XrayGPTLabError

PREFIX = "mimic-cxr-2.0.0"
#: The image file of a ``dicom_id``: MIMIC-CXR-JPG's JPEG first, else the DICOM release's file.
MIMIC_IMAGE_SUFFIXES = (".jpg", ".dcm")
#: The DICOM release's list of images (its metadata table is MIMIC-CXR-JPG's).
RECORD_LIST = "cxr-record-list"


def find_csv(root: Path, kind: str, prefix: str = PREFIX) -> Path | None:
    """``mimic-cxr-2.0.0-<kind>.csv.gz`` or ``.csv`` in ``root`` (``prefix=""``: ``<kind>.csv``)."""
    name = f"{prefix}-{kind}" if prefix else kind
    for suffix in (".csv.gz", ".csv"):
        path = root / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def image_file(folder: Path, dicom_id: str) -> Path:
    """``folder/<dicom_id>.jpg`` when it exists, else ``.dcm`` when that does, else the ``.jpg``
    path (reported missing)."""
    paths = [folder / f"{dicom_id}{suffix}" for suffix in MIMIC_IMAGE_SUFFIXES]
    return next((path for path in paths if path.is_file()), paths[0])


#: Left out, with a view filter, when neither the metadata table nor the DICOM header names the view.
NO_VIEW = "no view position"


def _view_from_header(path: Path) -> str:
    """A DICOM's ``ViewPosition`` (``"PA"``, ``"AP"``, ``"LL"``...), upper-case; ``""`` when the
    header names none. An unreadable header raises :class:`~xraygpt_lab.errors.ImageLoadError`."""
    from xraygpt_lab.data.readers.dicom import CORRUPT, check_header, read_header
    from xraygpt_lab.data.readers.headers import MAX_PIXELS

    header = read_header(path)
    check_header(path, header, MAX_PIXELS)  # a cut or pixel-less file: its own reason
    try:
        return str(getattr(header, "ViewPosition", "") or "").strip().upper()
    except Exception as exc:  # a malformed element, decoded only when read  # noqa: BLE001
        raise ImageLoadError(f"{path}: unreadable ViewPosition ({type(exc).__name__})", CORRUPT) from exc


def _listed_path(root: Path, row: dict) -> Path | None:
    """The image the DICOM release's record list names in its ``path`` column, if that file exists."""
    listed = str(row.get("path") or "").strip()
    return root / listed if listed and (root / listed).is_file() else None


def study_folder(root: Path, subject_id: str, study_id: str) -> Path:
    """``root/files/p10/p10000032/s50414267``."""
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a (gzipped) CSV table as text; a damaged file or one without ``columns`` is a
    one-line error. A blank cell is ``""``, a cell a short row lacks is ``None``
    (``common.labels_from_row`` counts such a row as malformed); a byte-order mark is read past."""
    import csv
    import gzip
    import zlib

    def handle():
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
        return path.open(encoding="utf-8-sig", newline="")

    try:
        with handle() as stream:
            reader = csv.DictReader(stream)
            header = [name for name in (reader.fieldnames or []) if name is not None]
            rows = list(reader)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error, csv.Error) as exc:  # gzip, UTF-8, CSV
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise XrayGPTLabError(f"{path}: not a readable CSV table ({detail})") from exc
    missing = [name for name in columns if name not in header]
    if missing:
        raise XrayGPTLabError(f"{path}: needs the column(s) {', '.join(missing)} "
                              f"(found: {', '.join(map(str, header[:8])) or 'none'})")
    return rows


def _rows_from_tree(root: Path) -> list[dict]:
    """Without a table of images: every ``files/p*/p*/s*/*.jpg`` and ``*.dcm`` (one row per
    ``dicom_id`` where both exist)."""
    found: dict[Path, Path] = {}
    for suffix in reversed(MIMIC_IMAGE_SUFFIXES):  # the .jpg replaces a .dcm of the same id
        for path in (root / "files").glob(f"p*/p*/s*/*{suffix}"):
            found[path.with_suffix("")] = path
    return [{"dicom_id": path.stem, "subject_id": path.parent.parent.name[1:],
             "study_id": path.parent.name[1:], "ViewPosition": ""}
            for path in sorted(found.values(), key=lambda p: natural_key(str(p)))]


#: Where the free-text reports may sit when not beside the images: MIMIC-CXR's own report archive
#: (``mimic-cxr-reports.zip``) unpacks to ``files/p*/p*/s*.txt`` in a folder of that name.
REPORT_FOLDERS = ("mimic-cxr-reports",)


def _reports_root(root: Path) -> Path:
    """``root`` when it holds ``files/p*/p*/s*.txt``, else the first of :data:`REPORT_FOLDERS`
    inside it that does, else ``root``."""
    for candidate in (root, *(root / name for name in REPORT_FOLDERS)):
        if next((candidate / "files").glob("p*/p*/s*.txt"), None) is not None:
            return candidate
    return root


def read_mimic_cxr(root: str | Path, reports_dir: str | Path | None = None,
                   views: tuple[str, ...] | None = None) -> Dataset:
    """Records of MIMIC-CXR-JPG or MIMIC-CXR (DICOM); ``views`` (e.g. ``("PA", "AP")``, any case)
    keeps only those views, read from a DICOM's header where no metadata table names them. An
    image is the record list's ``path`` where that file exists, else ``<dicom_id>.jpg`` or ``.dcm``
    in its study folder.

    Skipped and counted: a metadata row with a missing field, a listed image that is not on
    disk or whose path leaves ``root`` (a ``dicom_id`` with ``../``, a link out), a repeated
    dicom id, with a view filter an image whose view nothing names (``no view position``) or
    whose DICOM header is unreadable, a study whose CheXpert row holds a value other than 1, 0,
    -1 or blank, and — when report files exist at all — a study whose report is missing or empty.
    A damaged CSV table (or one without its id columns) is an error naming the file. Reports are read from
    ``reports_dir``, else from ``root`` or, where ``root`` has none, its ``mimic-cxr-reports/``.
    """
    root = Path(root)
    reports_root = Path(reports_dir) if reports_dir is not None else _reports_root(root)
    metadata = find_csv(root, "metadata") or find_csv(root, RECORD_LIST, prefix="")
    rows = _read_csv(metadata, ("dicom_id", "subject_id", "study_id")) if metadata else _rows_from_tree(root)
    chexpert_csv, split_csv = find_csv(root, "chexpert"), find_csv(root, "split")
    labels, bad_labels = (labels_table(_read_csv(chexpert_csv, ("subject_id", "study_id")),
                                       lambda r: (str(r["subject_id"] or "").strip(),
                                                  str(r["study_id"] or "").strip()))
                          if chexpert_csv else ({}, set()))
    splits = ({str(r["dicom_id"] or "").strip(): r["split"] for r in _read_csv(split_csv, ("dicom_id", "split"))}
              if split_csv else {})
    has_reports = next((reports_root / "files").glob("p*/p*/s*.txt"), None) is not None

    wanted = None if views is None else {v.strip().upper() for v in views}
    records: list[Record] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    report_cache: dict[Path, str | None] = {}
    for row in rows:
        dicom_id = str(row.get("dicom_id") or "").strip()  # None: a short row lacks the cell
        subject_id = str(row.get("subject_id") or "").strip()
        study_id = str(row.get("study_id") or "").strip()
        view = str(row.get("ViewPosition") or "").strip().upper()
        if not (dicom_id and subject_id.isdigit() and study_id.isdigit()):
            skipped[MALFORMED_ENTRY] += 1
            continue
        if dicom_id in seen:
            skipped[DUPLICATE_ID] += 1
            continue
        image_path = (_listed_path(root, row)
                      or image_file(study_folder(root, subject_id, study_id), dicom_id))
        if outside(root, image_path):  # "../../x" or "/etc/x" as dicom_id or path, or a link out
            skipped[OUTSIDE] += 1
            continue
        if wanted is not None and view and view not in wanted:
            continue
        if not image_path.is_file():
            skipped[MISSING_IMAGE] += 1
            continue
        if wanted is not None and not view:  # no metadata table: the DICOM header says it
            try:
                view = _view_from_header(image_path) if image_path.suffix.lower() == ".dcm" else ""
            except ImageLoadError as exc:
                skipped[exc.reason] += 1
                continue
            if not view:
                skipped[NO_VIEW] += 1
                continue
            if view not in wanted:
                continue
        if (subject_id, study_id) in bad_labels:
            skipped[MALFORMED_LABELS] += 1
            continue
        report = None
        if has_reports:
            report_path = study_folder(reports_root, subject_id, study_id).with_suffix(".txt")
            if report_path not in report_cache:
                report_cache[report_path] = (read_report_text(report_path)
                                             if report_path.is_file() else None)
            report = report_cache[report_path]
            if report is None:
                skipped[MISSING_REPORT] += 1
                continue
            if not report.strip():
                skipped[EMPTY_REPORT] += 1
                continue
        seen.add(dicom_id)
        summary = summarize_report(report) if report else None
        meta = {"subject_id": subject_id, "study_id": study_id, "view": view}
        if summary is not None and summary.dropped:
            meta["summary_dropped"] = summary.dropped
        records.append(Record(image_id=dicom_id, image_path=image_path,
                              summary=summary.text if summary else None, report=report,
                              labels=labels.get((subject_id, study_id)),
                              split=splits.get(dicom_id), meta=meta))
    details = {"metadata_csv": metadata is not None and metadata.name.startswith(PREFIX),
               "image_table": metadata.name if metadata else None,
               "image_files": dict(sorted(Counter(r.image_path.suffix for r in records).items())),
               "chexpert_csv": chexpert_csv is not None,
               "split_csv": split_csv is not None, "reports": has_reports,
               **summary_details(records)}
    return Dataset("mimic-cxr-jpg", root, records, count(skipped), details)
