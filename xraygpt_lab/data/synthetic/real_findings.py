"""Where findings sit on real films, and how big they are: finding boxes and masks from the
torchxrayvision wheel, read at run time from the user's copy (never stored in the repository).

Sources (each under its publisher's terms; check them before any other use):

- ``BBox_List_2017.csv.gz``: 984 boxes drawn by radiologists on 1024-px NIH ChestX-ray14 films
  (NIH Clinical Center, released without restriction, acknowledgement requested). Used for
  nodules and masses (place and size), effusions (side; box height -> severity) and
  atelectasis (side).
- ``kaggle_stage_2_train_labels.csv.zip``: the RSNA Pneumonia Detection Challenge's ~9,500
  lung-opacity boxes on 1024-px films (RSNA, non-commercial research and education). Used for
  consolidation (side and zone).
- ``siim-pneumothorax-train-rle.csv.gz``: the SIIM-ACR Pneumothorax challenge's ~2,700
  pneumothorax masks (run-length encoded, 1024 px; SIIM/ACR, research use). Used for
  pneumothorax (side; share of the hemithorax -> severity).

The VinDr-CXR boxes in the same wheel (``vinbigdata-train.csv.gz``) come without the films'
sizes, so they cannot be placed on a film and are not used.

A real box is kept as fractions of its film (centre, width, height). A synthetic film frames the
thorax as a real one does (both lungs span ~0.08-0.90 of the width and ~0.10-0.85 of the height:
the median lung box of the wheel's 435 lung masks, and of 200 synthetic films), so a box is
placed at the same fractions of the synthetic film and sized as the same fraction of its field
(``anatomy.pixel_spacing_mm``). The side is read off where the box lands (patient's right on the
image left), the zone off this patient's lung zones. ``WorldConfig(finding_geometry="real")``
uses them; without the tables the world keeps its built-in geometry and says so.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from xraygpt_lab.atomic import atomic_write_text
from xraygpt_lab.data.synthetic.anatomy import (
    MM_PER_UNIT,
    AnatomyParams,
    heart_sdf,
    lung_envelope_sdf,
    pixel_spacing_mm,
    side_sign,
)
from xraygpt_lab.data.synthetic.lesions import LESION_MM, Finding, zone_of
from xraygpt_lab.data.wheel import cache_root, fetch_wheel_members

PREFIX = "torchxrayvision/data/"
#: The wheel's tables this module reads: short name -> file name inside ``PREFIX``.
TABLES: dict[str, str] = {
    "nih": "BBox_List_2017.csv.gz",
    "rsna": "kaggle_stage_2_train_labels.csv.zip",
    "siim": "siim-pneumothorax-train-rle.csv.gz",
}
FILM_PX: int = 1024  # NIH, RSNA and SIIM annotations are on 1024 x 1024 films
#: Version of the summary kept beside the tables (bump when the reading changes).
SUMMARY_VERSION: int = 1
#: Share of a real film one lung field covers (median of the wheel's lung masks: 0.16).
HEMITHORAX_SHARE: float = 0.16
#: Height of the lung fields as a share of a real film (median lung box: 0.10-0.85).
LUNG_HEIGHT_SHARE: float = 0.75
#: Effusion severity by the box's height over the lung height (the renderer draws small,
#: moderate and large effusions at 0.11, 0.32 and 0.58 of it: the cuts sit between).
EFFUSION_CUTS: tuple[float, float] = (0.20, 0.45)
#: Pneumothorax severity by its share of the hemithorax (small < 10 %, large >= 25 %).
PNEUMOTHORAX_CUTS: tuple[float, float] = (0.10, 0.25)
#: Which table serves which observation, and under which of its labels.
SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    "Lung Lesion": (("nih", "Nodule"), ("nih", "Mass")),
    "Pleural Effusion": (("nih", "Effusion"),),
    "Atelectasis": (("nih", "Atelectasis"),),
    "Consolidation": (("rsna", "Lung Opacity"),),
    "Pneumothorax": (("siim", "Pneumothorax"),),
}


def tables_dir() -> Path:
    """Where the tables are cached: ``<cache>/torchxrayvision/``."""
    return cache_root() / "torchxrayvision"


def summary_path() -> Path:
    """The boxes read from the tables, kept as JSON beside them."""
    return tables_dir() / f"finding_boxes_v{SUMMARY_VERSION}.json"


def obtain_finding_tables(allow_download: bool = False) -> dict[str, Path] | None:
    """The cached tables (short name -> path), downloaded from the wheel when allowed and
    missing; None when any is missing and downloading is not allowed."""
    paths = {k: tables_dir() / name for k, name in TABLES.items()}
    missing = {PREFIX + TABLES[k]: p for k, p in paths.items() if not p.is_file()}
    if missing and not allow_download:
        return None
    if missing:
        fetch_wheel_members(missing)
    return paths


def _box(label: str, cx: float, cy: float, w: float, h: float, **extra: float) -> dict:
    return {"label": label, "cx": round(cx, 4), "cy": round(cy, 4), "w": round(w, 4), "h": round(h, 4), **extra}


def read_nih(path: Path) -> list[dict]:
    """NIH boxes (``Image Index, Finding Label, x, y, w, h`` in pixels of 1024) as film fractions."""
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    out = []
    for row in list(csv.reader(io.StringIO(text)))[1:]:
        if len(row) < 6:
            continue
        x, y, w, h = (float(v) / FILM_PX for v in row[2:6])
        out.append(_box(row[1], x + w / 2, y + h / 2, w, h))
    return out


def read_rsna(path: Path) -> list[dict]:
    """RSNA lung-opacity boxes (``patientId, x, y, width, height, Target``) as film fractions."""
    with zipfile.ZipFile(path) as archive:
        text = archive.read(archive.namelist()[0]).decode("utf-8")
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("Target") != "1" or not row.get("width"):
            continue
        x, y, w, h = (float(row[k]) / FILM_PX for k in ("x", "y", "width", "height"))
        out.append(_box("Lung Opacity", x + w / 2, y + h / 2, w, h))
    return out


def decode_rle(runs: list[str], size: int = FILM_PX) -> np.ndarray:
    """One SIIM mask: the union of its run-length encoded parts (each "start length ..." with
    starts relative to the end of the previous run, pixels numbered down the columns, as in the
    challenge's ``mask2rle``) as bool [size, size] (rows = image rows)."""
    flat = np.zeros(size * size, dtype=bool)
    for text in runs:
        a = np.asarray(text.split(), dtype=np.int64)
        starts, lengths = a[0::2], a[1::2]
        begin = np.cumsum(starts) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        for b, n in zip(begin, lengths):
            flat[b:b + n] = True
    return flat.reshape(size, size).T


def read_siim(path: Path) -> list[dict]:
    """SIIM pneumothorax masks (``ImageId, EncodedPixels``; -1 = none) as one box per film with
    its share of the film (``area``)."""
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    runs: dict[str, list[str]] = {}
    for row in list(csv.reader(io.StringIO(text)))[1:]:
        if len(row) >= 2 and row[1].strip() not in ("", "-1"):
            runs.setdefault(row[0], []).append(row[1])
    out = []
    for parts in runs.values():
        mask = decode_rle(parts)
        rows, cols = np.nonzero(mask)
        x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
        out.append(_box("Pneumothorax", cols.mean() / FILM_PX, rows.mean() / FILM_PX,
                        (x1 - x0) / FILM_PX, (y1 - y0) / FILM_PX, area=round(float(mask.mean()), 6)))
    return out


READERS = {"nih": read_nih, "rsna": read_rsna, "siim": read_siim}


@lru_cache(maxsize=1)
def finding_boxes() -> dict[str, tuple[dict, ...]] | None:
    """Real boxes per observation (see ``SOURCES``), or None (with a warning) when the tables
    are not cached. Read once (about 15 s, mostly the SIIM masks) and kept beside the tables."""
    paths = obtain_finding_tables(allow_download=False)
    if paths is None:
        warnings.warn(f"finding geometry: built-in, because the torchxrayvision tables are not in "
                      f"{tables_dir()} (real_findings.obtain_finding_tables(allow_download=True) "
                      "fetches them)", stacklevel=2)
        return None
    summary = summary_path()
    if summary.is_file():
        boxes = json.loads(summary.read_text(encoding="utf-8"))
    else:
        boxes = {name: READERS[name](path) for name, path in paths.items()}
        atomic_write_text(summary, json.dumps(boxes))
    return {obs: tuple(b for name, label in src for b in boxes[name] if b["label"] == label)
            for obs, src in SOURCES.items()}


def film_to_phantom(params: AnatomyParams, fx: float, fy: float) -> tuple[float, float]:
    """Phantom coordinates of the point at fractions ``(fx, fy)`` of the film (the inverse of
    ``anatomy.phantom_to_pixel`` for a film of any size)."""
    X, Y = 2.0 * fx - 1.0, 2.0 * fy - 1.0
    t = np.deg2rad(params.rotation_deg)
    xs, ys = (X - params.shift_x) / params.scale, (Y - params.shift_y) / params.scale
    return float(np.cos(t) * xs + np.sin(t) * ys), float(-np.sin(t) * xs + np.cos(t) * ys)


def _side_at(x: float) -> str:
    return "left" if x > 0 else "right"  # the patient's left is on the image right


def _severity(value: float, cuts: tuple[float, float], names: tuple[str, str, str]) -> str:
    return names[0] if value < cuts[0] else names[1] if value < cuts[1] else names[2]


def _lesion(box: dict, params: AnatomyParams, side: str | None) -> dict | None:
    """Centre and size of a nodule or mass at the box's place, or None when that place is not
    clear inside this patient's lung (by more than the lesion's radius)."""
    kind = "mass" if box["label"] == "Mass" else "nodule"
    field_mm = pixel_spacing_mm(params, 1)  # mm across the whole film
    lo, hi = LESION_MM[kind]
    size_mm = int(np.clip(round(np.sqrt(box["w"] * box["h"]) * field_mm), lo, hi))
    x, y = film_to_phantom(params, box["cx"], box["cy"])
    at = _side_at(x)
    if side is not None and at != side:
        return None
    r = size_mm / 2 / MM_PER_UNIT  # radius in phantom units
    inside = (float(lung_envelope_sdf(params, np.float32(x), np.float32(y), at)) < -(r + 0.04)
              and float(heart_sdf(params, np.float32(x), np.float32(y), params.heart_ctr)) > r + 0.04
              and side_sign(at) * x > params.mediastinum_half_width + r + 0.05)
    if not inside:
        return None
    return {"side": at, "zone": zone_of(params, at, y),
            "detail": {"kind": kind, "size_mm": size_mm, "center": [round(x, 4), round(y, 4)]}}


def _placed(obs: str, box: dict, params: AnatomyParams, side: str | None) -> dict | None:
    """What one real box says about a finding of ``obs`` on this patient (None: not usable)."""
    if obs == "Lung Lesion":
        return _lesion(box, params, side)
    x, y = film_to_phantom(params, box["cx"], box["cy"])
    at = _side_at(x)
    if side is not None and at != side:
        return None
    if obs == "Pleural Effusion":
        return {"side": at, "severity": _severity(box["h"] / LUNG_HEIGHT_SHARE, EFFUSION_CUTS,
                                                  ("small", "moderate", "large"))}
    if obs == "Pneumothorax":
        return {"side": at, "severity": _severity(box["area"] / HEMITHORAX_SHARE, PNEUMOTHORAX_CUTS,
                                                  ("small", "moderate", "large"))}
    if obs == "Consolidation":
        return {"side": at, "zone": zone_of(params, at, y)}
    return {"side": at}  # atelectasis: the renderer draws it basal; the table gives its side


def real_finding(f: Finding, params: AnatomyParams, rng: np.random.Generator,
                 tries: int = 32) -> Finding:
    """``f`` with whatever the caller left out (side, zone, severity, size, centre) taken from a
    randomly drawn real box of its observation; unchanged when no box fits this patient within
    ``tries`` draws, when its observation has no table, or when the tables are not cached."""
    boxes = finding_boxes()
    pool = boxes.get(f.observation) if boxes else None
    if not pool:
        return f
    for _ in range(tries):
        placed = _placed(f.observation, pool[int(rng.integers(len(pool)))], params, f.side)
        if placed is not None and (f.zone is None or placed.get("zone") in (None, f.zone)):
            break
    else:
        return f
    detail = {**placed.get("detail", {}), **f.detail}
    if f.observation == "Lung Lesion" and "center" in f.detail:
        detail = dict(f.detail)  # a caller's centre keeps its own size and kind
    return Finding(f.observation, f.side or placed["side"], f.zone or placed.get("zone"),
                   f.severity or placed.get("severity"), detail)
