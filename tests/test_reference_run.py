"""The reference run shipped with the toolkit (``xraygpt_lab/reference/``, ``runs.reference_run``).

It is complete, loads with every weight file matching its model exactly, writes good reports on a
synthetic seed it never trained on, answers to ``--run reference`` and ``XRAYGPT_LAB_RUN=reference``,
and stays untouched at run time; ``scripts/make_reference.py`` builds it (bfloat16 over the size
limit) and refuses what it cannot use without deleting anything.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xraygpt_lab import runs
from xraygpt_lab.cli import main
from xraygpt_lab.data.synthetic.world import render_case
from xraygpt_lab.errors import RunFolderError, XrayGPTLabError
from xraygpt_lab.eval.evaluate import synthetic_eval_data
from xraygpt_lab.models.ood import OODDetector
from xraygpt_lab.run_folder import OOD_FILE, read_header
from xraygpt_lab.train.evaluation import evaluate_model
from xraygpt_lab.widgets import app

#: CE macro-F1 against the true labels that the reference must reach on a fresh synthetic seed.
REFERENCE_CE_BAR = 0.88  # the shipped run measures 0.977 here (0.957-0.978 on 300 films of eight other seeds)
#: ... and its margin over the image-blind baseline (projection output replaced by zeros).
BLIND_MARGIN = 0.5
#: Findings both texts name with a side, on the same side: 0.964 here (2 of 56 wrong; 0.982-0.997 on 300 films
#: of eight other seeds). Sizes are not held: the reference grades them at chance (docs/design-notes.md).
REFERENCE_SIDE_BAR = 0.90
#: A seed no stage of the reference trained or calibrated on (checked below), and its size.
FRESH_SEED, FRESH_N = 97_531, 60
#: The size limit of the shipped folder (scripts/make_reference.py).
MAX_BYTES = 10_000_000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference() -> Path:
    return runs.reference_run()


@pytest.fixture(scope="module")
def model(reference):
    return runs.load_run(runs.REFERENCE, device="cpu")


@pytest.fixture(scope="module")
def make_reference():
    spec = importlib.util.spec_from_file_location("make_reference", REPO / "scripts" / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def image(tmp_path_factory, model) -> Path:
    """A held-out synthetic film with a pleural effusion, as an 8-bit PNG."""
    case = next(c for c in (render_case(s, size=model.image_size) for s in range(50_000, 50_200))
                if c.labels["Pleural Effusion"] == 1)
    path = tmp_path_factory.mktemp("img") / "film.png"
    pixels = np.asarray(case.image, dtype=np.float64)
    Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8)).save(path)
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` and beside it, with its size and modification time in ns."""
    paths = list(folder.rglob("*")) + list(folder.parent.iterdir())
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


def test_reference_holds_every_file_the_loader_needs_and_no_checkpoints(reference):
    for name in runs.REFERENCE_FILES:
        assert (reference / name).is_file(), name
    assert not (reference / "work").exists()
    size = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    assert size <= MAX_BYTES, f"{size:,} bytes"
    assert "xraygpt-lab walkthrough" in (reference / "REPRODUCE.md").read_text()


def test_package_data_ships_every_file_of_the_reference_and_git_does_not_hide_them(reference):
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["xraygpt_lab"]

    def shipped(relative: str) -> bool:  # setuptools' glob: one path part per pattern part
        parts = relative.split("/")
        return any(len(p.split("/")) == len(parts) and all(map(fnmatch.fnmatchcase, parts, p.split("/")))
                   for p in patterns)

    files = [p.relative_to(reference.parent).as_posix() for p in reference.rglob("*") if p.is_file()]
    assert files and [f for f in files if not shipped(f)] == []
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *files],
                             cwd=reference.parent, capture_output=True, text=True).stdout.split()
    assert ignored == [], f".gitignore hides {ignored}"


def test_reference_loads_with_strict_keys_in_float32(reference, model):
    parts = {"encoder/encoder.safetensors": model.encoder, "projection.safetensors": model.projection,
             "llm/model.safetensors": model.llm}
    for name, module in parts.items():
        state = module.state_dict()
        found = set(read_header(reference / name)[0])
        stored = {state[k].data_ptr() for k in found if k in state}
        tied = {k for k in state if k not in found and state[k].data_ptr() in stored}  # lm_head = embedding
        assert found - set(state) == set(), f"{name}: unexpected {sorted(found - set(state))[:3]}"
        assert set(state) - found - tied == set(), f"{name}: missing {sorted(set(state) - found - tied)[:3]}"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert OODDetector.load(reference / OOD_FILE).matches(model.encoder)


def test_reference_reports_are_good_on_a_seed_it_never_saw(model):
    seeds = set((model.run_config.get("seeds") or {}).values()) | {model.run_config.get("seed")}
    assert FRESH_SEED not in seeds
    data = synthetic_eval_data(FRESH_N, model.image_size, seed=FRESH_SEED)
    metrics = evaluate_model(model, data.references, pixel_values=data.pixel_values, ground_truth=data.ground_truth,
                             n_boot=0, max_new_tokens=int(model.run_config["recipe"]["max_new_tokens"]))
    ce = metrics["vs_ground_truth"]["ce_f1_macro"]
    blind = metrics["baselines"]["image_blind"]["vs_ground_truth"]["ce_f1_macro"]
    assert ce >= REFERENCE_CE_BAR, f"CE macro-F1 {ce:.3f} against the true labels, bar {REFERENCE_CE_BAR}"
    assert ce >= blind + BLIND_MARGIN, f"CE macro-F1 {ce:.3f}, image-blind {blind:.3f}"
    sides = metrics["side_agreement"]
    assert metrics["side_pairs"] >= 30 and sides >= REFERENCE_SIDE_BAR, \
        f"side agreement {sides} over {metrics['side_pairs']} findings, bar {REFERENCE_SIDE_BAR}"


def test_the_name_reference_resolves_in_one_place(reference, monkeypatch, tmp_path):
    assert runs.resolve_run("reference") == reference
    assert runs.resolve_run("./reference") == Path("reference")  # a folder of that name
    monkeypatch.setenv(runs.ENV_VAR, "reference")
    assert runs.default_run_dir() == reference
    assert runs.ensure_tiny_run() == reference  # never retrained or moved, whatever its recipe
    assert runs.reference_or_tiny_run() == reference
    monkeypatch.delenv(runs.ENV_VAR)
    assert runs.reference_or_tiny_run() == reference
    monkeypatch.delenv(app.RUN_ENV, raising=False)
    assert app.chat_run() == reference  # the chat page's default
    monkeypatch.setenv(app.RUN_ENV, "reference")
    assert app.chat_run() == reference
    monkeypatch.setenv(app.RUN_ENV, str(tmp_path))
    assert app.chat_run() == tmp_path


def test_describe_json_with_run_reference(reference, image, capsys):
    status = main(["describe", "--run", "reference", str(image), "--json", "--max-new-tokens", "40"])
    out, err = capsys.readouterr()
    assert status == 0, err
    row = json.loads(out.strip().splitlines()[0])
    assert row["report"].strip() and row["in_distribution"] is True
    assert "calibrating" not in err  # the calibration was made when the reference was built


@pytest.fixture()
def read_only_reference(reference, tmp_path, monkeypatch) -> Path:
    """A copy of the reference, made read-only, standing in for the packaged one."""
    copy = tmp_path / "pkg" / "reference"
    shutil.copytree(reference, copy)
    for path in [*copy.rglob("*"), copy, copy.parent]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    monkeypatch.setattr(runs, "packaged_reference_dir", lambda: copy)
    yield copy
    for path in [copy.parent, copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_describe_and_explain_write_nothing_into_a_read_only_reference(read_only_reference, image, tmp_path, capsys):
    before = snapshot(read_only_reference)
    assert main(["describe", "--run", "reference", str(image), "--max-new-tokens", "40"]) == 0
    out = tmp_path / "map.png"
    status = main(["explain", str(image), "--run", "reference", "--phrase", "pleural effusion", "--method",
                   "gradcam", "--out", str(out), "--max-new-tokens", "60"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert out.is_file() and json.loads(captured.out.strip().splitlines()[-1])["in_distribution"] is not None
    assert snapshot(read_only_reference) == before  # no file, lock or calibration written, even by root
    assert "calibrat" not in captured.err


def test_an_install_without_the_reference_says_so(monkeypatch, tmp_path, image, capsys):
    monkeypatch.setattr(runs, "packaged_reference_dir", lambda: tmp_path / "reference")
    with pytest.raises(XrayGPTLabError, match="no reference run"):
        runs.reference_run()
    (tmp_path / "reference").mkdir()
    with pytest.raises(RunFolderError, match="incomplete .*config.json"):
        runs.reference_run()
    assert main(["describe", "--run", "reference", str(image)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no reference run" not in err[0] and "incomplete" in err[0]
    notes: list[str] = []
    monkeypatch.delenv(runs.ENV_VAR, raising=False)
    monkeypatch.setattr(runs, "ensure_tiny_run", lambda **kwargs: tmp_path / "tiny")
    assert runs.reference_or_tiny_run(log=notes.append) == tmp_path / "tiny"
    assert len(notes) == 1 and "tiny run instead" in notes[0]


# ---------------------------------------------------------------------- scripts/make_reference.py
def test_build_refuses_an_incomplete_run_or_another_profile(make_reference, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "projection.safetensors").unlink()
    dest = tmp_path / "dest"
    with pytest.raises(make_reference.BuildError, match="not a complete run folder .*projection.safetensors"):
        make_reference.build(run, dest)
    shutil.copyfile(reference / "projection.safetensors", run / "projection.safetensors")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "profile": "full"}))
    assert make_reference.main([str(run), "--dest", str(dest)]) == 2
    assert not dest.exists() and not list(tmp_path.glob(".dest*"))


def test_build_never_deletes_what_it_did_not_write(make_reference, reference, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(make_reference.BuildError, match="did not write .*notes.txt"):
        make_reference.build(reference, dest)
    assert (dest / "notes.txt").read_text() == "mine"


def test_build_stores_bf16_over_the_limit_and_the_loader_upcasts(make_reference, reference, model, tmp_path):
    fp32 = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    dest = make_reference.build(reference, tmp_path / "small", max_bytes=int(fp32 * 0.8), log=lambda m: None)
    _, meta = read_header(dest / "llm" / "model.safetensors")
    assert meta.get("stored_dtype") == "bfloat16"
    small = runs.load_run(dest, device="cpu")
    assert {p.dtype for p in small.parameters()} == {torch.float32}
    original = model.projection.weight.to(torch.bfloat16).float()
    assert torch.equal(small.projection.weight, original)
    assert OODDetector.load(dest / OOD_FILE).matches(small.encoder)
    assert "bfloat16" in (dest / "REPRODUCE.md").read_text()
    with pytest.raises(make_reference.BuildError, match="even with bfloat16"):
        make_reference.build(reference, tmp_path / "tiny", max_bytes=fp32 // 4, log=lambda m: None)
    assert not (tmp_path / "tiny").exists() and not list(tmp_path.glob(".tiny*"))
