"""The model sub-commands: describe, chat (piped stdin), evaluate, and their one-line errors."""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from xraygpt_lab.cli import main
from xraygpt_lab.models.encoder import VisionEncoder
from xraygpt_lab.models.ood import FILE_NAME, calibrate
from xraygpt_lab.train.walkthrough import run_walkthrough

TOY = {
    "n_stage1": 16, "n_stage2": 6, "n_eval": 4,
    "encoder_steps": 1, "encoder_batch": 8, "encoder_lr": 1e-3,
    "llm_steps": 2, "llm_batch": 2, "llm_lr": 1e-3, "llm_min_lr": 1e-4, "llm_warmup": 1,
    "stage1_steps": 2, "stage1_batch": 2, "stage1_lr": 1e-3, "stage1_min_lr": 1e-4, "stage1_warmup": 1,
    "stage2_steps": 1, "stage2_batch": 2, "stage2_lr": 1e-3, "stage2_min_lr": 1e-4, "stage2_warmup": 1,
    "max_new_tokens": 4,
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    run_walkthrough(out, "tiny", seed=1, overrides=TOY, log=lambda m: None, progress=False)
    encoder = VisionEncoder.from_pretrained(out / "encoder")  # a small out-of-distribution calibration, made
    calibrate(encoder, 3001, 4001, n_fit=30, n_threshold=20).save(out / FILE_NAME)  # here instead of lazily
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    paths = []
    for name, shape in (("a.png", (200, 160)), ("b.jpg", (90, 120))):  # any size, any format
        path = folder / name
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_describe_prints_one_report_per_image(run_dir, images, capsys):
    assert main(["describe", "--run", str(run_dir), "--max-new-tokens", "4", *map(str, images)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(images[0])) and lines[1].startswith(str(images[1]))


def test_describe_json_prints_one_object_per_image_with_the_check(run_dir, images, capsys):
    assert main(["describe", "--run", str(run_dir), "--json", "--max-new-tokens", "4", *map(str, images)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["image"] for r in rows] == list(map(str, images))
    for row in rows:
        assert isinstance(row["report"], str) and isinstance(row["in_distribution"], bool)
        assert row["in_distribution"] == (row["ood_score"] <= row["ood_threshold"] and not row["ood_reasons"])


def test_describe_skips_unreadable_images_names_them_and_describes_the_rest(run_dir, images, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    args = ["describe", "--run", str(run_dir), "--max-new-tokens", "4"]
    assert main([*args, str(images[0]), str(bad), str(images[1]), str(empty)]) == 2
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(images[0])) and lines[1].startswith(str(images[1]))
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 2 and "bad.png" in skipped[0] and "empty.dcm" in skipped[1]
    assert main([*args, "--json", str(bad), str(images[0])]) == 2
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert rows[0] == {"image": str(bad), "error": rows[0]["error"]} and "not an image" in rows[0]["error"]
    assert rows[1]["image"] == str(images[0]) and isinstance(rows[1]["report"], str)
    assert main([*args, str(bad), str(empty)]) == 2  # nothing readable: an error, and the model never loads
    err = capsys.readouterr().err
    assert "none of the 2 images could be read" in err and err.count("skipped: ") == 2


def test_chat_reads_piped_stdin(run_dir, images, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("What do you see?\n/reset\nIs it normal?\n/quit\nnever asked\n"))
    assert main(["chat", "--run", str(run_dir), "--image", str(images[0]), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("Doctor:") == 2 and "(conversation reset)" in out


def test_evaluate_writes_metrics_json(run_dir, tmp_path, capsys):
    from xraygpt_lab.data.synthetic.export import export_dataset

    data = tmp_path / "synth"
    export_dataset(data, 4, 128, 12345)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--run", str(run_dir), "--data", str(data), "--out", str(out), "--max-new-tokens", "4"]) == 0
    m = json.loads(out.read_text())
    for key in ("rouge1", "rouge2", "rougeL", "bleu4", "ce_f1_macro", "ce_f1_micro", "per_observation",
                "repetition_rate", "contradiction_rate"):
        assert key in m and key in m["baselines"]["image_blind"]
    assert m["n"] == 4 and "vs_ground_truth" in m and "zeros" in m["baselines"]["image_blind"]["how"]
    assert 0.0 <= m["contradiction_rate"] <= 1.0 and "repetition rate" in capsys.readouterr().err
    assert set(m["consistency_metrics"]) == {"repetition_rate", "contradiction_rate"}


def test_missing_run_file_is_a_one_line_error(run_dir, images, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "llm" / "model.safetensors").unlink()
    assert main(["describe", "--run", str(broken), str(images[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xraygpt-lab: error:") and "llm/model.safetensors" in err and "\n" not in err


def test_unreadable_image_is_a_one_line_error(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["describe", "--run", str(run_dir), str(bad)]) == 2
    assert capsys.readouterr().err.startswith("xraygpt-lab: error:")


def test_walkthrough_set_overrides_training_settings_and_rejects_bad_ones(tmp_path, capsys):
    from xraygpt_lab.recipe import recipe_of_run

    out = tmp_path / "run"
    args = [a for key, value in TOY.items() for a in ("--set", f"{key}={value}")]
    assert main(["walkthrough", "--out", str(out), "--seed", "2", "--quiet", *args]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["recipe_version"] == 1
    settings = recipe_of_run(config).flat()
    assert all(settings[key] == value for key, value in TOY.items())
    assert (out / "metrics.json").is_file()
    for bad, message in (("encoder_step=5", "unknown training setting 'encoder_step'; choose from image_size, "),
                         ("encoder_steps=1.5", "encoder_steps takes an integer"),
                         ("encoder_lr=fast", "encoder_lr takes a finite number > 0, got 'fast'"),
                         ("llm_lr=NaN", "llm_lr takes a finite number > 0, got nan"),
                         ("encoder_batch=0", "encoder_batch takes an integer >= 1, got 0"),
                         ("llm_grounded_share=5", "llm_grounded_share takes a finite number between 0 and 1"),
                         ("encoder_bf16=maybe", 'encoder_bf16 takes one of true, false, "auto"'),
                         ("encoder_bf16=1", 'encoder_bf16 takes one of'),
                         ("stage1_init=zeros", 'stage1_init takes one of "concepts", "random"'),
                         ("encoder_steps", "expected KEY=VALUE")):
        with pytest.raises(SystemExit):
            main(["walkthrough", "--out", str(tmp_path / "bad"), "--set", bad])
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # settings that only clash with each other or with the encoder are refused before anything is written
    for bad, message in (("stage1_min_lr=0.1", "stage1_min_lr must be <= stage1_lr"),
                         ("image_size=64", "image_size 64 does not fit the tiny encoder")):
        assert main(["walkthrough", "--out", str(tmp_path / "bad"), "--set", bad]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_walkthrough_long_preset_merges_under_explicit_settings():
    from argparse import Namespace

    from xraygpt_lab.cli.walkthrough import _recipe
    from xraygpt_lab.config import TINY_LONG, TINY_RECIPE

    assert _recipe(Namespace(profile="tiny", long=False, overrides=[])) == TINY_RECIPE
    merged = _recipe(Namespace(profile="tiny", long=True, overrides=[("llm_steps", 5)]))
    assert merged == TINY_LONG.override({"llm_steps": 5}) and merged.encoder.steps == TINY_LONG.encoder.steps
    tiny, long = TINY_RECIPE.flat(), TINY_LONG.flat()
    kept = {"llm_batch", "llm_grounded_chats"}
    grown = {k for k in tiny if tiny[k] != long[k]} - kept
    assert grown == {"n_stage1", "encoder_steps", "llm_steps", "llm_cases", "stage1_steps",
                     "stage2_yes_no_share",
                     "stage1_lr", "stage1_min_lr", "stage2_lr", "stage2_min_lr"}
    # longer, on more films (or asking more), never shorter; --long keeps the alignment rates its
    # reference run was trained with (the 6-minute recipe's gentler ones were measured on it alone)
    # and shows films with a lung lesion three times an epoch, as the 6-minute recipe does
    assert all(long[k] > tiny[k] for k in grown)
    assert tiny["encoder_lesion_repeats"] == long["encoder_lesion_repeats"] == 2
    # and its LLM learns from the chats its reference run was trained with (8 a case, batches of 16)
    assert [(tiny[k], long[k]) for k in ("llm_batch", "llm_grounded_chats")] == [(24, 16), (16, 8)]
    # both start stage 2 below where stage 1 ended, as XrayGPT does (3e-5 after 8e-5)
    assert all(r["stage2_lr"] < r["stage1_min_lr"] for r in (tiny, long))
