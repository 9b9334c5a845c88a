"""OpenI (Indiana University chest X-ray collection) reports: parse, obtain offline, evaluate.

* ``parse_openi_xml`` reads one ``ecgen-radiology/<n>.xml`` report: its COMPARISON, INDICATION,
  FINDINGS and IMPRESSION fields, the MeSH ``major``/``minor`` terms and the ``parentImage`` ids
  (``CXR1_1_IM-0001-3001`` = ``NLMCXR_png/CXR1_1_IM-0001-3001.png``).
* ``read_openi_reports`` reads them from a folder or straight from ``NLMCXR_reports.tgz``.
* ``obtain_openi_reports`` finds the official ``NLMCXR_reports.tgz`` (3,955 reports, CC BY-NC-ND
  4.0) offline: a file you give, the cache, or the copy shipped inside the ``torchxrayvision``
  wheel, fetched with ``pip download --no-deps`` (no install, no torchvision).
* ``mesh_to_chexpert`` / ``agreement_table`` compare a labeler with the MeSH terms that OpenI's
  annotators attached to each report.
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xraygpt_lab.data.wheel import cache_root, fetch_wheel_member
from xraygpt_lab.errors import XrayGPTLabError

#: The reports archive's name in OpenI and inside the torchxrayvision wheel.
REPORTS_TGZ = "NLMCXR_reports.tgz"
WHEEL_MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"


class OpenIError(XrayGPTLabError):
    """OpenI reports could not be read or obtained; the message says why and what to do."""


@dataclass(frozen=True)
class OpenIReport:
    """One OpenI radiology report (one study, usually a frontal and a lateral image)."""

    report_id: str  # the XML file's number, "1" for 1.xml (the "CXR1" in image names)
    findings: str = ""
    impression: str = ""
    comparison: str = ""
    indication: str = ""
    mesh_major: tuple[str, ...] = ()
    mesh_minor: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The report as text with MIMIC-style headings (empty sections left out)."""
        parts = [(name, getattr(self, name.lower())) for name in
                 ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")]
        return "\n\n".join(f"{name}: {body}" for name, body in parts if body)


# --------------------------------------------------------------------------- parsing


def parse_openi_xml(data: bytes | str, source: str = "<xml>") -> OpenIReport:
    """Parse one ``ecgen-radiology`` XML report; raise :class:`OpenIError` if malformed."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise OpenIError(f"{source}: malformed XML ({exc})") from exc
    if root.tag != "eCitation":
        raise OpenIError(f"{source}: not an OpenI report (root element <{root.tag}>)")
    fields = {(node.get("Label") or "").upper(): " ".join((node.text or "").split())
              for node in root.iter("AbstractText")}
    report_id = _attribute(root, "IUXRId") or _attribute(root, "uId").removeprefix("CXR")
    if not report_id:
        report_id = Path(source).stem
    return OpenIReport(
        report_id=report_id,
        findings=fields.get("FINDINGS", ""),
        impression=fields.get("IMPRESSION", ""),
        comparison=fields.get("COMPARISON", ""),
        indication=fields.get("INDICATION", ""),
        mesh_major=tuple(t for t in (_text(n) for n in root.iterfind("MeSH/major")) if t),
        mesh_minor=tuple(t for t in (_text(n) for n in root.iterfind("MeSH/minor")) if t),
        image_ids=tuple(n.get("id", "") for n in root.iterfind("parentImage") if n.get("id")),
    )


def _attribute(root: ET.Element, tag: str) -> str:
    node = root.find(tag)
    return (node.get("id") or "").strip() if node is not None else ""


def _text(node: ET.Element) -> str:
    return " ".join((node.text or "").split())


def _iter_xml_blobs(source: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every ``*.xml`` in a folder (recursively) or a ``.tgz``/``.tar`` file."""
    if source.is_dir():
        for path in sorted(source.rglob("*.xml"), key=lambda p: _natural_key(p.name)):
            yield str(path), path.read_bytes()
        return
    if not source.is_file():
        raise OpenIError(f"{source}: no such file or folder")
    try:
        with tarfile.open(source, "r:*") as archive:
            members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")]
            for member in sorted(members, key=lambda m: _natural_key(Path(m.name).name)):
                handle = archive.extractfile(member)
                if handle is not None:
                    yield member.name, handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise OpenIError(f"{source}: not a readable .tgz archive ({_archive_problem(exc)})") from exc


def _archive_problem(exc: BaseException) -> str:
    """One line of a tarfile error: the gzip reader's reason when ``tarfile`` lists every method tried."""
    lines = [line.strip().lstrip("- ").strip() for line in str(exc).splitlines() if line.strip()]
    gzip_line = next((line for line in lines if line.startswith("method gz:")), None)
    if gzip_line is not None:
        return "gzip: " + gzip_line.removeprefix("method gz:").strip()
    return lines[0] if lines else type(exc).__name__


def read_openi_reports(source: str | os.PathLike) -> tuple[list[OpenIReport], Counter[str]]:
    """All reports in a folder of XML files or an ``NLMCXR_reports.tgz``, plus skip counts.

    Malformed XML files are skipped and counted under ``"malformed XML"``; a repeated report id
    under ``"duplicate id"``.
    """
    reports: list[OpenIReport] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    for name, blob in _iter_xml_blobs(Path(source)):
        try:
            report = parse_openi_xml(blob, name)
        except OpenIError:
            skipped["malformed XML"] += 1
            continue
        if report.report_id in seen:
            skipped["duplicate id"] += 1
            continue
        seen.add(report.report_id)
        reports.append(report)
    return reports, skipped


def _natural_key(text: str) -> list:
    """Sort key where digit runs compare as numbers: ``CXR2`` < ``CXR10``."""
    import re

    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


# --------------------------------------------------------------------------- obtaining offline


def cache_dir() -> Path:
    """``$XRAYGPT_LAB_CACHE/openi``, else ``~/.cache/xraygpt-lab/openi``."""
    return cache_root() / "openi"


def _check_tgz(path: Path) -> int:
    """Number of XML reports in the archive; raise :class:`OpenIError` if there are none."""
    count = sum(1 for _ in _iter_xml_blobs(path))
    if count == 0:
        raise OpenIError(f"{path}: archive holds no .xml reports")
    return count


def _atomic_copy(data_source: Callable[[io.BufferedWriter], None], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            data_source(handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_reports_tgz(target: Path, timeout: float = 120.0) -> Path:
    """Fetch the torchxrayvision wheel with ``pip download --no-deps`` and copy its
    ``NLMCXR_reports.tgz`` to ``target`` (atomically). Needs a package index; raises
    :class:`OpenIError` on failure or timeout."""
    return fetch_wheel_member(WHEEL_MEMBER, target, OpenIError, f"; pass --tgz PATH to a local {REPORTS_TGZ}",
                              timeout)


def obtain_openi_reports(tgz: str | os.PathLike | None = None, allow_download: bool = True,
                         timeout: float = 120.0) -> Path:
    """Path of an ``NLMCXR_reports.tgz``: ``tgz`` itself when given (copied into the cache only
    while the cache holds none, so a partial archive never replaces the full one), else the
    cached copy, else downloaded from the torchxrayvision wheel (when ``allow_download``)."""
    cached = cache_dir() / REPORTS_TGZ
    if tgz is not None:
        source = Path(tgz)
        _check_tgz(source)
        if not cached.exists():
            with source.open("rb") as handle:
                _atomic_copy(lambda out: shutil.copyfileobj(handle, out), cached)
        return source
    if cached.is_file():
        return cached
    if not allow_download:
        raise OpenIError(f"no cached {REPORTS_TGZ} in {cached.parent} and downloading is off")
    download_reports_tgz(cached, timeout=timeout)
    _check_tgz(cached)
    return cached


def extract_reports(tgz: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write the archive's XML reports to ``out/ecgen-radiology/<name>.xml`` (file names only,
    so no archive path can escape ``out``); return how many were written."""
    folder = Path(out) / "ecgen-radiology"
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, blob in _iter_xml_blobs(Path(tgz)):
        _atomic_copy(lambda handle: handle.write(blob), folder / Path(name).name)
        count += 1
    return count


# --------------------------------------------------------------------------- MeSH vs CheXpert

#: MeSH major terms (their first ``/``-separated part, optionally with a required qualifier)
#: that mean a CheXpert observation is present. OpenI's annotators index only what is present,
#: so a missing term means "not positive", never "negative".
MESH_TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("Cardiomegaly", "Cardiac Shadow/enlarged"),
    "Pleural Effusion": ("Pleural Effusion",),
    "Pneumothorax": ("Pneumothorax", "Hydropneumothorax", "Hemopneumothorax"),
    "Consolidation": ("Consolidation",),
    "Edema": ("Pulmonary Edema", "Pulmonary Congestion"),
    "Atelectasis": ("Pulmonary Atelectasis",),
    "Lung Opacity": ("Opacity/lung", "Opacity/retrocardiac", "Airspace Disease", "Infiltrate"),
    "Lung Lesion": ("Nodule", "Mass", "Lung Neoplasms", "Density/round", "Opacity/round",
                    "Cavitation"),
    "Fracture": ("Fractures, Bone",),
    "Support Devices": ("Catheters, Indwelling", "Implanted Medical Device",
                        "Surgical Instruments", "Tube, Inserted", "Medical Device", "Stents",
                        "Pacemaker, Artificial"),
    "Pneumonia": ("Pneumonia",),
    "Pleural Other": ("Thickening/pleura", "Cicatrix/pleura", "Pleura", "Calcinosis/pleura",
                      "Fibrosis/pleura"),
}


def _term_matches(term: str, rule: str) -> bool:
    parts = [p.strip().lower() for p in term.split("/")]
    wanted = [p.strip().lower() for p in rule.split("/")]
    return parts[0] == wanted[0] and all(w in parts[1:] for w in wanted[1:])


def mesh_to_chexpert(major_terms: Iterable[str]) -> dict[str, int]:
    """1/0 per mapped observation: 1 when a MeSH major term maps to it.

    "No Finding" applies CheXpert's rule to the mapped terms only (1 when none but Support Devices
    is present), and ``"normal"`` is OpenI's own term (nothing abnormal at all, not even a
    granuloma or a degenerative spine), which is what CheXpert's No Finding means: compare the
    labeler's "No Finding" with ``"normal"``.

    >>> mesh_to_chexpert(["Cardiomegaly/mild", "Pulmonary Atelectasis/base/left"])["Atelectasis"]
    1
    """
    terms = list(major_terms)
    labels = {name: int(any(_term_matches(t, r) for t in terms for r in rules))
              for name, rules in MESH_TO_CHEXPERT.items()}
    labels["No Finding"] = int(not any(v for k, v in labels.items() if k != "Support Devices"))
    labels["normal"] = int(any(_term_matches(t, "normal") for t in terms))
    return labels


def agreement_table(reports: Iterable[OpenIReport], labels: Iterable[dict],
                    uncertain_as_positive: bool = False) -> list[dict]:
    """Per mapped observation: MeSH positives, labeler positives, precision, recall and F1.

    A labeler value counts as positive when it is 1 (or also -1 with ``uncertain_as_positive``;
    OpenI's annotators mostly index definite findings, so the default leaves -1 out). The row
    ``"normal"`` compares the labeler's "No Finding" with OpenI's own "normal" term.
    """
    counts = {name: Counter() for name in (*MESH_TO_CHEXPERT, "No Finding", "normal")}
    for report, labeled in zip(reports, labels, strict=True):
        reference = mesh_to_chexpert(report.mesh_major)
        for name, truth in reference.items():
            value = labeled.get("No Finding" if name == "normal" else name)
            predicted = value == 1 or (uncertain_as_positive and value == -1)
            counts[name]["tp" if truth and predicted else "fp" if predicted else
                         "fn" if truth else "tn"] += 1
    rows = []
    for name, c in counts.items():
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"observation": name, "mesh_positives": c["tp"] + c["fn"],
                     "labeler_positives": c["tp"] + c["fp"], "tp": c["tp"], "fp": c["fp"],
                     "fn": c["fn"], "precision": round(precision, 3), "recall": round(recall, 3),
                     "f1": round(f1, 3)})
    return rows
