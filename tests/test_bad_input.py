"""Bad input: nothing lost, nothing exposed, no raw traceback.

One test (or one small group) per way a user can hurt themselves: writing into a folder that
holds data, an output path that cannot be written, broken dataset records, broken image files,
empty reports, prompts longer than the context, compressed DICOMs, ids that leave the dataset
folder, paths typed into the workshop page, and unexpected errors in the command line. Each
asserts the exit code, the one-line message naming the thing, and that files are untouched.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import write_dicom, write_png, write_xraygpt_folder
from test_chat_panel import small_model, tokenizer, write_small_run  # noqa: F401  (fixture + helpers)
from test_cli_synth import run_cli

from xraygpt_lab.errors import ImageLoadError

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def run_process(*args: str, env: dict | None = None, prefix: tuple[str, ...] = (), **kwargs) -> subprocess.CompletedProcess:
    """``python -m xraygpt_lab ARGS`` in a fresh process (this checkout first on the path)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    if "XRAYGPT_DEBUG" not in (env or {}):
        environment.pop("XRAYGPT_DEBUG", None)
    return subprocess.run([*prefix, sys.executable, "-m", "xraygpt_lab", *args], capture_output=True, text=True,
                          env=environment, timeout=300, **kwargs)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("xraygpt-lab") and " error: " in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a digest of its bytes (what "untouched" compares)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def png(path: Path, seed: int = 0, shape: tuple[int, int] = (40, 48)) -> Path:
    return write_png(path, np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8))


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A 400-byte PNG whose header claims ``side x side`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def damaged_png(path: Path) -> Path:
    """A PNG with a complete header and end marker but garbage in its pixel stream."""
    png(path, seed=5)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    data[start:start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer):  # noqa: F811
    return write_small_run(tmp_path_factory.mktemp("bad-input") / "run", tokenizer)


# --------------------------------------------------------------------------- 1. synth --out


def test_synth_refuses_a_folder_with_files_and_overwrite_deletes_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    assert run_cli(["synth", "--n", "2", "--size", "32", "--seed", "1", "--out", str(data), "--quiet"], capsys)[0] == 0
    (data / "notes.txt").write_text("my notes")
    before = snapshot(data)

    code, _, err = run_cli(["synth", "--n", "2", "--size", "32", "--seed", "2", "--out", str(data), "--quiet"], capsys)
    line = one_line(err)
    assert code == 2 and str(data) in line and "already holds files" in line and "--overwrite" in line
    assert snapshot(data) == before

    code, _, _ = run_cli(["synth", "--n", "2", "--size", "32", "--seed", "2", "--out", str(data), "--quiet",
                          "--overwrite"], capsys)
    after = snapshot(data)
    assert code == 0
    kept = [name for name in before if name.startswith("image/") or name.startswith("masks/") or name == "notes.txt"]
    assert all(after[name] == before[name] for name in kept), "a file the command did not write changed"
    ids = [a["image_id"] for a in json.loads((data / "filter_cap.json").read_text())["annotations"]]
    assert ids and all(i.startswith("syn-s2-") for i in ids)


# --------------------------------------------------------------------------- 2. --out checked first


def test_out_onto_a_folder_is_refused_before_the_work(tmp_path, capsys):
    image = png(tmp_path / "chest.png")
    folder = tmp_path / "results"
    folder.mkdir()
    no_run = tmp_path / "no-such-run"  # the --out check comes first, so the run is never looked at
    cases = [
        ["evaluate", "--run", str(no_run), "--data", str(tmp_path / "no-data"), "--out", str(folder)],
        ["explain", str(image), "--run", str(no_run), "--phrase", "effusion", "--out", str(folder)],
        ["label", "--in", str(tmp_path / "reports.jsonl"), "--out", str(folder)],
    ]
    (tmp_path / "reports.jsonl").write_text('{"id": 1, "text": "Small left effusion."}\n')
    for argv in cases:
        code, _, err = run_cli(argv, capsys)
        line = one_line(err)
        assert code == 2 and f"--out {folder} is a folder" in line, (argv, line)
    assert list(folder.iterdir()) == []


def test_label_refuses_to_overwrite_its_input(tmp_path, capsys):
    reports = tmp_path / "reports.jsonl"
    reports.write_text('{"id": 1, "text": "Small left effusion."}\n')
    before = reports.read_bytes()
    link = tmp_path / "same.jsonl"
    os.link(reports, link)  # the same file under another name
    for out in (reports, link):
        code, _, err = run_cli(["label", "--in", str(reports), "--out", str(out)], capsys)
        assert code == 2 and "is also the input file" in one_line(err)
    assert reports.read_bytes() == before


def test_out_in_a_read_only_folder_fails_in_a_second_and_writes_nothing(tmp_path):
    """As a user who may not write there (root ignores permissions, so drop to 'nobody')."""
    shared = Path(tempfile.mkdtemp(prefix="xraygpt-ro-"))
    try:
        shared.chmod(0o755)
        read_only, home = shared / "ro", shared / "home"
        read_only.mkdir()
        home.mkdir(mode=0o777)
        home.chmod(0o777)
        image = png(shared / "chest.png")
        (shared / "reports.jsonl").write_text('{"id": 1, "text": "Small left effusion."}\n')
        read_only.chmod(0o555)
        prefix: tuple[str, ...] = ()
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: cannot act as a user without write access")
            prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        cases = {
            "evaluate": ["evaluate", "--run", str(shared / "run"), "--data", str(shared), "--out",
                         str(read_only / "eval.json")],
            "explain": ["explain", str(image), "--run", str(shared / "run"), "--phrase", "effusion", "--out",
                        str(read_only / "map.png")],
            "label": ["label", "--in", str(shared / "reports.jsonl"), "--out", str(read_only / "labels.jsonl")],
        }
        for name, argv in cases.items():
            result = run_process(*argv, prefix=prefix, cwd=shared, env={"HOME": str(home), "MPLCONFIGDIR": str(home)})
            line = one_line(result.stderr)
            assert result.returncode == 2 and f"cannot write in {read_only}" in line, (name, result.stderr)
            assert list(read_only.iterdir()) == []
    finally:
        (shared / "ro").chmod(0o755)
        shutil.rmtree(shared)


# --------------------------------------------------------------------------- 3. evaluate skips and reports


def broken_dataset(root: Path) -> Path:
    """3 good records and one of each kind of bad record."""
    good = ["a", "b", "c"]
    annotations = [{"image_id": i, "caption": "The heart is normal. No pleural effusion."} for i in good]
    annotations += [
        {"image_id": "missing", "caption": "No pneumothorax."},  # no image file
        {"image_id": "bad-cell", "caption": "Small left effusion."},  # labels.csv says 7
        {"image_id": 5, "caption": None},  # malformed entry
        {"image_id": "text", "caption": "Normal chest."},  # a text file renamed .png
        {"image_id": "damaged", "caption": "Normal chest."},  # header fine, pixel stream broken
    ]
    labels = "image_id,Cardiomegaly,Pleural Effusion\n" + "".join(f"{i},0,0\n" for i in good) \
        + "bad-cell,7,1\ntext,0,0\ndamaged,0,0\n"
    write_xraygpt_folder(root, annotations, [f"{i}.png" for i in good + ["bad-cell"]], labels_csv=labels)
    (root / "image" / "text.png").write_text("not an image, just text")
    damaged_png(root / "image" / "damaged.png")
    return root


def test_evaluate_counts_skipped_records_and_keeps_going(run_dir, tmp_path, capsys):
    data = broken_dataset(tmp_path / "data")
    before = snapshot(data)
    out = tmp_path / "eval.json"
    code, _, err = run_cli(["evaluate", "--run", str(run_dir), "--data", str(data), "--out", str(out),
                            "--max-new-tokens", "4"], capsys)
    assert code == 0, err
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 3
    assert metrics["skipped"] == {"missing image": 1, "malformed labels": 1, "malformed entry": 1,
                                  "not an image": 1, "truncated or corrupt image": 1}
    assert {u["image_id"] for u in metrics["unreadable"]} == {"text", "damaged"}
    assert "skipped 5 of 8 records" in err and "not an image 1" in err and "Traceback" not in err
    assert snapshot(data) == before


def test_evaluate_fails_only_when_nothing_usable_is_left(run_dir, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "image").mkdir(parents=True)
    write_xraygpt_folder(data, [{"image_id": "x", "caption": "Normal."}, {"image_id": "y", "caption": "Normal."}], [])
    (data / "image" / "y.png").write_text("text")
    code, _, err = run_cli(["evaluate", "--run", str(run_dir), "--data", str(data), "--max-new-tokens", "4"], capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and "no usable records" in line and "missing image 1" in line and "not an image 1" in line


# --------------------------------------------------------------------------- 4. data summary opens headers


def test_data_summary_counts_bad_image_files_by_reason(tmp_path, capsys):
    folder = tmp_path / "images"
    png(folder / "good.png")
    write_dicom(folder / "good-dicom.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8))
    (folder / "renamed.png").write_text("a text file renamed .png")
    good = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    write_dicom(folder / "no-pixels.dcm", np.zeros((8, 8), np.uint16), with_pixels=False)
    bomb_png(folder / "bomb.png")
    before = snapshot(folder)
    code, out, _ = run_cli(["data", "summary", str(folder)], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["records"] == 2
    assert summary["skipped"] == {"not an image": 1, "truncated or corrupt image": 1, "DICOM without pixel data": 1,
                                  "too many pixels (possible decompression bomb)": 1}
    named = {u["image_id"]: u["error"] for u in summary["details"]["unreadable"]}
    assert set(named) == {"renamed", "truncated", "no-pixels", "bomb"}
    assert "truncated.png" in named["truncated"] and "bomb.png" in named["bomb"] and "decompression bomb" in named["bomb"]
    assert snapshot(folder) == before


# --------------------------------------------------------------------------- 5. empty reports


def test_an_empty_report_has_no_labels(tmp_path, capsys):
    from xraygpt_lab.data.text.labeler import label_report

    for text in ("", "   \n\t"):
        assert all(value is None for value in label_report(text).values())
        code, out, err = run_cli(["label", text], capsys)
        assert code == 2 and out == "" and "TEXT is empty" in one_line(err)
    reports = tmp_path / "reports.jsonl"
    reports.write_text('{"id": 1, "text": ""}\n{"id": 2, "text": "Normal chest."}\n')
    code, out, _ = run_cli(["label", "--in", str(reports)], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and all(v is None for v in rows[0]["labels"].values())
    assert rows[1]["labels"]["No Finding"] == 1


# --------------------------------------------------------------------------- 6. prompts vs the context


def test_over_long_phrase_and_answer_budget_state_the_limit(run_dir, tmp_path, capsys):
    image = png(tmp_path / "chest.png")
    out = tmp_path / "map.png"
    code, _, err = run_cli(["explain", str(image), "--run", str(run_dir), "--phrase", "a" * 10_000,
                            "--answer", "a" * 10_000, "--out", str(out)], capsys)
    line = one_line(err)
    assert code == 2 and "at most 160 answer tokens" in line and "context 256 tokens" in line
    assert not out.exists()
    code, _, err = run_cli(["describe", "--run", str(run_dir), str(image), "--max-new-tokens", "100000"], capsys)
    line = one_line(err)
    assert code == 2 and "100000 new tokens do not fit" in line and "context holds 256" in line
    assert "question is too long" not in line
    code, _, err = run_cli(["describe", "--run", str(run_dir), str(image), "--instruction", "word " * 400], capsys)
    assert code == 2 and "the prompt is too long" in one_line(err) and "context holds 256" in err


def test_terminal_chat_answers_an_over_long_line_with_the_reason_and_keeps_going(run_dir, tmp_path, capsys,
                                                                                monkeypatch):
    image = png(tmp_path / "chest.png")
    monkeypatch.setattr(sys, "stdin", io.StringIO("word " * 400 + "\nIs there an effusion?\n"))
    code, out, _ = run_cli(["chat", "--run", str(run_dir), "--image", str(image), "--max-new-tokens", "4"], capsys)
    assert code == 0
    first, rest = out.split("\n", 1)
    assert "too long" in first and "context holds 256" in first
    assert rest.count("Doctor:") == 1  # the next question was answered
    monkeypatch.setattr(sys, "stdin", io.StringIO("Is there an effusion?\n"))
    code, out, _ = run_cli(["chat", "--run", str(run_dir), "--image", str(image), "--max-new-tokens", "100000"],
                           capsys)
    notice, answer = out.split("\n", 1)
    assert code == 0 and "--max-new-tokens 100000 is more than the model's context allows" in notice
    assert "holds 256 tokens" in notice and "too long" not in out and answer.count("Doctor:") == 1


# --------------------------------------------------------------------------- 7. compressed DICOMs


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in the installed pydicom test data")
    return Path(path)


def test_compressed_dicoms_from_pydicom_test_data_decode():
    """Real files: JPEG-LS and RLE (lossless, same pixels as the uncompressed MR_small.dcm),
    12-bit JPEG Extended, and JPEG Lossless process 14 (an RGB secondary capture, equal to the
    RLE copy of the same picture)."""
    from xraygpt_lab.data.readers.images import load_image

    reference = load_image(_testdata("MR_small.dcm"))
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"):
        np.testing.assert_array_equal(load_image(_testdata(name)), reference, err_msg=name)
    extended = load_image(_testdata("JPGExtended.dcm"))  # 12-bit JPEG Extended (process 4)
    assert extended.shape == (1024, 256) and extended.std() > 0.01
    lossless = load_image(_testdata("SC_rgb_jpeg_gdcm.dcm"))  # JPEG Lossless, process 14, SV1
    np.testing.assert_allclose(lossless, load_image(_testdata("SC_rgb_rle.dcm")), atol=1e-6)
    assert lossless.shape == (100, 100) and lossless.std() > 0.05


def test_a_missing_decoder_is_named_apart_from_a_damaged_file(tmp_path, monkeypatch):
    import pydicom

    from xraygpt_lab.data.readers import dicom
    from xraygpt_lab.data.readers.images import load_image

    # a transfer syntax pydicom has no decoder for (JPEG lossless process 15) on a real file's header
    ds = pydicom.dcmread(_testdata("MR_small_jpeg_ls_lossless.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID("1.2.840.10008.1.2.4.58")
    unsupported = tmp_path / "process15.dcm"
    ds.save_as(unsupported)
    with pytest.raises(ImageLoadError, match=r"no decoder for transfer syntax JPEG Lossless.*\(Process 15\).*"
                                             "install GDCM") as info:
        load_image(unsupported)
    assert info.value.reason == dicom.NO_DECODER

    class NoPlugins:  # as pydicom reports JPEG-LS when pylibjpeg-libjpeg is not installed
        available_plugins = ()

    monkeypatch.setattr("pydicom.pixels.get_decoder", lambda syntax: NoPlugins())
    with pytest.raises(ImageLoadError, match="no decoder for transfer syntax JPEG-LS Lossless.*install pylibjpeg "
                                             "and pylibjpeg-libjpeg"):
        load_image(_testdata("MR_small_jpeg_ls_lossless.dcm"))
    monkeypatch.undo()
    with pytest.raises(ImageLoadError, match="truncated or corrupt DICOM pixel data") as info:
        load_image(_testdata("JPEG-lossy.dcm"))  # pydicom's known-broken JPEG stream
    assert info.value.reason == dicom.CORRUPT


def _with_element(name: str, tmp_path: Path, keyword: str, vr: str, value) -> Path:
    """A copy of pydicom's test file ``name`` whose ``keyword`` holds ``value`` as written (valid or not)."""
    import pydicom
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = pydicom.dcmread(_testdata(name))
    tag = tag_for_keyword(keyword)
    raw = value.encode() + b" " * (len(value) % 2)  # written as bytes: pydicom refuses to build invalid values
    ds[tag] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)
    path = tmp_path / f"{keyword}.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values this test writes
        ds.save_as(path, enforce_file_format=False)
    return path


def test_damaged_dicom_headers_name_the_field_and_an_unusable_window_shows_the_full_range(tmp_path):
    import pydicom

    from xraygpt_lab.data.readers import dicom
    from xraygpt_lab.data.readers.images import load_image

    for keyword, vr, value in (("NumberOfFrames", "IS", "1A"), ("Columns", "IS", "abc"),
                               ("RescaleSlope", "DS", "1\\2"), ("RescaleIntercept", "DS", "nan")):
        with pytest.raises(ImageLoadError, match=keyword) as info:
            load_image(_with_element("CT_small.dcm", tmp_path, keyword, vr, value))
        assert info.value.reason == dicom.CORRUPT and "\n" not in str(info.value)
    # an empty rescale is the identity; a window of width 0 or an empty one is ignored (full range)
    plain = load_image(_testdata("CT_small.dcm"))
    np.testing.assert_array_equal(load_image(_with_element("CT_small.dcm", tmp_path, "RescaleSlope", "DS", "")), plain)
    ds = pydicom.dcmread(_testdata("MR_small.dcm"))
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(tmp_path / "no_window.dcm")
    full_range = load_image(tmp_path / "no_window.dcm")
    assert not np.array_equal(full_range, load_image(_testdata("MR_small.dcm")))  # the window does matter
    for value in ("0", "-5.5", ""):
        np.testing.assert_array_equal(load_image(_with_element("MR_small.dcm", tmp_path, "WindowWidth", "DS", value)),
                                      full_range, err_msg=value)
    # a file meta naming a UID that is not a transfer syntax
    data = _testdata("CT_small.dcm").read_bytes()
    explicit_le = b"1.2.840.10008.1.2.1\x00"
    assert data.count(explicit_le) == 1  # pydicom writes no such UID; patch the bytes (same length)
    (tmp_path / "not_a_syntax.dcm").write_bytes(data.replace(explicit_le, b"1.2.840.10008.5.1.4\x00"))
    with pytest.raises(ImageLoadError, match="unknown transfer syntax"):
        load_image(tmp_path / "not_a_syntax.dcm")


def test_damaged_rle_data_is_a_corrupt_file_not_a_decoder_panic(tmp_path, capfd):
    """pylibjpeg-rle aborts with a Rust panic (pyo3's PanicException, not an ``Exception``) on a
    run that overflows its segment; the reader decodes RLE with pydicom's decoder instead, which
    decodes what it can (with a warning) or raises."""
    import pydicom
    from pydicom.encaps import encapsulate, get_frame

    from xraygpt_lab.data.readers import dicom
    from xraygpt_lab.data.readers.images import load_image

    ds = pydicom.dcmread(_testdata("MR_small_RLE.dcm"))
    frame = bytearray(get_frame(ds.PixelData, 0, number_of_frames=1))
    frame[64] = 0x81  # the first segment opens with "repeat the next byte 128 times": it overflows
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(tmp_path / "overflow.dcm")
    try:
        image = load_image(tmp_path / "overflow.dcm")
        assert image.shape == (64, 64) and np.isfinite(image).all()
    except ImageLoadError as error:
        assert error.reason == dicom.CORRUPT and "truncated or corrupt DICOM pixel data" in str(error)
    assert "panicked" not in capfd.readouterr().err
    # the same damage in a file that never reaches the decoder: the segment table points past the frame
    frame[4:8] = (10**6).to_bytes(4, "little")
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(tmp_path / "offset.dcm")
    with pytest.raises(ImageLoadError, match="truncated or corrupt DICOM pixel data") as info:
        load_image(tmp_path / "offset.dcm")
    assert info.value.reason == dicom.CORRUPT


# --------------------------------------------------------------------------- 8. ids that leave the folder


@pytest.mark.parametrize("relative", [False, True], ids=["absolute root", "relative root"])
def test_reader_ids_and_links_that_leave_the_dataset_are_skipped_not_opened(tmp_path, monkeypatch, relative):
    from xraygpt_lab.data.readers import open_dataset, read_mimic_cxr, read_openi
    from xraygpt_lab.data.readers.common import OUTSIDE
    from xraygpt_lab.data.readers.folder import read_image_folder
    from fixtures_data import openi_xml

    secret = png(tmp_path / "secret.jpg")
    opened: list[str] = []
    real_open = Path.open

    def watch(self, *args, **kwargs):
        opened.append(str(self))
        return real_open(self, *args, **kwargs)

    # MIMIC: dicom_id with ../, an absolute dicom_id, and a link out
    mimic = tmp_path / "mimic"
    study = mimic / "files" / "p10" / "p10000032" / "s50414267"
    png(study / "good.jpg")
    (study / "link.jpg").symlink_to(secret)
    escape = "../" * 5 + "secret"
    (mimic / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,subject_id,study_id,ViewPosition\n"
        f"good,10000032,50414267,PA\n{escape},10000032,50414267,PA\n"
        f"{tmp_path / 'secret'},10000032,50414267,PA\nlink,10000032,50414267,PA\n")
    # OpenI: a parentImage id with ../
    openi = tmp_path / "openi"
    (openi / "ecgen-radiology").mkdir(parents=True)
    png(openi / "NLMCXR_png" / "CXR1_IM-0001-1001.png")
    (openi / "ecgen-radiology" / "1.xml").write_text(
        openi_xml(1, "The lungs are clear.", "Normal.", ["CXR1_IM-0001-1001", "../../secret"]))
    (tmp_path / "secret.png").write_bytes(secret.read_bytes())
    # XrayGPT layout: an id with ../ and a link in image/
    xray = write_xraygpt_folder(tmp_path / "xraygpt", [{"image_id": "ok", "caption": "Normal."},
                                                        {"image_id": "../secret", "caption": "Normal."},
                                                        {"image_id": "link", "caption": "Normal."}], ["ok.png"])
    (xray / "image" / "link.png").symlink_to(tmp_path / "secret.png")
    # a plain folder with a link out
    folder = tmp_path / "folder"
    png(folder / "a.png")
    (folder / "b.png").symlink_to(tmp_path / "secret.png")

    if relative:  # a dataset given as a relative path (its ids then resolve from the working folder)
        monkeypatch.chdir(tmp_path)
        mimic, openi, xray, folder = (Path(p.name) for p in (mimic, openi, xray, folder))
    monkeypatch.setattr(Path, "open", watch)
    results = {"mimic": read_mimic_cxr(mimic), "openi": read_openi(openi), "xraygpt": open_dataset(xray),
               "folder": read_image_folder(folder)}
    monkeypatch.undo()
    expected = {"mimic": 3, "openi": 1, "xraygpt": 2, "folder": 1}
    for name, dataset in results.items():
        assert len(dataset.records) == 1, (name, dataset.records)
        assert dataset.skipped.get(OUTSIDE) == expected[name], (name, dataset.skipped)
    assert not [p for p in opened if "secret" in p]


# --------------------------------------------------------------------------- 9. the workshop page


def test_workshop_panel_opens_only_the_offered_folder(tokenizer, tmp_path):  # noqa: F811
    from xraygpt_lab.widgets import ChatPanel

    data = tmp_path / "offered"
    write_xraygpt_folder(data, [{"image_id": "a", "caption": "Normal."}], ["a.png"])
    png(tmp_path / "private.png", seed=3)
    (data / "image" / "escape.png").symlink_to(tmp_path / "private.png")
    panel = ChatPanel(small_model(tokenizer), dataset=data, data_root=data)
    assert panel.browser.folder.value == "."  # the server's own path is not shown
    for path in ("/etc/hostname", str(tmp_path / "private.png"), "../private.png", "image/escape.png"):
        assert panel.set_image(path) is False, path
        message = panel.entries[-1].text
        assert "only the images offered on this page" in message and str(data) not in message, message
        assert panel.session.features is None  # nothing was loaded
    for folder in ("/usr", "..", str(tmp_path)):
        assert panel.browser.open_folder(folder) == 0
        assert "only the images offered" in panel.browser.status.value and str(data) not in panel.browser.status.value
    assert panel.browser.open_folder("") == 1  # the offered folder itself
    assert panel.set_image("image/a.png") is True
    assert panel.set_image(data / "image" / "a.png") is True


def fake_venv(tmp_path: Path) -> Path:
    """A venv whose ``voila`` prints its arguments instead of serving."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    stub = venv / "bin" / "voila"
    stub.write_text('#!/bin/sh\nprintf "VOILA %s\\n" "$*"\n')
    stub.chmod(0o755)
    return venv


def test_serve_chat_requires_a_token_beyond_localhost(tmp_path, tokenizer):  # noqa: F811
    run = write_small_run(tmp_path / "run", tokenizer)
    data = write_xraygpt_folder(tmp_path / "data", [{"image_id": "a", "caption": "Normal."}], ["a.png"])
    env = {**os.environ, "VENV": str(fake_venv(tmp_path)), "XRAYGPT_CHAT_RUN": str(run),
           "XRAYGPT_CHAT_DATASET": str(data), "PYTHONPATH": str(ROOT)}
    env.pop("XRAYGPT_CHAT_TOKEN", None)

    def serve(**extra: str) -> str:
        result = subprocess.run(["bash", str(ROOT / "scripts" / "serve_chat.sh")], capture_output=True, text=True,
                                env={**env, **extra}, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    local = serve(IP="127.0.0.1")
    assert "--token" not in local.split("VOILA", 1)[1]
    room = serve(IP="0.0.0.0")
    voila_args = room.split("VOILA", 1)[1]
    token = voila_args.split("--token=", 1)[1].split()[0]
    assert len(token) >= 12 and f"?token={token}" in room
    chosen = serve(IP="0.0.0.0", XRAYGPT_CHAT_TOKEN="workshop-2024")
    assert "--token=workshop-2024" in chosen
    short = subprocess.run(["bash", str(ROOT / "scripts" / "serve_chat.sh")], capture_output=True, text=True,
                           env={**env, "IP": "0.0.0.0", "XRAYGPT_CHAT_TOKEN": "abc"}, timeout=120)
    assert short.returncode == 2 and "at least 8 characters" in short.stderr


def test_instructors_guide_states_the_token_and_the_memory_per_participant():
    guide = (ROOT / "tutorials" / "instructors_guide.md").read_text()
    assert "requires a token" in guide and "XRAYGPT_CHAT_TOKEN" in guide
    assert "MiB per participant" in guide and "benchmarks/chat_memory.py" in guide


# --------------------------------------------------------------------------- 10. no raw traceback


def test_unexpected_errors_are_one_line_with_a_hint_and_debug_shows_the_traceback(capsys, monkeypatch):
    from xraygpt_lab.cli import label

    def boom(args):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(label, "run", boom)
    code, _, err = run_cli(["label", "x"], capsys)
    line = one_line(err)
    assert code == 1 and "something inside broke" in line and "--debug" in line and "XRAYGPT_DEBUG=1" in line
    code, _, err = run_cli(["--debug", "label", "x"], capsys)
    assert code == 1 and "Traceback" in err and "RuntimeError" in err
    monkeypatch.setenv("XRAYGPT_DEBUG", "1")
    code, _, err = run_cli(["label", "x"], capsys)
    assert code == 1 and "Traceback" in err


def test_label_input_that_is_a_folder_or_not_utf8_names_the_problem(tmp_path, capsys):
    code, _, err = run_cli(["label", "--in", str(tmp_path)], capsys)
    assert code == 2 and "is a folder; --in takes a JSONL file" in one_line(err)
    latin1 = tmp_path / "reports.jsonl"
    latin1.write_bytes(b'{"id": 1, "text": "Effusion \xe9panchement."}\n')
    code, _, err = run_cli(["label", "--in", str(latin1)], capsys)
    assert code == 2 and "reports.jsonl: not UTF-8 text" in one_line(err)


@pytest.mark.parametrize("args", [
    ["describe", "--run", "/no/such/run", "/no/such/image.png"],
    ["chat", "--image", "/etc/hostname", "--run", "/no/such/run"],
    ["evaluate", "--data", "/no/such/folder"],
    ["explain", "/etc/hostname", "--run", "/no/such/run", "--phrase", "x", "--out", "/proc/map.png"],
    ["label", "--in", "/etc"],
    ["data", "summary", "/no/such/folder"],
    ["synth", "--n", "1", "--out", "/proc/version/x"],
    ["walkthrough", "--out", "/proc/version/run", "--set", "llm_steps=-1"],
])
def test_no_raw_traceback_for_typed_input(args):
    result = run_process(*args)
    assert result.returncode == 2, result.stderr
    one_line(result.stderr)
