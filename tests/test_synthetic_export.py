"""Export of the synthetic world: XrayGPT layout, labels/masks/reports, byte-determinism and
no half-written filter_cap.json."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraygpt_lab.data.synthetic import export as export_mod
from xraygpt_lab.data.synthetic.export import ACQUISITION_COLUMNS, LOCATION_COLUMNS, export_dataset, mask_filename
from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS
from xraygpt_lab.data.synthetic.world import WorldConfig, render_case
from xraygpt_lab.errors import XrayGPTLabError

N, SIZE = 6, 48


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    export_dataset(out, n=N, size=SIZE, seed=4, config=WorldConfig(normal_fraction=0.2),
                   progress=False, workers=1)
    return out


def test_xraygpt_layout_is_readable(exported):
    caps = json.loads((exported / "filter_cap.json").read_text())
    annotations = caps["annotations"]
    assert len(annotations) == N
    for ann in annotations:
        assert set(ann) == {"image_id", "caption"} and ann["caption"].strip()
        with Image.open(exported / "image" / f"{ann['image_id']}.png") as im:
            assert im.mode == "L" and im.size == (SIZE, SIZE)
    assert [a["image_id"] for a in annotations] == [f"syn-s4-{i:06d}" for i in range(N)]


def test_labels_masks_and_reports_agree(exported):
    with open(exported / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[: 1 + len(RENDERED_OBSERVATIONS)] == ["image_id", *RENDERED_OBSERVATIONS]
    assert all(c in rows[0] for c, _, _ in LOCATION_COLUMNS)
    assert list(rows[0])[-len(ACQUISITION_COLUMNS):] == [c for c, _ in ACQUISITION_COLUMNS]
    records = [json.loads(line) for line in (exported / "reports.jsonl").read_text().splitlines()]
    assert [r["image_id"] for r in records] == [r["image_id"] for r in rows]
    for row, rec in zip(rows, records):
        assert {k: int(row[k]) for k in RENDERED_OBSERVATIONS} == rec["labels"]
        assert rec["report"].startswith("FINDINGS:") and rec["summary"] and len(rec["conversation"]) >= 15
        for obs in RENDERED_OBSERVATIONS:
            path = exported / "masks" / mask_filename(row["image_id"], obs)
            should = int(row[obs]) == 1 and obs != "No Finding"
            assert path.exists() == should, (obs, path)
            if should:
                mask = np.array(Image.open(path))
                assert set(np.unique(mask)) <= {0, 255} and (mask == 255).any()
        for f in rec["findings"]:
            assert row[f"{f['observation']} side"] == (f["side"] or "")
    # the exported pixels are the rendered case, quantised to 8 bits, and the acquisition
    # columns say how that film was taken
    rec = records[0]
    case = render_case(rec["seed"], SIZE, WorldConfig(normal_fraction=0.2))
    assert rows[0]["view"] == case.anatomy.view in ("PA", "AP")
    assert float(rows[0]["kvp"]) == pytest.approx(case.anatomy.kvp, abs=0.05)
    assert rows[0]["marker"] == case.anatomy.marker
    assert float(rows[0]["pixel_mm"]) == pytest.approx(400.0 / SIZE / case.anatomy.scale, abs=1e-3)
    views = {row["view"] for row in rows} | {render_case(s, 32).anatomy.view for s in range(40)}
    assert views == {"PA", "AP"}  # both kinds of film occur
    png = np.array(Image.open(exported / rec["image"]), dtype=np.float32) / 255
    assert np.abs(png - case.image).max() <= 0.5 / 255 + 1e-6


def test_same_seed_same_bytes_whatever_the_worker_count(exported, tmp_path):
    export_dataset(tmp_path, n=N, size=SIZE, seed=4, config=WorldConfig(normal_fraction=0.2),
                   progress=False, workers=2)
    assert digest(tmp_path) == digest(exported)


def test_interrupted_overwrite_keeps_the_previous_index_and_its_images(tmp_path, monkeypatch):
    export_dataset(tmp_path, n=2, size=SIZE, seed=0, progress=False, workers=1)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    real = export_mod._export_one

    def crash(job):
        if job[2] == 1:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(export_mod, "_export_one", crash)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(tmp_path, n=3, size=SIZE, seed=1, progress=False, workers=1, overwrite=True)
    assert all(p.read_bytes() == data for p, data in before.items())  # nothing deleted or changed
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_folder_with_files_is_refused_without_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(XrayGPTLabError, match="already holds files.*notes.txt.*--overwrite"):
        export_dataset(tmp_path, n=1, size=SIZE, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_unwritable_destination_is_a_typed_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(XrayGPTLabError, match="cannot write|not a folder"):
        export_dataset(blocker / "sub", n=1, size=SIZE, progress=False)
    with pytest.raises(XrayGPTLabError, match="not a folder"):
        export_dataset(blocker, n=1, size=SIZE, progress=False)


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=1, size=8), dict(n=1, seed=-3), dict(n="3")])
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    with pytest.raises(ValueError):
        export_dataset(tmp_path, progress=False, **kwargs)
