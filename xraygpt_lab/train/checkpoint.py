"""Training checkpoints: trainable weights + optimiser + scheduler + RNG in ONE safetensors file.

Everything needed to resume a stage exactly lives in a single file, written atomically and
fsynced (``run_folder.save_weights``), so an interrupted save leaves the previous checkpoint
intact. Tensors go into the safetensors body (``model.*``, ``optim.<param>.<key>``,
``rng.torch``, ``rng.cuda.<i>``); small structured state (step, scheduler, optimiser groups,
loss history) goes into the safetensors string metadata as JSON. Nothing is unpickled on load.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..errors import CorruptFileError, RunFolderError
from ..run_folder import load_weights, read_header, save_weights


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require gradients, by name (what a stage changes)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def trained_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Buffers of the modules that own a trainable parameter (BatchNorm statistics change with them)."""
    out = {}
    for prefix, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            for name, buf in module.named_buffers(recurse=False):
                if buf is not None:
                    out[f"{prefix}.{name}" if prefix else name] = buf.detach().cpu().contiguous()
    return out


def checkpoint_progress(path: str | os.PathLike) -> tuple[int, float]:
    """``(step, seconds)`` of a checkpoint (:func:`save_checkpoint` or the encoder's), read from its
    header only: the step it resumes from and the training time spent to reach it (0 when not
    recorded). ``CorruptFileError`` when the file is empty, truncated or not a checkpoint."""
    _, metadata = read_header(path)
    try:
        step = int(metadata["step"])
        seconds = float(metadata.get("seconds", 0.0))
    except (KeyError, ValueError):
        raise CorruptFileError(path, "is a safetensors file but not a training checkpoint (no step recorded)") from None
    if step < 0:
        raise CorruptFileError(path, f"records step {step}; a checkpoint's step is >= 0")
    return step, seconds


def checkpoint_extra(path: str | os.PathLike) -> dict:
    """The ``extra`` entries a checkpoint was saved with (:func:`save_checkpoint`), read from its
    header only; ``{}`` when it has none. ``CorruptFileError`` when they are not a JSON object."""
    _, metadata = read_header(path)
    try:
        extra = json.loads(metadata.get("extra", "{}"))
    except ValueError:
        extra = None
    if not isinstance(extra, dict):
        raise CorruptFileError(path, "records its extra entries in a form that is not a JSON object")
    return extra


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """The optimiser's per-parameter state as ``optim.<index>.<key>`` tensors, and its param
    groups as JSON (for safetensors metadata)."""
    opt = optimizer.state_dict()
    tensors = {}
    for index, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, json.dumps(opt["param_groups"])


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: str) -> None:
    """Inverse of :func:`optimizer_state` (``tensors`` may hold other keys too)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(groups)})
    _match_layouts(optimizer)


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded per-parameter state tensor its parameter's memory layout. A checkpoint
    stores tensors contiguous, but a parameter may be strided otherwise (the encoder trains
    ``channels_last``), and torch's fused AdamW walks a parameter and its moments as flat memory:
    with mismatched layouts it would pair the wrong elements (the per-tensor loop does not)."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, step: int,
                    history: list[dict], extra: dict | None = None, seconds: float = 0.0) -> Path:
    """Write everything needed to resume training at ``step`` into one safetensors file;
    ``seconds``: training time spent to reach ``step`` (summed over resumed segments)."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in trainable_state(model).items()}
    tensors.update({f"buffer.{k}": v for k, v in trained_buffers(model).items()})
    optim_tensors, groups = optimizer_state(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    metadata = {
        "step": str(step),
        "optimizer_groups": groups,
        "scheduler": json.dumps(scheduler.state_dict()),
        "history": json.dumps(history),
        "extra": json.dumps(extra or {}),
        "seconds": f"{seconds:.3f}",
    }
    return save_weights(path, tensors, metadata)


class Restored(NamedTuple):
    """What :func:`load_checkpoint` restored besides the weights."""

    step: int
    history: list[dict]
    extra: dict
    seconds: float  # training time spent to reach ``step``


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler) -> Restored:
    """Restore a :func:`save_checkpoint` file in place; returns ``(step, history, extra, seconds)``."""
    tensors, metadata = load_weights(path)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        raise RunFolderError(
            f"{path}: checkpoint holds {sorted(weights)} but the model trains {sorted(expected)}"
        )
    sized = [n for n, v in weights.items() if v.shape != params[n].shape]
    if sized:
        raise CorruptFileError(path, f"checkpoint's {sized[0]} is {list(weights[sized[0]].shape)} but the model's "
                                     f"is {list(params[sized[0]].shape)} ({len(sized)} tensor(s) of other sizes)")
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
        for key, value in tensors.items():
            if key.startswith("buffer.") and key[len("buffer."):] in buffers:
                buffers[key[len("buffer."):]].copy_(value)
    load_optimizer_state(optimizer, tensors, metadata["optimizer_groups"])
    scheduler.load_state_dict(json.loads(metadata["scheduler"]))
    torch.set_rng_state(tensors["rng.torch"])
    cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    cuda_states = [tensors[k] for k in cuda_keys]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return Restored(int(metadata["step"]), json.loads(metadata["history"]), json.loads(metadata.get("extra", "{}")),
                    float(metadata.get("seconds", 0.0)))
