"""Write the synthetic world to disk in XrayGPT's dataset layout (plus labels, masks, reports).

Layout (XrayGPT ``README-DATASET``: ``image/`` + ``filter_cap.json``)::

    DIR/image/<id>.png                 8-bit grayscale radiograph
    DIR/filter_cap.json                {"annotations": [{"image_id": id, "caption": summary}]}
    DIR/labels.csv                     image_id, one 0/1 column per RENDERED_OBSERVATION,
                                       then "<Observation> side|zone|severity" columns,
                                       then how the film was taken (ACQUISITION_COLUMNS)
    DIR/reports.jsonl                  one JSON object per image: report, summary, conversation,
                                       findings, labels
    DIR/masks/<id>_<Observation>.png   0/255 mask per positive (spaces in the name become "_",
                                       see ``mask_filename``)
    DIR/world.json                     how the set was generated (n, size, seed, config)

Images are rendered in worker processes; the metadata files are written atomically (temp file +
``os.replace``) and ``filter_cap.json`` last, so an interrupted export never leaves a
half-written ``filter_cap.json``. The same arguments give the same bytes.

A folder that already holds files is refused unless ``overwrite=True``; even then only the files
listed above are replaced and nothing else is deleted (an interrupted overwrite leaves the previous
``filter_cap.json`` and the images it lists in place).
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS
from xraygpt_lab.data.synthetic.anatomy import pixel_spacing_mm
from xraygpt_lab.data.synthetic.lesions import DRAWABLE
from xraygpt_lab.data.synthetic.world import (
    MIN_SIZE,
    WorldConfig,
    case_image_id,
    case_seed,
    render_case,
)
from xraygpt_lab.errors import XrayGPTLabError

#: Largest image side the exporter accepts (memory and disk stay reasonable).
MAX_SIZE: int = 2048

#: Location columns of labels.csv: (column name, observation, Finding attribute).
LOCATION_COLUMNS: tuple[tuple[str, str, str], ...] = tuple(
    (f"{obs} {attr}", obs, attr)
    for obs in DRAWABLE
    for attr in ("side", "zone", "severity")
)


#: Acquisition columns of labels.csv: (column name, how to read it off a case).
ACQUISITION_COLUMNS: tuple[tuple[str, object], ...] = (
    ("view", lambda c: c.anatomy.view),                            # PA or AP
    ("kvp", lambda c: round(c.anatomy.kvp, 1)),                    # tube voltage
    ("exposure", lambda c: round(c.anatomy.exposure, 3)),          # dose relative to standard
    ("noise", lambda c: round(c.anatomy.noise_level, 4)),          # quantum noise, display units
    ("rotation_deg", lambda c: round(c.anatomy.rotation_deg, 2)),  # in-plane tilt
    ("axial_rotation_deg", lambda c: round(c.anatomy.axial_rotation_deg, 2)),
    ("inspiration_ribs", lambda c: round(c.anatomy.inspiration, 1)),  # posterior rib at the dome
    ("marker", lambda c: c.anatomy.marker),                        # burned-in "L", "R" or ""
    ("pixel_mm", lambda c: round(pixel_spacing_mm(c.anatomy, c.image.shape[0]), 3)),
)


def mask_filename(image_id: str, observation: str) -> str:
    """File name of one mask, e.g. ``syn-s0-000001_Pleural_Effusion.png``."""
    return f"{image_id}_{observation.replace(' ', '_')}.png"


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] image -> uint8 [0, 255] (rounded)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _export_one(job: tuple[str, int, int, int, WorldConfig]) -> dict:
    """Render case ``index`` and write its image and masks; return its metadata row."""
    out, seed, index, size, config = job
    image_id = case_image_id(seed, index)
    case = render_case(case_seed(seed, index), size, config, image_id=image_id)
    root = Path(out)
    (root / "image" / f"{image_id}.png").write_bytes(_png_bytes(to_uint8(case.image)))
    for obs, mask in case.masks.items():
        (root / "masks" / mask_filename(image_id, obs)).write_bytes(_png_bytes(mask.astype(np.uint8) * 255))
    row: dict = {"image_id": image_id, **{obs: case.labels[obs] for obs in RENDERED_OBSERVATIONS}}
    by_obs = {f.observation: f for f in case.findings}
    for column, obs, attr in LOCATION_COLUMNS:
        value = getattr(by_obs[obs], attr) if obs in by_obs else None
        row[column] = "" if value is None else value
    for column, read in ACQUISITION_COLUMNS:
        row[column] = read(case)
    record = {
        "image_id": image_id,
        "image": f"image/{image_id}.png",
        "report": case.report,
        "summary": case.summary,
        "conversation": case.conversation,
        "findings": [f.to_dict() for f in case.findings],
        "labels": case.labels,
        "seed": case.seed,
    }
    return {"row": row, "record": record, "caption": case.summary}


def existing_files(folder: Path, limit: int = 3) -> list[str]:
    """Up to ``limit`` files (not folders) under ``folder``, as relative paths."""
    found: list[str] = []
    for base, _dirs, files in os.walk(folder):
        for name in sorted(files):
            found.append((Path(base) / name).relative_to(folder).as_posix())
            if len(found) >= limit:
                return found
    return found


def _prepare(out: Path, overwrite: bool) -> Path:
    try:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise XrayGPTLabError(f"--out {out} exists and is not a folder")
        present = existing_files(out) if out.is_dir() else []
        if present and not overwrite:
            raise XrayGPTLabError(
                f"--out {out} already holds files ({', '.join(present)}{', ...' if len(present) == 3 else ''}); "
                "give an empty or new folder, or --overwrite to replace the files synth writes (nothing else "
                "is deleted)")
        for sub in ("image", "masks"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except XrayGPTLabError:
        raise
    except OSError as exc:
        raise XrayGPTLabError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return out


def export_dataset(out: Path, n: int, size: int = 128, seed: int = 0, config: WorldConfig | None = None,
                   progress: bool = True, workers: int | None = None, overwrite: bool = False) -> Path:
    """Render ``n`` cases and write them under ``out`` (layout in the module docstring).

    ``workers`` processes render in parallel (default: all CPUs for n >= 64, else 1); the
    output does not depend on it. ``out`` must be new or hold no file unless ``overwrite``.
    Returns the path of ``filter_cap.json``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    config = config or WorldConfig()
    out = _prepare(Path(out), overwrite)
    if workers is None:
        workers = (os.cpu_count() or 1) if n >= 64 else 1
    workers = max(1, min(int(workers), int(n)))
    jobs = [(str(out), int(seed), i, int(size), config) for i in range(int(n))]

    from tqdm.auto import tqdm

    bar = tqdm(total=int(n), desc="synth", unit="img", disable=not progress)
    results: list[dict] = []
    try:
        if workers == 1:
            for job in jobs:
                results.append(_export_one(job))
                bar.update()
        else:
            with multiprocessing.get_context().Pool(workers) as pool:
                for res in pool.imap(_export_one, jobs, chunksize=max(1, min(32, n // (4 * workers)))):
                    results.append(res)
                    bar.update()
    except OSError as exc:
        raise XrayGPTLabError(f"cannot write to {out}: {exc.strerror or exc}") from None
    finally:
        bar.close()

    header = ["image_id", *RENDERED_OBSERVATIONS, *(c for c, _, _ in LOCATION_COLUMNS),
              *(c for c, _ in ACQUISITION_COLUMNS)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for res in results:
        writer.writerow(res["row"])
    atomic_write_text(out / "labels.csv", buf.getvalue())
    atomic_write_text(out / "reports.jsonl",
                      "".join(json.dumps(r["record"], ensure_ascii=False) + "\n" for r in results))
    world = {"n": int(n), "size": int(size), "seed": int(seed),
             "config": {**asdict(config), "co_occurrence": [[a, b, m] for (a, b), m in config.co_occurrence.items()]}}
    atomic_write_text(out / "world.json", json.dumps(world, indent=1))
    captions = {"annotations": [{"image_id": r["row"]["image_id"], "caption": r["caption"]} for r in results]}
    cap_path = out / "filter_cap.json"
    atomic_write_text(cap_path, json.dumps(captions, ensure_ascii=False, indent=1))
    return cap_path
