"""Run folders and checkpoints under bad files, interruption and a shared server: one test per case.

Each test states the exact behaviour: the exit status, one line that names the file and what is
wrong with it, files left as they were, and for the walkthrough what it says and what it redoes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_chat_panel import REPORTS, write_small_run
from test_cli_model import TOY as CLI_TOY
from xraygpt_lab.cli import main
from xraygpt_lab.errors import CorruptFileError, RunFolderError
from xraygpt_lab.run_folder import load_weights, run_lock, save_weights
from xraygpt_lab.train.walkthrough import run_walkthrough

REPO = Path(__file__).resolve().parent.parent
#: The smallest walkthrough the tests use (test_cli_model's) with 3 or 4 steps a training stage, so
#: that a stage can be interrupted between two checkpoints (``--save-every 1``).
TOY = {**CLI_TOY, "encoder_steps": 4, "llm_steps": 3, "stage1_steps": 3, "stage2_steps": 3}
SETTINGS = [a for key, value in TOY.items() for a in ("--set", f"{key}={value}")]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: content hash and permission bits."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o777)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_weights(a)[0], load_weights(b)[0]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xraygpt-lab: error: "), err
    return lines[0]


# --------------------------------------------------------------------------- loading a damaged run
@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A complete run folder of a small random model (32 px): loads in about a second."""
    from xraygpt_lab.models.llm import train_tokenizer

    tokenizer = train_tokenizer(REPORTS * 10 + ["###Patient: <Img><ImageHere></Img> Describe. ###Doctor: "],
                                vocab_size=320)
    return write_small_run(tmp_path_factory.mktemp("small") / "run", tokenizer)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """An image and a two-case dataset folder for the commands that need them."""
    from xraygpt_lab.data.synthetic.export import export_dataset

    folder = tmp_path_factory.mktemp("inputs")
    image = folder / "x.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8)).save(image)
    return image, export_dataset(folder / "data", 2, 64, 7, progress=False, workers=1)


def _edit_json(key: str, change):
    def edit(path: Path) -> None:
        data = json.loads(path.read_text())
        data[key] = change(data[key])
        path.write_text(json.dumps(data))
    return edit


def _half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_projection(path: Path) -> None:
    save_weights(path, {"weight": torch.zeros(8, 8), "bias": torch.zeros(8)})


#: (file damaged, how, file the message names, what the message says)
DAMAGE = {
    "zero-byte projection": ("projection.safetensors", lambda p: p.write_bytes(b""),
                             "projection.safetensors", "is empty (0 bytes)"),
    "truncated encoder weights": ("encoder/encoder.safetensors", _half,
                                  "encoder/encoder.safetensors", "is not a readable safetensors file"),
    "garbage LLM weights": ("llm/model.safetensors", lambda p: p.write_bytes(b"\x89PNG not weights" * 64),
                            "llm/model.safetensors", "is not a readable safetensors file"),
    "config.json is a list": ("config.json", lambda p: p.write_text("[1, 2]"),
                              "config.json", "holds a JSON list where an object {...} is expected"),
    "malformed encoder_config.json": ("encoder/encoder_config.json", lambda p: p.write_text('{"image_size": 32,'),
                                      "encoder/encoder_config.json", "is not valid JSON"),
    "malformed tokenizer.json": ("llm/tokenizer.json", lambda p: p.write_text('{"version": "1.0", '),
                                 "llm/tokenizer.json", "is not valid JSON"),
    "projection of other sizes": ("projection.safetensors", _other_projection,
                                  "projection.safetensors", "does not match the encoder and LLM sizes"),
    "encoder weights vs its config": ("encoder/encoder_config.json", _edit_json("embed_dim", lambda v: 2 * v),
                                      "encoder/encoder.safetensors", "does not match encoder_config.json"),
    "LLM weights vs its config": ("llm/config.json", _edit_json("intermediate_size", lambda v: 2 * v),
                                  "llm/model.safetensors", "does not match config.json: 3 tensor(s) of other sizes (model.layers.0"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_file_is_one_line_naming_it_in_every_command_and_the_panel(
        damage, small_run, inputs, tmp_path, capsys, monkeypatch):
    from xraygpt_lab.widgets import ChatPanel
    from xraygpt_lab.widgets.html import escape_text

    edited, how, named, says = DAMAGE[damage]
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    how(run / edited)
    before = snapshot(run)
    image, data = inputs
    commands = {
        "describe": ["describe", "--run", str(run), str(image)],
        "explain": ["explain", str(image), "--run", str(run), "--phrase", "effusion", "--answer",
                    "There is an effusion.", "--out", str(tmp_path / "map.png")],
        "chat": ["chat", "--run", str(run), "--image", str(image)],
        "evaluate": ["evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "m.json")],
    }
    for command, argv in commands.items():
        monkeypatch.setattr(sys, "stdin", io.StringIO("What do you see?\n"))
        assert main(argv) == 2, command
        line = one_error_line(capsys.readouterr().err)
        assert f"{run / named}: " in line and says in line, (command, line)
    assert not (tmp_path / "map.png").exists() and not (tmp_path / "m.json").exists()
    panel = ChatPanel(run)  # the web page stays up and says why
    assert panel.model is None and str(run / named) in panel.load_error and says in panel.load_error
    assert "\n" not in panel.load_error and escape_text(panel.load_error) in panel.transcript.value
    assert panel.send("Describe.") == "" and panel.set_image(np.zeros((8, 8), np.float32)) is False
    with pytest.raises(CorruptFileError, match=named.split("/")[-1]):
        ChatPanel(run, strict=True)
    assert snapshot(run) == before  # nothing was written, moved or repaired by a reader


def test_weights_that_lack_a_layer_of_the_config_are_refused_not_filled_at_random(small_run, tmp_path):
    """A config with one more layer than the weights: transformers would start that layer at
    random and warn; the loader names the file and the missing tensors."""
    from xraygpt_lab.runs import load_run

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    _edit_json("num_hidden_layers", lambda v: v + 1)(run / "llm" / "config.json")
    with pytest.raises(CorruptFileError, match=r"llm/model.safetensors: does not match config.json: \d+ missing "
                                               r"\(model.layers.1."):
        load_run(run)


# --------------------------------------------------------------------------- a walkthrough's damaged files
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    """A complete toy walkthrough that kept its work folder (checkpoints and the feature cache)."""
    out = tmp_path_factory.mktemp("toy") / "run"
    run_walkthrough(out, "tiny", seed=5, overrides=TOY, log=lambda m: None, progress=False, keep_work=True,
                    save_every=1)
    return out


def _rerun(out: Path) -> list[str]:
    logs: list[str] = []
    run_walkthrough(out, "tiny", seed=5, overrides=TOY, log=logs.append, progress=False, keep_work=True,
                    save_every=1)
    return logs


def test_a_zero_byte_checkpoint_is_named_discarded_and_the_stage_redone(toy_run, tmp_path, capsys):
    """As a power cut mid-stage leaves it: stage 2's checkpoint empty, its output not written."""
    out = tmp_path / "run"
    shutil.copytree(toy_run, out)
    checkpoint = out / "work" / "stage2.ckpt.safetensors"
    checkpoint.write_bytes(b"")
    for name in ("metrics.json", "projection.safetensors", "work/projection_stage2.safetensors"):
        (out / name).unlink()
    assert main(["walkthrough", "--out", str(out), "--seed", "5", "--quiet", "--save-every", "1", *SETTINGS]) == 0
    stdout = capsys.readouterr().out
    assert (f"[stage2] {checkpoint}: is empty (0 bytes) where safetensors weights are expected; "
            "discarded it, training stage2 from step 0") in stdout
    assert "resuming stage2" not in stdout and "[stage2] done in" in stdout
    assert "discarded and remade 1 unreadable file(s)" in stdout.splitlines()[-1]
    assert json.loads((out / "metrics.json").read_text())["repaired"] == [str(checkpoint)]
    assert same_weights(out / "projection.safetensors", toy_run / "projection.safetensors")
    assert load_weights(checkpoint)[1]["step"] == "3"  # a whole checkpoint again


def test_an_unreadable_cached_feature_is_encoded_again(toy_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(toy_run, out)
    cached = sorted((out / "work" / "features").rglob("*.safetensors"))
    _half(cached[3])
    logs = _rerun(out)
    text = "\n".join(logs)
    assert f"[features] {cached[3]}: is not a readable safetensors file" in text
    assert "; encoded that image again in its place" in text
    assert f"({len(cached) - 1} from cache)" not in text and "(1 encoded," in text
    assert load_weights(cached[3])[0]["tokens"].dim() == 2  # replaced by a whole file


def test_unreadable_stage_outputs_are_remade_from_their_checkpoints(toy_run, tmp_path):
    """The LLM's weights and stage 1's projection damaged in a finished run: each is named,
    discarded and remade from the stage's last checkpoint, to the same weights."""
    out = tmp_path / "run"
    shutil.copytree(toy_run, out)
    (out / "llm" / "model.safetensors").write_bytes(b"not weights at all")
    (out / "work" / "projection_stage1.safetensors").write_bytes(b"")
    text = "\n".join(_rerun(out))
    assert f"[llm] {out / 'llm' / 'model.safetensors'}: is not a readable safetensors file" in text
    assert "discarded it; redoing llm" in text and "resuming llm from step 3 of 3" in text
    assert f"[stage1] {out / 'work' / 'projection_stage1.safetensors'}: is empty (0 bytes)" in text
    assert "resuming stage1 from step 3 of 3" in text and "[stage2] found, skipped" in text
    assert same_weights(out / "llm" / "model.safetensors", toy_run / "llm" / "model.safetensors")
    assert same_weights(out / "projection.safetensors", toy_run / "projection.safetensors")


def test_an_unreadable_encoder_checkpoint_and_history_restart_cleanly(toy_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(toy_run, out)
    (out / "encoder" / "encoder.safetensors").unlink()  # the encoder stage was interrupted
    (out / "work" / "encoder.ckpt.safetensors").write_bytes(b"")
    (out / "work" / "history.json").write_text('{"encoder": [')
    text = "\n".join(_rerun(out))
    assert f"[resume] {out / 'work' / 'history.json'}: is not valid JSON" in text
    assert (f"[encoder] {out / 'work' / 'encoder.ckpt.safetensors'}: is empty (0 bytes) where safetensors "
            "weights are expected; discarded it, training encoder from step 0") in text
    # the kept text-encoder start makes the retrained encoder the same
    assert same_weights(out / "encoder" / "encoder.safetensors", toy_run / "encoder" / "encoder.safetensors")


def test_walkthrough_refuses_unreadable_settings_and_folders_of_other_files(toy_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(toy_run, out)
    (out / "config.json").write_text('{"profile": "tiny", ')
    before = snapshot(out)
    assert main(["walkthrough", "--out", str(out), "--seed", "5", *SETTINGS]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{out / 'config.json'}: is not valid JSON" in line and "choose another --out" in line
    assert snapshot(out) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["walkthrough", "--out", str(other), *SETTINGS]) == 2
    assert "holds other files and no run (no config.json)" in one_error_line(capsys.readouterr().err)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


# --------------------------------------------------------------------------- interruption
def _walkthrough(out: Path, *interrupt: str) -> subprocess.CompletedProcess:
    """The walkthrough command in a fresh process under umask 022 (interrupted as
    ``tests/interrupted_walkthrough.py`` says when ``interrupt`` is given)."""
    script = [str(REPO / "tests" / "interrupted_walkthrough.py"), *interrupt, "--"] if interrupt else \
        ["-m", "xraygpt_lab"]
    argv = [sys.executable, *script, *([] if interrupt else ["walkthrough"]),
            "--out", str(out), "--seed", "5", "--quiet", "--save-every", "1", *SETTINGS]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "XRAYGPT_DEVICE": "cpu"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
                          preexec_fn=lambda: os.umask(0o022))


def test_a_walkthrough_killed_at_every_stage_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    """Ctrl-C and kill -9 at the encoder, the LLM and both alignment stages (some cut off in the
    middle of writing a checkpoint), each followed by a rerun: the same weights as one run
    straight through, a "resuming" line for each stage, and stage times summed over segments."""
    from xraygpt_lab.train.checkpoint import checkpoint_progress

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = _walkthrough(straight)
    assert done.returncode == 0, done.stderr
    for path in [straight, *straight.rglob("*")]:  # readable by others under umask 022
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    # the text encoder's tokenizer breaks ties in no fixed order: both runs start from the same one
    shutil.copytree(straight / "work" / "text_encoder_init", killed / "work" / "text_encoder_init")
    plan = [("encoder", "2", "INT", "after", None), ("llm", "2", "KILL", "before", "resuming encoder from step 2 of 4"),
            ("stage1", "3", "KILL", "after", "resuming llm from step 1 of 3"),
            ("stage2", "2", "INT", "before", "resuming stage1 from step 3 of 3")]
    spent = {}
    for stage, nth, name, when, says in plan:
        result = _walkthrough(killed, stage, nth, name, when)
        assert result.returncode == (130 if name == "INT" else -signal.SIGKILL), (stage, result.stderr[-2000:])
        assert says is None or says in result.stdout, (stage, result.stdout)
        if name == "INT":
            assert result.stderr.strip().splitlines()[-1] == "xraygpt-lab: interrupted"
        assert not (killed / "metrics.json").exists()
        spent[stage] = checkpoint_progress(killed / "work" / f"{stage}.ckpt.safetensors")[1]
    assert list(killed.glob("work/.llm.ckpt.safetensors.*.tmp")) == []  # the next run cleared the cut-off write
    final = _walkthrough(killed)
    assert final.returncode == 0, final.stderr
    assert "resuming stage2 from step 1 of 3" in final.stdout
    assert ("resumed encoder from step 2, llm from step 1, stage1 from step 3, stage2 from step 1"
            in final.stdout.splitlines()[-1])
    for name in ("encoder/encoder.safetensors", "llm/model.safetensors", "projection.safetensors"):
        assert same_weights(killed / name, straight / name), name
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["resumed"] == {"encoder": [2], "llm": [1], "stage1": [3], "stage2": [1]}
    for stage, seconds in spent.items():  # the time before each interruption is counted
        assert metrics["timings_s"][stage] >= round(seconds, 1) - 0.05, (stage, metrics["timings_s"], spent)


def test_a_second_walkthrough_into_the_same_folder_waits_for_the_first(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "XRAYGPT_DEVICE": "cpu"}
    with run_lock(out):  # the first writer (the notebooks' shared run takes the same lock)
        second = subprocess.Popen([sys.executable, "-m", "xraygpt_lab", "walkthrough", "--out", str(out), "--quiet",
                                   *SETTINGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                  cwd=REPO)
        try:
            assert second.stdout.readline().strip() == f"another walkthrough is writing to {out}; waiting for it"
            assert not out.exists()  # it writes nothing while it waits
        except BaseException:
            second.kill()
            raise
    try:
        assert second.stdout.readline().startswith("[device]")  # it goes on once the first is done
        assert (out / "config.json").is_file()
    finally:
        second.kill()
        second.wait()


# --------------------------------------------------------------------------- how files are written
def test_atomic_writes_fsync_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    from xraygpt_lab import atomic

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "a.json"
    atomic.atomic_write_text(target, "{}")
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert Path(events[0][1]).parent == tmp_path and events[0][1] != str(target)  # the temp file, flushed
    assert events[1:] == [("replace", str(target)), ("fsync", str(tmp_path))]
    events.clear()
    atomic.atomic_folder(tmp_path / "model", lambda d: (d / "w.bin").write_bytes(b"1"))
    flushed = [path for kind, path in events if kind == "fsync"]
    assert any(p.endswith("w.bin") for p in flushed) and events[-2] == ("replace", str(tmp_path / "model"))
    assert events[-1] == ("fsync", str(tmp_path))


def _small_model(kind: str):
    from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
    from xraygpt_lab.models.text_encoder import TextEncoder

    if kind == "encoder":
        return VisionEncoder(EncoderConfig(image_size=32, patch_size=8, embed_dim=16, depths=[1, 1],
                                           num_heads=[2, 2], window_size=2, projection_dim=16))
    return TextEncoder.from_corpus(REPORTS)


@pytest.mark.parametrize(("kind", "cut"), [("encoder", 1), ("encoder", 2), ("text", 1), ("text", 2), ("text", 3)])
def test_a_model_folder_never_holds_weights_without_their_config(kind, cut, tmp_path, monkeypatch):
    """A kill at any file write of ``save_pretrained`` (encoder: config, weights; text encoder:
    config, tokenizer, weights) leaves no weights file, the mark of a finished stage, so a rerun
    redoes the stage instead of failing on weights without their config."""
    from xraygpt_lab import atomic

    model = _small_model(kind)
    weights = "encoder.safetensors" if kind == "encoder" else "text_encoder.safetensors"
    writes: list[str] = []
    real_replace = os.replace

    def replace(src, dst):
        writes.append(Path(dst).name)
        if len(writes) == cut:
            raise KeyboardInterrupt  # killed here
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    folder = tmp_path / kind
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(folder)
    present = sorted(p.name for p in folder.iterdir())
    assert weights not in present and not [p for p in present if p.endswith(".tmp")], present
    with pytest.raises(RunFolderError, match="missing (encoder_config.json|text_encoder_config.json|"
                                             f"{weights})"):
        type(model).from_pretrained(folder)
    writes.clear()
    cut = 0  # no more kills
    model.save_pretrained(folder)  # a whole save, weights last
    assert writes[-1] == weights and type(model).from_pretrained(folder) is not None


def test_run_files_follow_the_umask_not_the_temp_file_defaults(tmp_path):
    from xraygpt_lab.atomic import atomic_write_text
    from xraygpt_lab.models.llm import save_llm, tiny_llm, train_tokenizer

    tokenizer = train_tokenizer(REPORTS * 10, vocab_size=300)
    old = os.umask(0o027)  # a group (the web server's) may read, others not
    try:
        atomic_write_text(tmp_path / "config.json", "{}")
        save_weights(tmp_path / "projection.safetensors", {"w": torch.ones(2)})
        save_llm(tiny_llm(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
                 tokenizer, tmp_path / "llm")
    finally:
        os.umask(old)
    for path in tmp_path.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o750 if path.is_dir() else 0o640), path
