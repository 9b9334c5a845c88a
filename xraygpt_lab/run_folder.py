"""The run-folder format: its file names, its lock, and reading and writing its files.

A run folder (written by ``train.walkthrough``, loaded by ``runs.load_run``) holds everything a
tool needs and nothing outside it is read: ``config.json``, ``encoder/`` (config + safetensors),
``llm/`` (Hugging Face config, ``model.safetensors``, tokenizer), ``projection.safetensors``,
``history.json`` (loss curves) and ``metrics.json`` (written last; its presence marks a complete
run). ``work/`` holds the checkpoints and caches of stages not yet finished.

This module sits on the ground floor (it imports only ``errors`` and ``atomic``; torch and
safetensors inside the functions that need them), so that the models, the training code and the
loader of trained runs all read and write the same format. A file that is there but unusable
(empty, truncated, garbage, a JSON list where an object belongs, tensors whose sizes do not
match their config) raises :class:`~xraygpt_lab.errors.CorruptFileError`, one line that names
the file and the fault; a missing one raises :class:`~xraygpt_lab.errors.RunFolderError`.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_write, atomic_write_text
from .errors import CorruptFileError, RunFolderError, one_line

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: Files of a complete run folder (``runs.load_run`` checks these; ``metrics.json`` marks the end).
RUN_FILES: tuple[str, ...] = (
    "config.json",
    "encoder/encoder_config.json",
    "encoder/encoder.safetensors",
    "llm/config.json",
    "llm/model.safetensors",
    "llm/tokenizer.json",
    "projection.safetensors",
)
COMPLETE_MARKER = "metrics.json"
#: The out-of-distribution calibration (``models.ood``), written beside the weights on first use.
OOD_FILE = "ood.safetensors"
#: Checkpoints and intermediate files of unfinished stages.
WORK_FOLDER = "work"


def missing_files(run_dir: str | os.PathLike) -> list[str]:
    """Files a complete run needs that ``run_dir`` lacks (``metrics.json`` included)."""
    run_dir = Path(run_dir)
    return [name for name in (*RUN_FILES, COMPLETE_MARKER) if not (run_dir / name).is_file()]


def lock_path(run_dir: str | os.PathLike) -> Path:
    """The lock file of a run folder: ``.<name>.lock`` beside it."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the run folder's lock (an exclusive ``flock`` on :func:`lock_path`): a second writer
    waits until the first is done. ``on_wait`` is called once if the lock is busy, before waiting."""
    import fcntl

    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------- JSON files
def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path``; ``CorruptFileError`` for anything else (empty, not JSON, a list)."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"missing {path.name} in {path.parent}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptFileError(path, "is not UTF-8 text (not a JSON file)") from None
    if not text.strip():
        raise CorruptFileError(path, f"is empty ({path.stat().st_size} bytes); a JSON object was expected")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(path, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise CorruptFileError(path, f"holds a JSON {_json_kind(data)} where an object {{...}} is expected")
    return data


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent))


def _json_kind(data: Any) -> str:
    return {list: "list", str: "string", bool: "true/false", type(None): "null"}.get(type(data), "number")


# ---------------------------------------------------------------------- safetensors
def save_weights(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> Path:
    """Atomic, fsynced ``safetensors.torch.save_file``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_header(path: str | os.PathLike) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor shapes and string metadata of a safetensors file, without reading the tensors.

    Checks that the file is whole: an empty, truncated or foreign file raises ``CorruptFileError``.
    """
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError)
        raise _unreadable(path, exc) from None


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file (on the CPU).

    ``RunFolderError`` when missing; ``CorruptFileError`` when empty, truncated or not safetensors.
    """
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            return {key: f.get_tensor(key) for key in f.keys()}, metadata
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError)
        raise _unreadable(path, exc) from None


def check_shapes(path: str | os.PathLike, expected: Mapping[str, Sequence[int]], against: str,
                 found: Mapping[str, Sequence[int]] | None = None, may_lack: Sequence[str] = (),
                 may_add: bool = False) -> None:
    """Refuse a weights file whose tensors do not fit ``expected`` (name → shape, what ``against``
    describes, e.g. ``encoder_config.json``), with one line that counts and names the differences.

    ``found``: the file's shapes when already read (several shards); ``may_lack``: names the loader
    fills in itself (tied weights); ``may_add``: extra tensors are ignored by the loader.
    """
    found = read_header(path)[0] if found is None else found
    sized = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    missing = [k for k in expected if k not in found and k not in may_lack]
    extra = [] if may_add else [k for k in found if k not in expected]
    problems = []
    if sized:
        k = sized[0]
        problems.append(f"{len(sized)} tensor(s) of other sizes ({k} is {list(found[k])} in the file, "
                        f"{list(expected[k])} by {against})")
    if missing:
        problems.append(f"{len(missing)} missing ({_names(missing)})")
    if extra:
        problems.append(f"{len(extra)} unexpected ({_names(extra)})")
    if problems:
        raise CorruptFileError(path, f"does not match {against}: " + "; ".join(problems))


def load_state(module: nn.Module, path: str | os.PathLike, against: str) -> nn.Module:
    """Load a safetensors state dict into ``module`` after :func:`check_shapes` (one-line errors)."""
    check_shapes(path, {k: tuple(v.shape) for k, v in module.state_dict().items()}, against)
    module.load_state_dict(load_weights(path)[0])
    return module


def save_model_folder(folder: str | os.PathLike, config: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                      config_file: str, weights_file: str, texts: Mapping[str, str] | None = None) -> Path:
    """Write a model folder: ``config_file`` (JSON) and any ``texts`` first, ``weights_file`` last.

    The weights file marks the folder complete (the walkthrough skips a stage that has it), so a
    process killed between the writes leaves no weights and the stage is redone, never a folder
    whose weights lack their config.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / config_file, dict(config))
    for name, text in (texts or {}).items():
        atomic_write_text(folder / name, text)
    save_weights(folder / weights_file, {k: v.detach() for k, v in state.items()}, {"format": "pt"})
    return folder


def load_model_folder(folder: str | os.PathLike, config_file: str, weights_file: str,
                      build: Callable[[dict[str, Any]], nn.Module], writer: str) -> nn.Module:
    """Read :func:`save_model_folder`'s folder: ``build(config)`` makes the module, then its weights
    are loaded with their sizes checked against the config. ``writer`` names what writes such a
    folder (for the missing-file message). Every fault is one line naming the file."""
    folder = Path(folder)
    for name in (config_file, weights_file):
        if not (folder / name).is_file():
            raise RunFolderError(f"{folder}: missing {name} (write it with {writer})")
    config = read_json(folder / config_file)
    try:
        module = build(config)
    except CorruptFileError:
        raise
    except Exception as exc:  # a config the model cannot be built from (the libraries raise assorted types)
        raise CorruptFileError(folder / config_file, f"does not describe a valid model ({one_line(exc)})") from None
    return load_state(module, folder / weights_file, against=config_file)


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"missing {path.name} in {path.parent}")
    return path


def _unreadable(path: Path, exc: Exception) -> CorruptFileError:
    """The error for a safetensors file the library refuses (what it said, made readable)."""
    size = path.stat().st_size
    if size == 0:
        return CorruptFileError(path, "is empty (0 bytes) where safetensors weights are expected")
    said = one_line(exc).replace("Error while deserializing header: ", "")
    return CorruptFileError(path, f"is not a readable safetensors file ({size} bytes; {said}): "
                                  "truncated, cut off while being written, or another kind of file")


def _names(keys: Sequence[str], most: int = 2) -> str:
    more = f", … {len(keys) - most} more" if len(keys) > most else ""
    return ", ".join(keys[:most]) + more
