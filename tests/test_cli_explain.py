"""``xraygpt-lab explain``: overlay + JSON with the peak in the input image's coordinates; errors."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_attribution import ANSWER, small_model
from xraygpt_lab.cli import main
from xraygpt_lab.models.ood import FILE_NAME, calibrate


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A complete run folder holding a small random model (32 px)."""
    from xraygpt_lab.models.llm import save_llm
    from xraygpt_lab.run_folder import save_weights

    model = small_model()
    run = tmp_path_factory.mktemp("run")
    model.encoder.save_pretrained(run / "encoder")
    save_llm(model.llm, model.tokenizer, run / "llm")
    save_weights(run / "projection.safetensors", dict(model.projection.state_dict()))
    (run / "config.json").write_text(json.dumps({"profile": "tiny", "image_size": 32, "end_sym": "###"}))
    calibrate(model.encoder, 3000, 4000, n_fit=30, n_threshold=20).save(run / FILE_NAME)  # small, not lazily
    return run


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> Path:
    """A non-square 8-bit PNG (60 rows × 100 columns)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "wide.png"
    Image.fromarray((rng.random((60, 100)) * 255).astype(np.uint8)).save(path)
    return path


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize("method", ["ig", "gradcam", "attention"])
def test_explain_writes_overlay_and_json_in_input_coordinates(run_dir, image_path, tmp_path, capsys, method) -> None:
    out = tmp_path / "sub" / f"{method}.png"
    status, stdout, stderr = run_cli(["explain", "--run", str(run_dir), str(image_path), "--phrase",
                                      "left pleural effusion", "--method", method, "--out", str(out),
                                      "--answer", ANSWER, "--steps", "4"], capsys)
    assert status == 0, stderr
    result = json.loads(stdout)
    assert result["method"] == method and result["phrase"] == "left pleural effusion"
    assert result["phrase_in_answer"] is True and result["image_shape"] == [60, 100]
    row, col = result["peak"]
    assert 0 <= row < 60 and 0 <= col < 100  # never in the padding
    assert result["baseline"] and out.is_file() and out.stat().st_size > 1000
    assert isinstance(result["in_distribution"], bool) and result["ood_score"] >= 0 and "ood_reasons" in result
    assert Image.open(out).format == "PNG"
    assert not list(out.parent.glob(".*.tmp*"))  # atomic write left nothing behind


def test_explain_generates_when_no_answer_is_given(run_dir, image_path, tmp_path, capsys) -> None:
    out = tmp_path / "gen.png"
    status, stdout, stderr = run_cli(["explain", "--run", str(run_dir), str(image_path), "--phrase", "effusion",
                                      "--method", "saliency", "--out", str(out), "--max-new-tokens", "4"], capsys)
    assert status == 0, stderr
    result = json.loads(stdout)
    assert isinstance(result["phrase_in_answer"], bool) and "answer" in result


def _one_line_error(status: int, stderr: str, *needles: str) -> None:
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xraygpt-lab")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_image_is_a_one_line_error(run_dir, tmp_path, capsys) -> None:
    status, _, stderr = run_cli(["explain", "--run", str(run_dir), str(tmp_path / "nope.png"), "--phrase", "x",
                                 "--out", str(tmp_path / "o.png")], capsys)
    _one_line_error(status, stderr, "nope.png", "does not exist")


def test_unknown_method_is_a_one_line_error(run_dir, image_path, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--run", str(run_dir), str(image_path), "--phrase", "x", "--method", "lime",
              "--out", str(tmp_path / "o.png")])
    _one_line_error(exc.value.code, capsys.readouterr().err, "lime")


def test_whitespace_phrase_is_a_one_line_error(run_dir, image_path, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--run", str(run_dir), str(image_path), "--phrase", "   ", "--out", str(tmp_path / "o.png")])
    _one_line_error(exc.value.code, capsys.readouterr().err, "whitespace")


def test_run_folder_missing_a_file_is_a_one_line_error(run_dir, image_path, tmp_path, capsys) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "projection.safetensors").unlink()
    status, _, stderr = run_cli(["explain", "--run", str(broken), str(image_path), "--phrase", "x",
                                 "--out", str(tmp_path / "o.png")], capsys)
    _one_line_error(status, stderr, "projection.safetensors")
    status, _, stderr = run_cli(["explain", "--run", str(tmp_path / "absent"), str(image_path), "--phrase", "x",
                                 "--out", str(tmp_path / "o.png")], capsys)
    _one_line_error(status, stderr, "does not exist")


def test_phrase_missing_from_given_answer_is_a_one_line_error(run_dir, image_path, tmp_path, capsys) -> None:
    status, _, stderr = run_cli(["explain", "--run", str(run_dir), str(image_path), "--phrase", "cardiomegaly",
                                 "--answer", ANSWER, "--out", str(tmp_path / "o.png")], capsys)
    _one_line_error(status, stderr, "cardiomegaly")


@pytest.mark.slow
def test_explain_peak_lands_on_a_visible_effusion_in_input_coordinates(tmp_path, capsys) -> None:
    """A large left effusion rendered at 160 px and cropped to 160 × 150 (non-square input)."""
    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.data.synthetic.lesions import Finding
    from xraygpt_lab.data.synthetic.world import render_case
    from xraygpt_lab.interpret.faithfulness import pointing_hit
    from xraygpt_lab.interpret.localization import observation_phrase
    from xraygpt_lab.interpret.targets import phrase_target
    from xraygpt_lab.runs import ensure_tiny_run, load_run

    run = ensure_tiny_run(progress=False)
    capsys.readouterr()  # drop the training log when this test is the first to need the run
    finding = [Finding("Pleural Effusion", side="left", severity="large")]
    case = render_case(3001, 160, findings=finding)
    image, mask = case.image[:, 5:155], case.masks["Pleural Effusion"][:, 5:155]  # [160, 150]
    path = tmp_path / "effusion.png"
    Image.fromarray((image * 255).round().astype(np.uint8)).save(path)
    phrase = observation_phrase(case.summary, "Pleural Effusion")
    status, stdout, stderr = run_cli(["explain", "--run", str(run), str(path), "--phrase", phrase, "--method", "ig",
                                      "--answer", case.summary, "--out", str(tmp_path / "o.png")], capsys)
    assert status == 0, stderr
    peak = json.loads(stdout)["peak"]
    saliency = np.zeros(image.shape)
    saliency[peak[0], peak[1]] = 1.0
    hit = pointing_hit(saliency, mask, tolerance=5)  # 4 px at 128 px, scaled to 160
    model = load_run(run)
    target = phrase_target(model, phrase, case.summary)
    without = render_case(3001, 128, findings=[]).image
    with torch.no_grad():
        gain = float(target(preprocess(render_case(3001, 128, findings=finding).image, 128)[None])
                     - target(preprocess(without, 128)[None]))
    assert 0 <= peak[0] < image.shape[0] and 0 <= peak[1] < image.shape[1], f"peak {peak} outside {image.shape}"
    if not hit:  # known gap (docs/design-notes.md): IG with a blurred baseline rarely credits an effusion
        pytest.xfail(f"peak {peak} missed the effusion although the phrase gains {gain:.3f} nats from it "
                     "(a blurred baseline keeps a large smooth opacity; see docs/design-notes.md)")


def test_ig_defaults_to_two_baselines_and_a_smoothed_map_and_rejects_bad_settings(run_dir, image_path, tmp_path,
                                                                                 capsys) -> None:
    base = ["explain", "--run", str(run_dir), str(image_path), "--phrase", "left pleural effusion",
            "--answer", ANSWER, "--steps", "2", "--out", str(tmp_path / "o.png")]
    status, stdout, stderr = run_cli(base, capsys)
    assert status == 0, stderr
    result = json.loads(stdout)
    assert "average over 2 baselines" in result["baseline"] and "blurred" in result["baseline"]
    assert "gate: feature IG" in result["baseline"]  # the recommended IG is gated
    status, stdout, stderr = run_cli(base + ["--no-gate"], capsys)
    assert status == 0 and "gate" not in json.loads(stdout)["baseline"], stderr
    status, stdout, stderr = run_cli(base + ["--baseline", "mean", "--smooth", "0"], capsys)
    assert status == 0 and "average" not in json.loads(stdout)["baseline"]
    status, _, stderr = run_cli(base + ["--method", "occlusion", "--baseline", "blur+black"], capsys)
    _one_line_error(status, stderr, "--method ig only")
    status, _, stderr = run_cli(base + ["--method", "attention", "--smooth", "1"], capsys)
    _one_line_error(status, stderr, "--smooth")
    status, _, stderr = run_cli(base + ["--method", "gradcam", "--gate"], capsys)
    _one_line_error(status, stderr, "--gate applies to --method ig only")
    status, stdout, stderr = run_cli(base + ["--method", "feature_ig"], capsys)
    assert status == 0 and "features of the black image" in json.loads(stdout)["baseline"], stderr
    for flag, value, needle in (("--baseline", "blur+sky", "unknown baseline"), ("--smooth", "-1", ">= 0")):
        with pytest.raises(SystemExit) as exc:
            main(base + [flag, value])
        _one_line_error(exc.value.code, capsys.readouterr().err, needle)


@pytest.mark.slow
def test_explain_expands_a_finding_name_to_the_reference_models_words(tmp_path, capsys) -> None:
    """`explain --run reference IMAGE --phrase "pleural effusion"`: the model's own noun phrase is
    explained (side and severity included), the JSON says so, and the peak lies on the chest."""
    from xraygpt_lab.data.synthetic.anatomy import lung_masks
    from xraygpt_lab.data.synthetic.lesions import Finding
    from xraygpt_lab.data.synthetic.world import render_case

    case = render_case(12, 128, findings=[Finding("Pleural Effusion", side="left", severity="large")])
    path = tmp_path / "effusion.png"
    Image.fromarray((case.image * 255).round().astype(np.uint8)).save(path)
    status, stdout, stderr = run_cli(["explain", "--run", "reference", str(path), "--phrase", "pleural effusion",
                                      "--out", str(tmp_path / "o.png")], capsys)
    assert status == 0, stderr
    result = json.loads(stdout)
    assert result["phrase"] == "pleural effusion" and result["phrase_in_answer"] is True
    assert result["explained_phrase"].lower() in result["explained_answer"].lower()
    # the whole noun phrase, size and side included (whether the size is right is the model's business)
    assert re.fullmatch(r"(small|moderate|large) left pleural effusion", result["explained_phrase"].lower()), result
    assert result["phrase_source"] in ("answer", "question") and result["in_distribution"] is True
    lungs = lung_masks(case.anatomy, 128, behind_heart=True)
    rows, cols = np.nonzero(lungs["right lung"] | lungs["left lung"])
    row, col = result["peak"]  # within 4 px of the lungs' bounding box: on the chest, not the background
    assert rows.min() - 4 <= row <= rows.max() + 4 and cols.min() - 4 <= col <= cols.max() + 4, result["peak"]


@functools.lru_cache(maxsize=1)
def _reference_model():
    """The shipped reference run's model, loaded once for the effusion tests."""
    from xraygpt_lab.runs import load_run, reference_run

    return load_run(reference_run())


def _effusion_evidence(side: str, seeds: range) -> tuple[float, float]:
    """Mean share of the recommended map's positive evidence on a large ``side`` effusion, and the
    mean share of the image the effusion covers (what a map blind to it would put there)."""
    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.data.synthetic.lesions import Finding
    from xraygpt_lab.data.synthetic.world import render_case
    from xraygpt_lab.interpret.attribution import explain
    from xraygpt_lab.interpret.faithfulness import energy_in_mask
    from xraygpt_lab.interpret.localization import DEFAULT_METHODS
    from xraygpt_lab.interpret.phrases import resolve_phrase
    from xraygpt_lab.interpret.targets import phrase_target

    model = _reference_model()
    settings = dict(DEFAULT_METHODS["ig_gated"])
    method = settings.pop("method")
    energy, share = [], []
    for seed in seeds:
        case = render_case(seed, 128, findings=[Finding("Pleural Effusion", side=side, severity="large")])
        pixels = preprocess(case.image, 128)[None]  # [1, 1, 128, 128]
        resolved = resolve_phrase(model, pixels, "pleural effusion")
        assert f" {side} " in f" {resolved.phrase.lower()} ", resolved.phrase
        torch.manual_seed(0)
        saliency = np.asarray(explain(phrase_target(model, resolved.phrase, resolved.answer, resolved.instruction),
                                      pixels, method, **settings).map)  # [128, 128]
        mask = case.masks["Pleural Effusion"]
        energy.append(energy_in_mask(saliency, mask))
        share.append(float(mask.mean()))
    return float(np.mean(energy)), float(np.mean(share))


@pytest.mark.slow
@pytest.mark.parametrize("side", ["left", "right"])
def test_the_reference_puts_its_evidence_for_an_effusion_on_its_side(side: str) -> None:
    """Four large effusions per side: at least twice the evidence a map blind to them would put
    there (measured: 0.82 of the evidence on 9 % of the image for left ones, 0.47 for right ones;
    an encoder trained a quarter as long put 0.03 on right ones, reading the side off the other lung)."""
    energy, share = _effusion_evidence(side, range(10, 14))
    assert energy >= 2.0 * share, (energy, share)
