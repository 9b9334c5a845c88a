"""Finding geometry from real annotations (NIH, RSNA and SIIM tables of the torchxrayvision
wheel): tables read right, boxes placed where they sit on the film, the built-in geometry kept
(with a warning) without them. Most tests write small tables in the real formats to a temporary
cache; the last ones use the real tables when they are cached."""
from __future__ import annotations

import csv
import gzip
import io
import zipfile

import numpy as np
import pytest

from xraygpt_lab.data.synthetic import real_findings as rf
from xraygpt_lab.data.synthetic.lesions import Finding
from xraygpt_lab.data.synthetic.world import WorldConfig, render_case

REAL = rf.obtain_finding_tables(allow_download=False) is not None
REAL_GEOMETRY = WorldConfig(finding_geometry="real")


def mask2rle(mask: np.ndarray) -> str:
    """The SIIM-ACR challenge's encoding (its ``mask2rle``): pixels down the columns, each run's
    start counted from the end of the previous run."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    starts, ends = edges[0::2], edges[1::2]
    out, last = [], 0
    for s, e in zip(starts, ends):
        out += [str(s - last), str(e - s)]
        last = e
    return " ".join(out)


def write_tables(folder, nih_rows=(), rsna_rows=(), siim_masks=()) -> None:
    """The three tables in their real formats: NIH pixel boxes, RSNA boxes, SIIM RLE masks."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"])
    for i, (label, x, y, bw, bh) in enumerate(nih_rows):
        w.writerow([f"{i:08d}_000.png", label, x, y, bw, bh])
    (folder / rf.TABLES["nih"]).write_bytes(gzip.compress(buf.getvalue().encode()))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["patientId", "x", "y", "width", "height", "Target"])
    w.writerow(["p-none", "", "", "", "", "0"])
    for i, (x, y, bw, bh) in enumerate(rsna_rows):
        w.writerow([f"p{i}", x, y, bw, bh, 1])
    with zipfile.ZipFile(folder / rf.TABLES["rsna"], "w") as z:
        z.writestr("stage_2_train_labels.csv", buf.getvalue())
    lines = ["ImageId, EncodedPixels", "none,-1"] + [f"img{i}, {mask2rle(m)}" for i, m in enumerate(siim_masks)]
    (folder / rf.TABLES["siim"]).write_bytes(gzip.compress("\n".join(lines).encode()))


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A cache folder holding tables the test writes; the summary is re-read for each test."""
    monkeypatch.setenv("XRAYGPT_LAB_CACHE", str(tmp_path))
    rf.finding_boxes.cache_clear()
    yield tmp_path / "torchxrayvision"
    rf.finding_boxes.cache_clear()


def test_rle_round_trip_keeps_rows_and_columns():
    mask = np.zeros((1024, 1024), bool)
    mask[100:180, 40:60] = True   # a rim high on the image left
    mask[500, 700:705] = True
    back = rf.decode_rle([mask2rle(mask)])
    assert np.array_equal(back, mask)


def test_tables_are_read_as_film_fractions(fake_cache):
    pneumothorax = np.zeros((1024, 1024), bool)
    pneumothorax[60:300, 120:200] = True
    write_tables(fake_cache, nih_rows=[("Nodule", 512, 256, 64, 32)],
                 rsna_rows=[(100, 400, 200, 300)], siim_masks=[pneumothorax])
    boxes = rf.finding_boxes()
    nodule, = boxes["Lung Lesion"]
    assert (nodule["cx"], nodule["cy"], nodule["w"], nodule["h"]) == pytest.approx((0.5312, 0.2656, 0.0625, 0.0312), abs=1e-4)
    opacity, = boxes["Consolidation"]
    assert (opacity["cx"], opacity["cy"]) == pytest.approx((200 / 1024, 550 / 1024), abs=1e-4)
    ptx, = boxes["Pneumothorax"]
    assert ptx["cx"] == pytest.approx(160 / 1024, abs=1e-3) and ptx["cy"] == pytest.approx(180 / 1024, abs=1e-3)
    assert ptx["area"] == pytest.approx(240 * 80 / 1024**2, rel=1e-3)
    assert rf.summary_path().is_file()  # read once, kept beside the tables


def test_a_lesion_is_drawn_where_its_real_box_sits_on_the_film(fake_cache):
    # one nodule box, 24 mm-ish, in the middle of the image-left (patient's right) lung
    write_tables(fake_cache, nih_rows=[("Nodule", 0.30 * 1024 - 30, 0.45 * 1024 - 30, 60, 60)])
    for seed in range(6):
        case = render_case(seed, 128, REAL_GEOMETRY, findings=[Finding("Lung Lesion")])
        if not case.labels["Lung Lesion"]:
            continue  # hidden by another structure on this phantom: not labelled, fine
        f = case.findings[0]
        assert f.side == "right" and f.detail["kind"] == "nodule"
        rows, cols = np.nonzero(case.masks["Lung Lesion"])
        assert abs(cols.mean() / 128 - 0.30) < 0.03 and abs(rows.mean() / 128 - 0.45) < 0.03
        assert 8 <= f.detail["size_mm"] <= 30


def test_severity_and_side_follow_the_real_box(fake_cache):
    small_left = np.zeros((1024, 1024), bool)
    small_left[80:200, 800:830] = True   # image right = the patient's left, ~1 % of the film
    write_tables(fake_cache, nih_rows=[("Effusion", 120, 500, 300, 0.6 * 1024)], siim_masks=[small_left])
    for seed in range(4):
        eff = rf.real_finding(Finding("Pleural Effusion"), render_case(seed, 64).anatomy, np.random.default_rng(seed))
        assert (eff.side, eff.severity) == ("right", "large")
        ptx = rf.real_finding(Finding("Pneumothorax"), render_case(seed, 64).anatomy, np.random.default_rng(seed))
        assert (ptx.side, ptx.severity) == ("left", "small")
    # what the caller fixed stays: a left effusion cannot come from a right-sided box
    fixed = rf.real_finding(Finding("Pleural Effusion", side="left"), render_case(0, 64).anatomy,
                            np.random.default_rng(0))
    assert fixed == Finding("Pleural Effusion", side="left")


def test_without_the_tables_the_world_keeps_built_in_geometry_and_says_so(fake_cache):
    with pytest.warns(UserWarning, match="finding geometry: built-in"):
        case = render_case(11, 64, REAL_GEOMETRY, findings=[Finding("Pleural Effusion")])
    assert np.array_equal(case.image, render_case(11, 64, findings=[Finding("Pleural Effusion")]).image)


def test_bad_finding_geometry_setting_is_rejected():
    with pytest.raises(ValueError, match="finding_geometry"):
        WorldConfig(finding_geometry="mine")


needs_tables = pytest.mark.skipif(not REAL, reason=f"the wheel's finding tables are not cached in "
                                                  f"{rf.tables_dir()}")


@needs_tables
def test_real_tables_give_real_sides_and_sizes():
    rf.finding_boxes.cache_clear()
    boxes = rf.finding_boxes()
    assert len(boxes["Pneumothorax"]) > 1000 and len(boxes["Consolidation"]) > 1000
    assert len(boxes["Lung Lesion"]) > 100
    real_right = np.mean([b["cx"] < 0.5 for b in boxes["Pneumothorax"]])
    drawn = [render_case(s, 64, REAL_GEOMETRY, findings=[Finding("Pneumothorax")]).findings for s in range(120)]
    drawn_right = np.mean([f[0].side == "right" for f in drawn if f])
    assert abs(drawn_right - real_right) < 0.12  # 120 draws: ~2.5 standard errors
    for s in range(40):
        f = render_case(s, 64, REAL_GEOMETRY, findings=[Finding("Lung Lesion")]).findings
        if f:
            lo, hi = rf.LESION_MM[f[0].detail["kind"]]
            assert lo <= f[0].detail["size_mm"] <= hi


@needs_tables
def test_real_geometry_is_deterministic_and_keeps_labels_matching_pixels():
    a = render_case(21, 96, REAL_GEOMETRY)
    b = render_case(21, 96, REAL_GEOMETRY)
    assert np.array_equal(a.image, b.image) and a.report == b.report
    for s in range(30):
        case = render_case(s, 96, REAL_GEOMETRY)
        for f in case.findings:
            assert case.masks[f.observation].any(), (s, f.observation)
