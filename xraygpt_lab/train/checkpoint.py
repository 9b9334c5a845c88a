"""Training checkpoints: trainable weights + optimiser + scheduler + RNG in ONE safetensors file.

Everything needed to resume a stage exactly lives in a single file, written atomically (temp file
in the same folder, then ``os.replace``), so an interrupted save leaves the previous checkpoint
intact. Tensors go into the safetensors body (``model.*``, ``optim.<param>.<key>``,
``rng.torch``, ``rng.cuda.<i>``); small structured state (step, scheduler, optimiser groups,
loss history) goes into the safetensors string metadata as JSON. Nothing is unpickled on load.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..atomic import atomic_write  # noqa: F401  (re-exported: train.checkpoint.atomic_write)
from ..errors import RunFolderError




def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


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


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomic ``safetensors.torch.save_file``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file; ``RunFolderError`` when missing."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"missing {path.name} in {path.parent}")
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return tensors, metadata


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


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, step: int,
                    history: list[dict], extra: dict | None = None) -> Path:
    """Write everything needed to resume training at ``step`` into one safetensors file."""
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
    }
    return save_weights(path, tensors, metadata)


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, list[dict], dict]:
    """Restore a :func:`save_checkpoint` file in place; returns ``(step, history, extra)``."""
    tensors, metadata = load_weights(path)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        raise RunFolderError(
            f"{path}: checkpoint holds {sorted(weights)} but the model trains {sorted(expected)}"
        )
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
    return int(metadata["step"]), json.loads(metadata["history"]), json.loads(metadata.get("extra", "{}"))
