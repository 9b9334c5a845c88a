"""The out-of-distribution check: its statistics, its calibration file, and what the tools show.

The behaviour tests use the trained tiny run (``ensure_tiny_run``): held-out synthetic films stay
in, blank, noise, a CT slice and a real chest CR are flagged by the feature score itself.
"""
from __future__ import annotations

import json
import math
import sys
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xraygpt_lab.cli import main
from xraygpt_lab.data.readers.images import load_image, preprocess
from xraygpt_lab.data.synthetic.world import render_cases
from xraygpt_lab.errors import CorruptFileError
from xraygpt_lab.models import ood
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.ood import (FILE_NAME, OODDetector, Verdict, calibrate, calibration_seeds, input_problems,
                                    ledoit_wolf, load_or_calibrate, lognormal_percentile)
from xraygpt_lab.widgets.html import render_familiarity


def small_encoder(seed: int = 0) -> VisionEncoder:
    torch.manual_seed(seed)
    return VisionEncoder(EncoderConfig(image_size=32, patch_size=8, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                       window_size=2, projection_dim=16)).eval()


# ---------------------------------------------------------------------- statistics
def test_ledoit_wolf_shrinks_more_when_the_samples_are_few_and_the_truth_is_isotropic():
    rng = np.random.default_rng(0)
    few = torch.from_numpy(rng.normal(size=(20, 40)))  # n < d: the sample covariance is singular
    mean, cov, shrinkage = ledoit_wolf(few)
    assert mean.shape == (40,) and cov.shape == (40, 40) and 0 < shrinkage <= 1
    assert torch.linalg.eigvalsh(cov).min() > 0  # invertible although n < d
    correlated = torch.from_numpy(rng.normal(size=(2000, 1)) @ np.ones((1, 40)) + 0.1 * rng.normal(size=(2000, 40)))
    assert ledoit_wolf(correlated)[2] < 0.05 < shrinkage  # plenty of samples, far from isotropic: little shrinkage


def test_lognormal_percentile_recovers_a_known_quantile_and_refuses_non_positive_scores():
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(np.exp(rng.normal(0.2, 0.3, 4000)))
    assert lognormal_percentile(scores, 99.0) == pytest.approx(math.exp(0.2 + 2.3263 * 0.3), rel=0.03)
    with pytest.raises(ValueError):
        lognormal_percentile(torch.tensor([1.0, 0.0, 2.0]), 99.0)


@pytest.mark.parametrize("shape, flagged", [((1, 1), True), ((16, 16), True), ((300, 20), True), ((60, 2000), True),
                                            ((128, 128), False), ((1955, 1841), False), ((400, 700), False)])
def test_input_checks_flag_only_tiny_and_elongated_images(shape, flagged):
    assert bool(input_problems(shape)) is flagged


def test_verdict_reports_reasons_and_json_fields():
    inside = Verdict(0.5, 1.2)
    assert inside.in_distribution and inside.warning() is None and inside.reasons == []
    outside = Verdict(5.0, 1.2, ("it is only 1\u00d71 px, under 32 px a side",))
    fields = outside.as_json()
    assert fields["in_distribution"] is False and fields["ood_score"] == 5.0 and fields["ood_threshold"] == 1.2
    assert len(fields["ood_reasons"]) == 2 and "1\u00d71" in outside.warning()
    assert not Verdict(0.5, 1.2, ("elongated",)).in_distribution  # the input checks flag whatever the score


def test_calibration_seeds_avoid_the_seeds_a_run_trained_on():
    assert calibration_seeds({"seed": 0, "seeds": {"stage1": 0, "stage2": 1000, "eval": 2000}}) == (3000, 4000)
    fit, threshold = calibration_seeds({"seed": 0, "seeds": {"stage1": 3000, "eval": 14000}})
    assert {fit, threshold}.isdisjoint({3000, 14000}) and fit != threshold


# ---------------------------------------------------------------------- the calibration file
def test_calibration_is_saved_read_back_and_redone_for_other_weights(tmp_path):
    encoder = small_encoder()
    detector = calibrate(encoder, 3000, 4000, n_fit=30, n_threshold=20)
    path = detector.save(tmp_path / FILE_NAME)
    again = OODDetector.load(path)
    assert again.threshold == pytest.approx(detector.threshold) and again.matches(encoder)
    pixels = torch.stack([preprocess(np.full((40, 40), 0.5, np.float32), 32)])  # [1, 1, 32, 32]
    assert torch.allclose(again.scores(encoder, pixels), detector.scores(encoder, pixels))
    assert load_or_calibrate(path, encoder, {"seed": 0})[1] is False  # read, not redone

    other = small_encoder(seed=1)  # another training: the stored calibration no longer fits
    assert not again.matches(other)
    path.write_bytes(b"not safetensors")
    with pytest.raises(CorruptFileError):
        OODDetector.load(path)


def test_a_corrupt_or_stale_calibration_is_redone(tmp_path, monkeypatch):
    monkeypatch.setattr(ood, "calibrate", lambda *a, **k: calibrate(*a, **{**k, "n_fit": 30, "n_threshold": 20}))
    encoder = small_encoder()
    path = tmp_path / FILE_NAME
    path.write_bytes(b"garbage")
    detector, new = load_or_calibrate(path, encoder, {"seed": 0})
    assert new and detector.matches(encoder)
    detector.save(path)
    assert load_or_calibrate(path, small_encoder(seed=1), {"seed": 0})[1] is True


# ---------------------------------------------------------------------- the trained run
@pytest.fixture(scope="module")
def tiny():
    from xraygpt_lab.runs import ensure_tiny_run, load_run, ood_detector

    model = load_run(ensure_tiny_run(progress=False), device="cpu")
    return model, ood_detector(model)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A held-out synthetic film, blank and noise PNGs, and pydicom's CT slice."""
    from pydicom.data import get_testdata_file

    folder = tmp_path_factory.mktemp("ood")
    film = render_cases(1, 128, 91_000, workers=1)[0].image
    arrays = {"film": film, "blank": np.zeros((256, 256)), "noise": np.random.default_rng(0).random((200, 160))}
    out = {}
    for name, array in arrays.items():
        out[name] = folder / f"{name}.png"
        Image.fromarray(np.round(array * 255).astype(np.uint8)).save(out[name])
    out["ct"] = Path(get_testdata_file("CT_small.dcm"))
    return out


def test_held_out_films_are_mostly_in_and_other_images_are_flagged_by_their_features(tiny):
    model, detector = tiny
    films = [c.image for c in render_cases(60, 128, 90_000, workers=1)]  # a seed used by neither training nor calibration
    verdicts = detector.check(model.encoder, torch.stack([preprocess(f, 128) for f in films]), [f.shape for f in films])
    assert sum(v.in_distribution for v in verdicts) >= 54  # >= 90 % (the benchmark measures 99 % on 300)
    others = {"blank": np.zeros((256, 256), np.float32), "white": np.ones((300, 300), np.float32),
              "noise": np.random.default_rng(0).random((200, 160)).astype(np.float32)}
    from pydicom.data import get_testdata_file

    others["ct"] = load_image(get_testdata_file("CT_small.dcm"))
    chest = get_testdata_file("RG1_UNCR.dcm", download=False)  # pydicom-data's real chest CR
    if chest is not None:
        others["real chest CR"] = load_image(chest)
    images = list(others.values())
    verdicts = detector.check(model.encoder, torch.stack([preprocess(i, 128) for i in images]), [i.shape for i in images])
    for name, verdict in zip(others, verdicts):
        assert not verdict.in_distribution and verdict.score > 2 * verdict.threshold, (name, verdict)
        assert not verdict.problems, name  # the feature score did it, not the size checks


def test_the_calibration_lives_in_the_run_folder(tiny):
    model, detector = tiny
    stored = OODDetector.load(Path(model.run_dir) / FILE_NAME)
    assert stored.threshold == pytest.approx(detector.threshold) and stored.matches(model.encoder)
    assert stored.info["fit_seed"] not in {str(s) for s in model.run_config["seeds"].values()}


def test_describe_json_has_the_fields_and_text_mode_warns_on_stderr(tiny, files, capsys):
    model, _ = tiny
    paths = [str(files[k]) for k in ("film", "blank", "noise", "ct")]
    assert main(["describe", "--run", str(model.run_dir), "--json", "--max-new-tokens", "4", *paths]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["image"] for r in rows] == paths
    for row in rows:
        assert {"image", "report", "in_distribution", "ood_score", "ood_threshold", "ood_reasons"} <= set(row)
    assert [r["in_distribution"] for r in rows] == [True, False, False, False]
    assert rows[3]["ood_score"] > rows[3]["ood_threshold"] and rows[3]["ood_reasons"]

    assert main(["describe", "--run", str(model.run_dir), "--max-new-tokens", "4", paths[0], paths[3]]) == 0
    out = capsys.readouterr()
    assert len(out.out.strip().splitlines()) == 2
    warnings = [line for line in out.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and paths[3] in warnings[0] and "not like the chest films" in warnings[0]


def test_chat_warns_before_the_conversation(tiny, files, capsys, monkeypatch):
    model, _ = tiny
    monkeypatch.setattr(sys, "stdin", StringIO("What do you see?\n/quit\n"))
    assert main(["chat", "--run", str(model.run_dir), "--image", str(files["noise"]), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr()
    assert "warning:" in out.err and str(files["noise"]) in out.err and "Doctor:" in out.out
    monkeypatch.setattr(sys, "stdin", StringIO("What do you see?\n"))
    assert main(["chat", "--run", str(model.run_dir), "--image", str(files["film"]), "--max-new-tokens", "4"]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_explain_json_says_whether_the_image_is_in_distribution(tiny, files, tmp_path, capsys):
    model, _ = tiny
    status = main(["explain", str(files["ct"]), "--run", str(model.run_dir), "--phrase", "effusion",
                   "--answer", "There is a small left pleural effusion.", "--method", "gradcam",
                   "--out", str(tmp_path / "map.png")])
    out = capsys.readouterr()
    assert status == 0
    result = json.loads(out.out)
    assert result["in_distribution"] is False and result["ood_score"] > result["ood_threshold"]
    assert "warning:" in out.err


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags, self.attributes, self.text = set(), set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data):
        self.text.append(data)


def test_the_chat_panel_shows_a_warning_for_an_unfamiliar_image(tiny, files):
    from xraygpt_lab.widgets import ChatPanel

    model, _ = tiny
    panel = ChatPanel(model)
    assert panel.set_image(str(files["noise"]))
    assert "xg-ood-flagged" in panel.ood_box.value and not panel.familiarity.in_distribution
    assert any(e.text.startswith("Warning: this image is not like the chest films") for e in panel.entries)
    assert panel.set_image(str(files["film"]))
    assert "xg-ood-ok" in panel.ood_box.value and panel.familiarity.in_distribution
    assert not any(e.text.startswith("Warning") for e in panel.entries)
    panel.new_image()
    assert panel.ood_box.value == "" and panel.familiarity is None


def test_the_panel_escapes_the_warning(tiny, files, monkeypatch):
    from xraygpt_lab.widgets import ChatPanel

    model, _ = tiny
    hostile = '<img src=x onerror=alert(1)> & "quoted"'
    monkeypatch.setattr(ood, "input_problems", lambda shape: [hostile])
    panel = ChatPanel(model)
    assert panel.set_image(str(files["film"]))
    for markup in (panel.ood_box.value, panel.transcript.value):
        parsed = _Tags()
        parsed.feed(markup)
        assert "img" not in parsed.tags and "onerror" not in parsed.attributes
        assert hostile in "".join(parsed.text)
    assert render_familiarity(None, True) == ""


def test_the_benchmark_measures_every_kind(tiny):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ood_rates.py"
    spec = importlib.util.spec_from_file_location("bench_ood_rates", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(str(tiny[0].run_dir), n=12)
    kinds = result["kinds"]
    assert {"blank", "noise", "1x1 and tiny", "extreme aspect", "CT slices"} <= set(kinds)
    assert kinds["synthetic held-out (128 px)"]["n"] == 12 and kinds["CT slices"]["n"] >= 5
    for kind in ("blank", "noise", "CT slices", "extreme aspect"):
        assert kinds[kind]["flagged"] == 1.0 and kinds[kind]["meets_goal"], kind
    assert "all goals met" in bench.table(result)
