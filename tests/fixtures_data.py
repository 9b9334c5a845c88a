"""Small on-disk fixtures for the data tests (written into pytest's ``tmp_path``)."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Save ``array`` (uint8 or uint16) as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                bits_stored: int = 12, slope: float | None = None, intercept: float | None = None,
                window: tuple[float, float] | None = None,
                voi_lut: np.ndarray | None = None, with_pixels: bool = True) -> Path:
    """A minimal CR DICOM file (explicit VR little endian, uint16 pixels)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.add_new(0x00283002, "US", [len(voi_lut), 0, 16])  # LUT Descriptor
        item.add_new(0x00283006, "US", [int(v) for v in voi_lut])  # LUT Data
        ds.VOILUTSequence = Sequence([item])
    if with_pixels:
        ds.PixelData = pixels.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def openi_xml(report_id: int, findings: str, impression: str, images: list[str],
              mesh: list[str] = ("normal",)) -> str:
    """An ``ecgen-radiology`` XML report in OpenI's structure."""
    mesh_xml = "".join(f"<major>{m}</major>" for m in mesh)
    images_xml = "".join(f'<parentImage id="{i}"><caption>Xray</caption></parentImage>'
                         for i in images)
    return (f'<?xml version="1.0" encoding="utf-8"?><eCitation><meta type="rr"/>'
            f'<uId id="CXR{report_id}"/><IUXRId id="{report_id}"/><MedlineCitation><Article>'
            f'<Abstract><AbstractText Label="COMPARISON">None.</AbstractText>'
            f'<AbstractText Label="INDICATION">Cough</AbstractText>'
            f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
            f'<AbstractText Label="IMPRESSION">{impression}</AbstractText></Abstract>'
            f"</Article></MedlineCitation><MeSH>{mesh_xml}</MeSH>{images_xml}</eCitation>")


OPENI_REPORTS = [
    (1, "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
     "Normal chest x-XXXX.", ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"], ["normal"]),
    (2, "The heart is enlarged. There is a small right pleural effusion. No pneumothorax is seen.",
     "Cardiomegaly with small right effusion.", ["CXR2_IM-0652-1001"],
     ["Cardiomegaly/mild", "Pleural Effusion/right/small"]),
    (3, "", "", ["CXR3_IM-1384-1001"], ["No Indexing"]),
]


def write_openi_tgz(path: Path, reports=OPENI_REPORTS, extra: dict[str, bytes] | None = None) -> Path:
    """A tiny ``NLMCXR_reports.tgz`` with ``ecgen-radiology/<n>.xml`` members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    members = {f"ecgen-radiology/{rid}.xml": openi_xml(rid, f, i, imgs, mesh).encode()
               for rid, f, i, imgs, mesh in reports}
    members.update(extra or {})
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


MIMIC_REPORT = ("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
                " INDICATION:  ___F with cough, eval for pneumonia\n\n COMPARISON:  ___\n\n"
                " FINDINGS: \n\n PA and lateral views of the chest were obtained. There is a small\n"
                " left pleural effusion. The heart size is normal. No pneumothorax is seen.\n"
                " Compared to the prior study, the effusion is new.\n\n"
                " IMPRESSION: \n\n Small left pleural effusion.\n")


def write_mimic_tree(root: Path) -> Path:
    """A fake MIMIC-CXR-JPG root: 2 studies, 4 listed images (one missing on disk), CSVs
    (gzip), reports (one study without a report file)."""
    rows = [("d1", "10000032", "50414267", "PA"), ("d2", "10000032", "50414267", "LATERAL"),
            ("d3", "11000011", "51000001", "AP"), ("d4", "10000032", "50414267", "PA")]
    for dicom_id, subject, study, _ in rows[:3]:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        write_png_as_jpg(folder / f"{dicom_id}.jpg")
    report = root / "files" / "p10" / "p10000032" / "s50414267.txt"
    report.write_text(MIMIC_REPORT)
    header = "dicom_id,subject_id,study_id,ViewPosition\n"
    metadata = header + "".join(f"{d},{s},{t},{v}\n" for d, s, t, v in rows) + ",,,PA\n"
    _gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", metadata)
    chexpert = ("subject_id,study_id,Atelectasis,Cardiomegaly,Pleural Effusion,No Finding\n"
                "10000032,50414267,,0.0,1.0,\n11000011,51000001,-1.0,,,\n")
    _gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", chexpert)
    split = ("dicom_id,study_id,subject_id,split\nd1,50414267,10000032,train\n"
             "d2,50414267,10000032,test\nd3,51000001,11000011,validate\n")
    _gz(root / "mimic-cxr-2.0.0-split.csv.gz", split)
    return root


def write_png_as_jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 10), 128, np.uint8)).save(path, format="JPEG")
    return path


def _gz(path: Path, text: str) -> None:
    with gzip.open(path, "wt") as handle:
        handle.write(text)


def write_xraygpt_folder(root: Path, annotations: list, images: list[str],
                         labels_csv: str | None = None) -> Path:
    """``root/image/<name>`` PNGs + ``root/filter_cap.json`` (+ ``labels.csv``)."""
    for name in images:
        write_png(root / "image" / name, np.full((8, 8), 100, np.uint8))
    (root / "filter_cap.json").write_text(json.dumps({"annotations": annotations}))
    if labels_csv is not None:
        (root / "labels.csv").write_text(labels_csv)
    return root
