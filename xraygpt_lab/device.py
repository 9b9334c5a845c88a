"""One device choice for the whole toolkit: CUDA when present, else the CPU, overridable.

Every place that builds, trains, explains or chats with a model asks :func:`default_device`
(the walkthrough, the training loop, ``runs.load_run``, the notebooks' step-by-step cells, the
chat panel and the command line), so one setting moves all of them:

* an explicit argument (``--device cuda:1`` on the command line, ``device=`` in Python), else
* the environment variable ``XRAYGPT_DEVICE`` (e.g. ``XRAYGPT_DEVICE=cpu`` on a GPU machine to
  reproduce CPU numbers), else
* ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``.
"""
from __future__ import annotations

import os

import torch

from .errors import XrayGPTLabError

ENV_VAR = "XRAYGPT_DEVICE"


class DeviceError(XrayGPTLabError, ValueError):
    """A device that this machine does not have or that the toolkit does not know."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: ``device`` if given, else ``$XRAYGPT_DEVICE``, else CUDA when present.

    Raises :class:`DeviceError` (one line) for an unknown name or a device this machine lacks.
    """
    source = "device"
    if device is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if env:
            device, source = env, ENV_VAR
        else:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"{source}={device!r} is not a device name (use cpu, cuda or cuda:N): {exc}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{source}={device!r} asks for CUDA, but this machine has no usable CUDA GPU")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"{source}={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"{source}={device!r} asks for Apple MPS, which this machine lacks")
    elif resolved.type != "cpu":
        raise DeviceError(f"{source}={device!r}: the toolkit runs on cpu, cuda or mps")
    return resolved


def default_device() -> torch.device:
    """:func:`resolve_device` with nothing given: ``$XRAYGPT_DEVICE``, else CUDA when present, else CPU."""
    return resolve_device(None)


def describe_device(device: str | torch.device | None = None) -> str:
    """A short human-readable name, e.g. ``'cuda:0 (NVIDIA H200)'`` or ``'cpu (2 threads)'``."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if dev.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return str(dev)


def synchronize(device: str | torch.device) -> None:
    """Wait for queued work on ``device`` (for honest wall-clock timings; no-op on the CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
