"""Benchmark: does the out-of-distribution check keep the training world in and flag everything else?

Goal: at least 95 % of held-out synthetic films in distribution, and at least 95 % of every other
kind flagged. ``python benchmarks/ood_rates.py [--run runs/tiny] [--n 300] [--out FILE.json]``
prints one table (rates per kind of image) and ``run()`` returns the numbers.

The images, all offline:

* held-out synthetic films: a seed the run neither trained nor calibrated on, at the model's size,
  the same films through an 8-bit PNG, and films rendered at twice the size;
* real films from pydicom's public test data (``pydicom-data``): the chest CR ``RG1`` in its four
  DICOM encodings, as PNG and JPEG, and cropped, mirrored, brightened, darkened and reduced; the
  extremity CR ``RG3``;
* CT and MR slices, nuclear-medicine and ultrasound frames from the same test data;
* pictures shipped with matplotlib (a photograph, a drawing, a logo, two terrain maps);
* blank, noise, tiny (1×1 to 16×16) and extreme-aspect images.

For each kind the table gives the share flagged, and the share the feature score flags on its
own (without the input checks of size and aspect), so one sees which does the work.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

#: pydicom test files of each kind (skipped when not installed).
DICOM = {
    "real chest CR": ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"],
    "other CR (extremity, c-spine)": ["RG3_UNCR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm",
                                      "6154", "6247", "6278"],
    "CT slices": ["CT_small.dcm", "693_UNCR.dcm", "693_UNCI.dcm", "693_J2KR.dcm", "693_J2KI.dcm",
                  "eCT_Supplemental.dcm", "explicit_VR-UN.dcm", "bad_sequence.dcm", "J2K_pixelrep_mismatch.dcm",
                  "17106", "17136", "17166", "17196", "2062", "2392", "2693", "3023", "3353", "6293", "6924"],
    "MR slices": ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_jp2klossless.dcm",
                  "MR2_UNCR.dcm", "MR2_UNCI.dcm", "MR2_J2KR.dcm", "MR2_J2KI.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm",
                  "examples_overlay.dcm", "emri_small.dcm", "emri_small_RLE.dcm", "15820", "15970", "4467",
                  "4528", "4558", "5011", "5641", "6273", "6605", "6935"],
    "other modalities (NM, US, SEG)": ["JPEG2000.dcm", "JPEG-LL.dcm", "JPGExtended.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm",
                                       "US1_UNCR.dcm", "US1_J2KR.dcm", "examples_rgb_color.dcm", "color-pl.dcm",
                                       "color-px.dcm", "liver_1frame.dcm"],
}
#: matplotlib's sample data: pictures and two terrain arrays.
PICTURES = ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"]
TERRAIN = [("jacksboro_fault_dem.npz", "elevation"), ("topobathy.npz", "topo")]


def _dicom(names: list[str]) -> list[tuple[str, np.ndarray]]:
    """The listed pydicom test files that are installed and readable, as images."""
    from pydicom.data import get_testdata_file

    from xraygpt_lab.data.readers.images import load_image
    from xraygpt_lab.errors import ImageLoadError

    out = []
    for name in names:
        path = get_testdata_file(name, download=False)
        if path is not None:
            try:
                out.append((name, load_image(path)))
            except ImageLoadError:  # a test file meant to be broken, or without a decoder here
                continue
    return out


def _through_file(image: np.ndarray, folder: Path, name: str, suffix: str) -> np.ndarray:
    """``image`` written as an 8-bit PNG / JPEG and read back with ``load_image``."""
    from PIL import Image

    from xraygpt_lab.data.readers.images import load_image

    path = folder / f"{name}{suffix}"
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    return load_image(path)


def real_chest_variants(folder: Path) -> list[tuple[str, np.ndarray]]:
    """The chest CR in its DICOM encodings, as PNG and JPEG, and edited copies."""
    films = _dicom(DICOM["real chest CR"])
    if not films:
        return []
    film = films[0][1]  # [H, W]
    h, w = film.shape
    edits = {"crop 90%": film[h // 20: h - h // 20, w // 20: w - w // 20], "crop 75%": film[h // 8: h - h // 8, w // 8: w - w // 8],
             "mirrored": film[:, ::-1], "gamma 0.7": film ** 0.7, "gamma 1.4": film ** 1.4,
             "reduced to 512 px": film[::4, ::4]}
    out = films + [("RG1 as PNG", _through_file(film, folder, "rg1", ".png")),
                   ("RG1 as JPEG", _through_file(film, folder, "rg1", ".jpg"))]
    return out + [(f"RG1 {k} (PNG)", _through_file(np.ascontiguousarray(v), folder, f"rg1-{i}", ".png"))
                  for i, (k, v) in enumerate(edits.items())]


def pictures(folder: Path) -> list[tuple[str, np.ndarray]]:
    """matplotlib's sample pictures and terrain maps (min-max scaled to grey)."""
    import matplotlib

    from xraygpt_lab.data.readers.images import load_image

    data = Path(matplotlib.get_data_path()) / "sample_data"
    out = [(name, load_image(data / name)) for name in PICTURES if (data / name).is_file()]
    for name, key in TERRAIN:
        if (data / name).is_file():
            values = np.load(data / name)[key].astype(np.float64)
            out.append((name, ((values - values.min()) / (np.ptp(values) or 1)).astype(np.float32)))
    return out


def synthetic(n: int, size: int, seed: int) -> list[np.ndarray]:
    from xraygpt_lab.data.synthetic.world import render_cases

    return [c.image for c in render_cases(n, size, seed, workers=1)]


def generated(film: np.ndarray, rng: np.random.Generator) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Blank, noise, tiny and extreme-aspect images (``film``: one synthetic film, for strips and tiles)."""
    blank = [(f"{v:g} {s}x{s}", np.full((s, s), v, np.float32)) for v in (0.0, 0.5, 1.0) for s in (128, 512)]
    noise = []
    for s in (128, 512):
        noise += [(f"uniform {s}", rng.random((s, s))), (f"gaussian {s}", np.clip(rng.normal(0.5, 0.15, (s, s)), 0, 1)),
                  (f"binary {s}", (rng.random((s, s)) > 0.5) * 1.0),
                  (f"blurred {s}", np.clip(0.5 + 2 * (rng.random((s // 8, s // 8)) - 0.5).repeat(8, 0).repeat(8, 1) * 0.3, 0, 1))]
    tiny = [("1x1 grey", np.full((1, 1), 0.5)), ("1x1 white", np.ones((1, 1))), ("2x2 of a film", film[60:62, 60:62]),
            ("8x8 film", film[::16, ::16]), ("16x16 film", film[::8, ::8]), ("16x16 noise", rng.random((16, 16)))]
    aspect = [("film strip 128x8", film[:, 60:68]), ("film strip 8x128", film[60:68, :]),
              ("8 films side by side", np.tile(film, (1, 8))), ("4 films stacked", np.tile(film, (4, 1))),
              ("noise 2000x60", rng.random((2000, 60))), ("grey 50x1000", np.full((50, 1000), 0.5))]
    kinds = {"blank": blank, "noise": noise, "1x1 and tiny": tiny, "extreme aspect": aspect}
    return {k: [(n, np.ascontiguousarray(a, dtype=np.float32)) for n, a in v] for k, v in kinds.items()}


def _rates(verdicts: list, in_kind: bool) -> dict:
    scores = np.array([v.score for v in verdicts])
    flagged = np.array([not v.in_distribution for v in verdicts])
    by_features = np.array([v.score > v.threshold for v in verdicts])
    return {"n": len(verdicts), "in_distribution": round(float(1 - flagged.mean()), 4),
            "flagged": round(float(flagged.mean()), 4), "flagged_by_features": round(float(by_features.mean()), 4),
            "score_min": round(float(scores.min()), 3), "score_median": round(float(np.median(scores)), 3),
            "goal": "in >= 0.95" if in_kind else "flagged >= 0.95",
            "meets_goal": bool((1 - flagged.mean()) >= 0.95 if in_kind else flagged.mean() >= 0.95)}


def run(run_dir: str | None = None, n: int = 300) -> dict:
    """Rates per kind for the run in ``run_dir`` (default: the tiny run); ``n`` held-out films."""
    import torch

    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.models.ood import calibration_seeds
    from xraygpt_lab.runs import default_run_dir, load_run, ood_detector

    model = load_run(run_dir or default_run_dir(), device="cpu")
    detector = ood_detector(model, progress=True)
    size = int(model.encoder.image_size)
    seed = max([*calibration_seeds(model.run_config), *(model.run_config.get("seeds") or {}).values()]) + 1000
    films = synthetic(n, size, seed)
    with tempfile.TemporaryDirectory(prefix="ood-bench-") as tmp:
        folder = Path(tmp)
        kinds = {f"synthetic held-out ({size} px)": [(str(i), f) for i, f in enumerate(films)],
                 "synthetic held-out, 8-bit PNG": [(str(i), _through_file(f, folder, f"syn{i}", ".png"))
                                                   for i, f in enumerate(films[:100])],
                 f"synthetic held-out ({2 * size} px)": [(str(i), f) for i, f in enumerate(synthetic(min(n, 100), 2 * size, seed + 1))],
                 "real chest CR (DICOM, PNG, JPEG)": real_chest_variants(folder)}
        kinds.update({k: _dicom(v) for k, v in DICOM.items() if k != "real chest CR"})
        kinds["photographs and drawings"] = pictures(folder)
        kinds.update(generated(films[0], np.random.default_rng(0)))
    result = {"benchmark": "ood_rates", "run": str(model.run_dir), "threshold": round(detector.threshold, 4),
              "held_out_seed": seed, "kinds": {}}
    with torch.no_grad():
        for kind, images in kinds.items():
            if not images:
                result["kinds"][kind] = {"n": 0, "skipped": "test data not installed"}
                continue
            pixels = torch.stack([preprocess(image, size) for _, image in images])  # [B, 1, S, S]
            verdicts = detector.check(model.encoder, pixels, [image.shape for _, image in images])
            result["kinds"][kind] = _rates(verdicts, kind.startswith("synthetic"))
    measured = [v for v in result["kinds"].values() if v["n"]]
    result["meets_goal"] = all(v["meets_goal"] for v in measured)
    return result


def table(result: dict) -> str:
    lines = [f"out-of-distribution check of {result['run']} (threshold {result['threshold']}; "
             f"held-out films of seed {result['held_out_seed']})",
             f"{'kind':40s} {'n':>4s} {'in':>6s} {'flagged':>8s} {'by features':>12s} {'min score':>10s}  goal"]
    for kind, r in result["kinds"].items():
        if not r["n"]:
            lines.append(f"{kind:40s} {0:4d}  skipped ({r['skipped']})")
            continue
        lines.append(f"{kind:40s} {r['n']:4d} {r['in_distribution']:6.1%} {r['flagged']:8.1%} "
                     f"{r['flagged_by_features']:12.1%} {r['score_min']:10.2f}  {r['goal']}: "
                     f"{'OK' if r['meets_goal'] else 'MISSED'}")
    lines.append(f"all goals met: {result['meets_goal']}")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="run folder (default: runs/tiny)")
    ap.add_argument("--n", type=int, default=300, help="held-out synthetic films (300)")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    a = ap.parse_args()
    r = run(a.run, a.n)
    print(table(r))
    if a.out is not None:
        from xraygpt_lab.atomic import atomic_write_text

        atomic_write_text(a.out, json.dumps(r, indent=2))
