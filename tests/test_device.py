"""One device choice for the toolkit (xraygpt_lab/device.py), and the places that follow it."""
from __future__ import annotations

import pytest
import torch

from xraygpt_lab.cli import main
from xraygpt_lab.device import ENV_VAR, DeviceError, default_device, describe_device, resolve_device


def test_default_is_cuda_when_present_else_cpu(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")


def test_environment_overrides_and_an_argument_overrides_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cpu")
    assert default_device() == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv(ENV_VAR, "  ")  # blank: as if unset
    assert default_device().type in ("cpu", "cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_refused_in_one_line(monkeypatch):
    with pytest.raises(DeviceError, match="no usable CUDA GPU") as info:
        resolve_device("cuda")
    assert "\n" not in str(info.value)
    monkeypatch.setenv(ENV_VAR, "cuda:1")
    with pytest.raises(DeviceError, match=ENV_VAR):  # the message names where the setting came from
        default_device()


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:x", "", "meta"])
def test_unknown_names_are_refused(name):
    with pytest.raises(DeviceError):
        resolve_device(name)


def test_describe_names_the_device():
    assert describe_device("cpu").startswith("cpu (")


def test_training_loop_follows_the_device(monkeypatch):
    from xraygpt_lab.train.loop import make_accelerator

    monkeypatch.setenv(ENV_VAR, "cpu")
    accelerator = make_accelerator()
    assert accelerator.device.type == "cpu" and accelerator.mixed_precision == "no"


@pytest.mark.slow
def test_load_run_puts_the_model_on_the_chosen_device(monkeypatch, capsys):
    from xraygpt_lab.runs import ensure_tiny_run, load_run

    run = ensure_tiny_run(progress=False)
    capsys.readouterr()  # drop the training log when this test is the first to need the run
    monkeypatch.setenv(ENV_VAR, "cpu")
    model = load_run(run)
    assert model.device.type == "cpu" and next(model.llm.parameters()).device.type == "cpu"
    assert next(model.encoder.parameters()).device.type == "cpu"


def test_cli_refuses_a_bad_device_in_one_line(tmp_path, capsys):
    status = main(["walkthrough", "--out", str(tmp_path / "run"), "--device", "gpu0", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "gpu0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before anything was written
