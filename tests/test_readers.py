"""Dataset readers: XrayGPT layout (mimic/openi/synthetic), MIMIC-CXR-JPG, OpenI, folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xraygpt_lab.data.text.openi_reports import agreement_table, mesh_to_chexpert, read_openi_reports
from xraygpt_lab.data.readers.xraygpt import openi_id_index
from xraygpt_lab.data.readers import detect_layout, open_dataset
from xraygpt_lab.errors import XrayGPTLabError

from fixtures_data import (
    write_mimic_tree,
    write_openi_tgz,
    write_png,
    write_png_as_jpg,
    write_xraygpt_folder,
)

CAPTION = "The heart is normal. The lungs are clear."


def test_xraygpt_layout_skips_and_counts_bad_rows(tmp_path):
    annotations = [
        {"image_id": "a", "caption": CAPTION},
        {"image_id": "b", "caption": "   "},           # empty report
        {"image_id": "a", "caption": CAPTION},           # duplicate id
        {"image_id": "c", "caption": CAPTION},           # no image on disk
        {"caption": CAPTION},                            # malformed: no id
        "not an object",                                 # malformed
        {"image_id": "d", "caption": ["not", "text"]},   # malformed caption
        {"image_id": "e", "caption": CAPTION},
    ]
    root = write_xraygpt_folder(tmp_path, annotations, ["a.png", "b.png", "d.png", "e.jpg"])
    dataset = open_dataset(root)
    assert dataset.layout == "xraygpt" and dataset.details["flavour"] == "mimic"
    assert [r.image_id for r in dataset.records] == ["a", "e"]
    assert dataset.skipped == {"empty report": 1, "duplicate id": 1, "missing image": 1,
                               "malformed entry": 3}
    assert dataset.records[0].summary == CAPTION and dataset.records[1].image_path.suffix == ".jpg"


def test_xraygpt_labels_csv_attached(tmp_path):
    labels = "image_id,Cardiomegaly,Pleural Effusion,Cardiomegaly side\na,1,0,left\nb,,1.0,\nc,2,0,\n"
    root = write_xraygpt_folder(tmp_path, [{"image_id": i, "caption": CAPTION} for i in "abc"],
                                ["a.png", "b.png", "c.png"], labels_csv=labels)
    dataset = open_dataset(root)
    by_id = {r.image_id: r for r in dataset.records}
    assert by_id["a"].labels == {"Cardiomegaly": 1, "Pleural Effusion": 0}
    assert by_id["b"].labels == {"Cardiomegaly": None, "Pleural Effusion": 1}
    assert dataset.skipped == {"malformed labels": 1}  # "2" is not a CheXpert value


def test_xraygpt_openi_ids_are_mapped_to_png_names(tmp_path):
    pngs = ["CXR1384_IM-0231-2001.png", "CXR1384_IM-0231-1001.png", "CXR2_IM-0652-1001.png"]
    annotations = [{"image_id": "1384_1", "caption": CAPTION}, {"image_id": "1384_2", "caption": CAPTION},
                   {"image_id": "2_1", "caption": CAPTION}, {"image_id": "2_2", "caption": CAPTION}]
    dataset = open_dataset(write_xraygpt_folder(tmp_path, annotations, pngs))
    assert dataset.details["flavour"] == "openi"
    paths = {r.image_id: r.image_path.name for r in dataset.records}
    assert paths == {"1384_1": "CXR1384_IM-0231-1001.png", "1384_2": "CXR1384_IM-0231-2001.png",
                     "2_1": "CXR2_IM-0652-1001.png"}
    assert dataset.skipped == {"missing image": 1}


def test_openi_index_uses_natural_order():
    names = [f"CXR7_IM-0001-{k}001.png" for k in (10, 2, 1)]
    assert openi_id_index(names) == {"7_1": names[2], "7_2": names[1], "7_3": names[0]}


def test_xraygpt_invalid_json_is_a_clear_error(tmp_path):
    (tmp_path / "filter_cap.json").write_text("{not json")
    with pytest.raises(XrayGPTLabError, match="not valid JSON"):
        open_dataset(tmp_path)
    (tmp_path / "filter_cap.json").write_text(json.dumps([1, 2]))
    with pytest.raises(XrayGPTLabError, match="annotations"):
        open_dataset(tmp_path)


def test_synthetic_export_reads_back(tmp_path):
    export = pytest.importorskip("xraygpt_lab.data.synthetic.export")
    export.export_dataset(tmp_path / "syn", n=4, size=48, seed=1, workers=1)
    dataset = open_dataset(tmp_path / "syn")
    assert dataset.layout == "xraygpt" and len(dataset) == 4 and dataset.skipped == {}
    record = dataset.records[0]
    assert record.labels is not None and "Cardiomegaly" in record.labels
    assert record.report and "FINDINGS" in record.report and record.image_path.is_file()


def test_mimic_tree(tmp_path):
    dataset = open_dataset(write_mimic_tree(tmp_path))
    assert dataset.layout == "mimic-cxr-jpg"
    assert [r.image_id for r in dataset.records] == ["d1", "d2"]
    # d3: study without report; d4: listed but not on disk; last row: no ids
    assert dataset.skipped == {"missing report": 1, "missing image": 1, "malformed entry": 1}
    d1, d2 = dataset.records
    assert d1.split == "train" and d2.split == "test"
    assert d1.labels == {"Cardiomegaly": 0, "Pleural Effusion": 1, "Atelectasis": None, "No Finding": None}
    assert d1.meta["view"] == "PA" and d2.meta["view"] == "LATERAL"
    assert d1.summary is not None and "Compared" not in d1.summary and "views" not in d1.summary
    assert d1.summary.endswith("Small left pleural effusion.")


def test_mimic_damaged_tables_are_one_line_errors_and_bad_label_rows_are_counted(tmp_path):
    import gzip

    root = write_mimic_tree(tmp_path / "mimic")
    metadata = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    good = metadata.read_bytes()
    for name, damaged, reason in (("truncated", good[: len(good) // 2], "not a readable CSV table"),
                                  ("not gzip", b"\xff\xfe garbage", "not a readable CSV table"),
                                  ("no id columns", gzip.compress(b"a,b\n1,2\n"), "dicom_id, subject_id, study_id")):
        metadata.write_bytes(damaged)
        with pytest.raises(XrayGPTLabError, match=reason) as info:
            open_dataset(root)
        assert str(metadata) in str(info.value) and "\n" not in str(info.value), name
    metadata.write_bytes(good)
    chexpert = root / "mimic-cxr-2.0.0-chexpert.csv.gz"
    rows = gzip.decompress(chexpert.read_bytes()).decode().replace(",0.0,1.0,", ",0.0,2.0,")  # 2: not a label
    chexpert.write_bytes(gzip.compress(rows.encode()))
    dataset = open_dataset(root)
    # both images of study 50414267 are skipped for its bad row; d3 and d4 as in test_mimic_tree
    assert [r.image_id for r in dataset.records] == []
    assert dataset.skipped == {"malformed labels": 2, "missing report": 1, "missing image": 1, "malformed entry": 1}


def test_damaged_openi_archive_and_xraygpt_tables_are_one_line_errors(tmp_path):
    archive = write_openi_tgz(tmp_path / "openi" / "NLMCXR_reports.tgz")
    archive.write_bytes(archive.read_bytes()[:-40])
    with pytest.raises(XrayGPTLabError, match="not a readable .tgz archive") as info:
        open_dataset(archive.parent)
    assert "\n" not in str(info.value)
    archive.write_bytes(b"\x1f\x8b" + bytes(200))  # a gzip header and nothing valid behind it
    with pytest.raises(XrayGPTLabError, match=r"not a readable .tgz archive \(gzip: ") as info:
        open_dataset(archive.parent)
    assert "\n" not in str(info.value)
    folder = write_xraygpt_folder(tmp_path / "xg", [{"image_id": "a.png", "caption": CAPTION}], ["a.png"],
                                  labels_csv="image_id,Edema\na.png,1\n")
    (folder / "labels.csv").write_bytes(b"image_id,Edema\n\xffa.png,1\n")  # Latin-1, not UTF-8
    with pytest.raises(XrayGPTLabError, match="labels.csv: not a readable UTF-8 CSV table"):
        open_dataset(folder)
    (folder / "labels.csv").unlink()
    (folder / "reports.jsonl").write_bytes(b'{"image_id": "a.png", "report": "\xe9"}\n')
    with pytest.raises(XrayGPTLabError, match="reports.jsonl: not UTF-8 text"):
        open_dataset(folder)


def test_mimic_view_filter(tmp_path):
    from xraygpt_lab.data.readers import read_mimic_cxr

    dataset = read_mimic_cxr(write_mimic_tree(tmp_path), views=("PA",))
    assert [r.image_id for r in dataset.records] == ["d1"]


def test_openi_reports_with_pngs(tmp_path):
    write_openi_tgz(tmp_path / "NLMCXR_reports.tgz")
    for image_id in ["CXR1_1_IM-0001-3001", "CXR2_IM-0652-1001"]:
        write_png(tmp_path / "NLMCXR_png" / f"{image_id}.png", np.zeros((4, 4), np.uint8))
    dataset = open_dataset(tmp_path)
    assert dataset.layout == "openi"
    assert [r.image_id for r in dataset.records] == ["CXR1_1_IM-0001-3001", "CXR2_IM-0652-1001"]
    assert dataset.skipped == {"missing image": 1, "empty report": 1}
    second = dataset.records[1]
    assert second.meta["mesh_major"] == ["Cardiomegaly/mild", "Pleural Effusion/right/small"]
    assert "FINDINGS:" in second.report and second.summary.startswith("The heart is enlarged.")


def test_openi_reports_only_and_malformed_xml(tmp_path):
    tgz = write_openi_tgz(tmp_path / "r.tgz", extra={"ecgen-radiology/9.xml": b"<eCitation><broken"})
    reports, skipped = read_openi_reports(tgz)
    assert [r.report_id for r in reports] == ["1", "2", "3"] and skipped == {"malformed XML": 1}
    dataset = open_dataset(tgz)
    assert all(r.image_path is None for r in dataset.records) and len(dataset) == 3


def test_mesh_mapping_and_agreement(tmp_path):
    assert mesh_to_chexpert(["Cardiomegaly/mild"])["Cardiomegaly"] == 1
    assert mesh_to_chexpert(["Opacity/lung/base"])["Lung Opacity"] == 1
    assert mesh_to_chexpert(["Opacity/ribs"])["Lung Opacity"] == 0
    assert mesh_to_chexpert(["normal"])["No Finding"] == 1
    assert mesh_to_chexpert(["Catheters, Indwelling"])["No Finding"] == 1  # CheXpert's rule
    reports, _ = read_openi_reports(write_openi_tgz(tmp_path / "r.tgz"))
    from xraygpt_lab.data.text.labeler import label_report

    table = {row["observation"]: row for row in
             agreement_table(reports, [label_report(r.text) for r in reports])}
    assert table["Cardiomegaly"]["tp"] == 1 and table["Cardiomegaly"]["f1"] == 1.0
    assert table["Pleural Effusion"]["f1"] == 1.0


def test_plain_folder(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "sub" / "b.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "sub" / "b.txt").write_text("FINDINGS: The heart is normal in size and the lungs "
                                           "are clear today.\nIMPRESSION: No acute disease.")
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8")        # duplicate id "a"
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "notes.md").write_text("ignored")
    dataset = open_dataset(tmp_path)
    assert dataset.layout == "folder"
    assert [r.image_id for r in dataset.records] == ["a", "sub/b"]
    assert dataset.skipped == {"duplicate id": 1, "empty file": 1}
    assert dataset.records[1].summary.endswith("No acute disease.")


def test_detect_layout_errors(tmp_path):
    with pytest.raises(XrayGPTLabError, match="no such"):
        detect_layout(tmp_path / "missing")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(XrayGPTLabError, match="no dataset found"):
        detect_layout(tmp_path)


def test_xraygpt_layout_files_with_a_byte_order_mark_and_bad_report_lines(tmp_path):
    """Files saved by spreadsheet programs start with a UTF-8 byte-order mark: they read as without
    one; a reports.jsonl line that gives no report is counted, not dropped unseen."""
    from xraygpt_lab.data.readers.xraygpt import UNREADABLE_REPORT_LINE, read_xraygpt

    root = write_xraygpt_folder(tmp_path / "x", [{"image_id": "a", "caption": "Normal chest."},
                                                 {"image_id": "b", "caption": "Small left effusion."}],
                                ["a.png", "b.png"])
    bom = "\ufeff"
    (root / "filter_cap.json").write_text(bom + (root / "filter_cap.json").read_text(), encoding="utf-8")
    (root / "labels.csv").write_text(bom + "image_id,Pleural Effusion\na,0\nb,1\n", encoding="utf-8")
    (root / "reports.jsonl").write_text(
        bom + json.dumps({"image_id": "a", "report": "FINDINGS: Normal."}) + "\n\n{not json\n"
        + json.dumps({"image_id": "b"}) + "\n" + json.dumps({"image_id": "b", "report": "Effusion."}) + "\n",
        encoding="utf-8")
    dataset = read_xraygpt(root)
    by_id = {r.image_id: r for r in dataset.records}
    assert sorted(by_id) == ["a", "b"]
    assert by_id["b"].labels["Pleural Effusion"] == 1 and by_id["a"].labels["Pleural Effusion"] == 0
    assert by_id["a"].report == "FINDINGS: Normal." and by_id["b"].report == "Effusion."
    assert dataset.skipped == {UNREADABLE_REPORT_LINE: 2}


def test_a_short_label_row_is_counted_as_malformed(tmp_path):
    """A CheXpert row cut short (fewer cells than columns) is not read as blanks: its records are
    counted as malformed labels, in the MIMIC tables and in the XrayGPT layout's labels.csv."""
    import gzip

    from xraygpt_lab.data.readers import read_mimic_cxr

    mimic = write_mimic_tree(tmp_path / "mimic")
    with gzip.open(mimic / "mimic-cxr-2.0.0-chexpert.csv.gz", "wt") as handle:
        handle.write("subject_id,study_id,Atelectasis,Cardiomegaly,Pleural Effusion,No Finding\n"
                     "10000032,50414267,,0.0\n11000011,51000001,-1.0,,,\n")
    dataset = read_mimic_cxr(mimic)
    assert dataset.skipped.get("malformed labels") == 2  # the two images of the short row's study
    root = write_xraygpt_folder(tmp_path / "x", [{"image_id": "a", "caption": CAPTION},
                                                 {"image_id": "b", "caption": CAPTION}], ["a.png", "b.png"],
                                labels_csv="image_id,Cardiomegaly,Edema\na,1,\nb,0\n")
    dataset = open_dataset(root)
    assert [r.image_id for r in dataset.records] == ["a"] and dataset.skipped == {"malformed labels": 1}


def test_a_layout_given_by_name_still_needs_the_folder(tmp_path):
    with pytest.raises(XrayGPTLabError, match="no such file or folder"):
        open_dataset(tmp_path / "typo", layout="folder")
    write_png(tmp_path / "film.png", np.full((8, 8), 9, np.uint8))
    with pytest.raises(XrayGPTLabError, match="is a file; the mimic-cxr-jpg layout is a folder"):
        open_dataset(tmp_path / "film.png", layout="mimic-cxr-jpg")


def test_records_without_a_summary_are_counted_by_reason(tmp_path):
    from xraygpt_lab.data.readers.headers import check_records

    root = write_mimic_tree(tmp_path / "mimic")
    short = root / "files" / "p11" / "p11000011" / "s51000001.txt"
    short.write_text("FINDINGS: Lungs clear.\nIMPRESSION: Normal chest.")  # findings under 10 words
    dataset = open_dataset(root)
    assert dataset.details["with_summary"] == 2
    assert dataset.details["without_summary"] == {"findings under 10 words": 1}
    (root / "files" / "p10" / "p10000032" / "s50414267" / "d1.jpg").write_bytes(b"")  # one film unreadable
    checked = check_records(dataset)
    assert checked.details["with_summary"] == 1 and len(checked.records) == 2


def test_a_folder_of_dicom_files_named_without_a_suffix(tmp_path):
    """Scanners and PACS exports name files IM0001 or by their UID: read as images by their DICM
    header, keeping the whole name as the id; other files without a suffix are not images."""
    from fixtures_data import write_dicom

    root = tmp_path / "export"
    write_dicom(root / "IM0001", np.arange(64, dtype=np.uint16).reshape(8, 8))
    write_dicom(root / "series" / "1.2.840.113619.2.55", np.arange(64, dtype=np.uint16).reshape(8, 8))
    (root / "IM0001.txt").write_text("FINDINGS: The heart is normal in size and the lungs are clear of any "
                                     "focal consolidation.\nIMPRESSION: No acute disease.")
    (root / "NOTES").write_text("not an image")
    assert detect_layout(root) == "folder"
    dataset = open_dataset(root)
    assert [r.image_id for r in dataset.records] == ["IM0001", "series/1.2.840.113619.2.55"]
    assert dataset.records[0].summary.endswith("No acute disease.")
    from xraygpt_lab.data.readers.images import load_image

    assert load_image(dataset.records[1].image_path).shape == (8, 8)


def test_mimic_reports_in_their_own_archive_folder_are_found(tmp_path):
    import shutil

    root = write_mimic_tree(tmp_path / "mimic")
    report = root / "files" / "p10" / "p10000032" / "s50414267.txt"
    moved = root / "mimic-cxr-reports" / "files" / "p10" / "p10000032" / "s50414267.txt"
    moved.parent.mkdir(parents=True)
    shutil.move(report, moved)
    dataset = open_dataset(root)
    assert dataset.details["reports"] and dataset.records and all(r.report for r in dataset.records)


def _mimic_dicom_tree(root: Path) -> Path:
    """MIMIC-CXR's DICOM release: ``<dicom_id>.dcm`` files, whose views only their headers name,
    listed in ``cxr-record-list.csv.gz``; one report per study."""
    import gzip

    import pydicom

    from fixtures_data import MIMIC_REPORT, write_dicom

    films = [("a1", "10000032", "50414267", "PA"), ("a2", "10000032", "50414267", "LL"),
             ("a3", "11000011", "51000001", "AP")]
    for dicom_id, subject, study, view in films:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        path = write_dicom(folder / f"{dicom_id}.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8) * 60)
        ds = pydicom.dcmread(path)
        ds.ViewPosition = view
        ds.save_as(path, enforce_file_format=True)
        (folder.parent / f"s{study}.txt").write_text(MIMIC_REPORT)
    with gzip.open(root / "cxr-record-list.csv.gz", "wt") as handle:
        handle.write("subject_id,study_id,dicom_id,path\n" + "".join(
            f"{s},{t},{d},files/p{s[:2]}/p{s}/s{t}/{d}.dcm\n" for d, s, t, _ in films))
    return root


def test_mimic_dicom_release_is_read_from_its_record_list_or_its_tree(tmp_path):
    from xraygpt_lab.data.readers import read_mimic_cxr
    from xraygpt_lab.data.readers.headers import check_records
    from xraygpt_lab.data.readers.images import load_image

    root = _mimic_dicom_tree(tmp_path / "mimic")
    dataset = open_dataset(root)
    assert dataset.layout == "mimic-cxr-jpg" and dataset.details["image_table"] == "cxr-record-list.csv.gz"
    assert [r.image_id for r in dataset.records] == ["a1", "a2", "a3"]
    assert dataset.details["image_files"] == {".dcm": 3} and not dataset.skipped
    assert check_records(dataset).records == dataset.records  # every header reads
    assert load_image(dataset.records[0].image_path).shape == (8, 8)
    assert dataset.records[0].summary.endswith("Small left pleural effusion.")
    # no table: the views come from the DICOM headers
    (root / "cxr-record-list.csv.gz").unlink()
    frontal = read_mimic_cxr(root, views=("PA", "AP"))
    assert [r.image_id for r in frontal.records] == ["a1", "a3"]
    assert [r.image_id for r in read_mimic_cxr(root, views=("pa",)).records] == ["a1"]  # any case
    # a view filter counts the films whose view nothing names, and unreadable headers
    import pydicom

    ds = pydicom.dcmread(dataset.records[2].image_path)
    del ds.ViewPosition
    ds.save_as(dataset.records[2].image_path, enforce_file_format=True)
    dataset.records[1].image_path.write_bytes(dataset.records[1].image_path.read_bytes()[:200])
    filtered = read_mimic_cxr(root, views=("PA", "AP"))
    assert [r.image_id for r in filtered.records] == ["a1"]
    assert filtered.skipped["no view position"] == 1 and sum(filtered.skipped.values()) == 2, filtered.skipped
    # a JPEG beside a DICOM of the same id is read once, as the JPEG
    write_png_as_jpg(dataset.records[0].image_path.with_suffix(".jpg"))
    both = read_mimic_cxr(root)
    assert [r.image_path.suffix for r in both.records] == [".jpg", ".dcm", ".dcm"]


def test_mimic_record_list_paths_are_followed_inside_the_folder_only(tmp_path):
    import gzip

    root = _mimic_dicom_tree(tmp_path / "mimic")
    study = root / "files" / "p10" / "p10000032" / "s50414267"
    (study / "a2.dcm").rename(study / "renamed.dcm")
    with gzip.open(root / "cxr-record-list.csv.gz", "wt") as handle:
        handle.write("subject_id,study_id,dicom_id,path\n"
                     "10000032,50414267,a1,files/p10/p10000032/s50414267/a1.dcm\n"
                     "10000032,50414267,a2,files/p10/p10000032/s50414267/renamed.dcm\n"
                     f"11000011,51000001,a3,{tmp_path / 'outside.dcm'}\n")
    (tmp_path / "outside.dcm").write_bytes((study / "a1.dcm").read_bytes())
    dataset = open_dataset(root)
    assert [r.image_path.name for r in dataset.records] == ["a1.dcm", "renamed.dcm"]
    assert dataset.skipped == {"path outside the dataset folder": 1}
