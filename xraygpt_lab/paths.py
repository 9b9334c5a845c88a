"""Where the toolkit may read and write: containment in a folder, and output files checked early.

* :func:`inside` resolves a path (``..``, absolute paths and symlinks followed) and refuses it
  with :class:`PathOutsideError` unless it stays in a given folder. Dataset readers use it for ids
  taken from metadata files, the workshop chat page for every path a participant types.
* :func:`check_output_file` is what every command runs on ``--out`` *before* its work, so that a
  read-only folder, a folder given as a file, or an output that is also the input fails in a
  second with one line, not after the whole job. The write itself goes through
  :func:`xraygpt_lab.atomic.atomic_write`.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from xraygpt_lab.errors import OutputPathError, PathOutsideError


def inside(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` (relative paths are taken from ``root``) resolved, if it lies within ``root``.

    Symlinks are followed on both sides, so a link inside ``root`` that points out is refused.
    Raises :class:`PathOutsideError` naming the path otherwise.
    """
    base = Path(root).resolve()
    candidate = Path(path).expanduser()
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if resolved != base and base not in resolved.parents:
        raise PathOutsideError(f"{path}: outside the folder {root}")
    return resolved


def is_inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True when :func:`inside` accepts ``path``."""
    try:
        inside(root, path)
    except PathOutsideError:
        return False
    return True


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def check_output_file(path: str | os.PathLike, *, option: str = "--out",
                      inputs: Iterable[str | os.PathLike] = (), suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output file that cannot be written (one-line ``OutputPathError``).

    Refused: an existing folder, a parent that is a file, a folder the process may not create a
    file in (probed with a temp file, which also catches read-only file systems), a path equal to
    one of ``inputs``, and a suffix not in ``suffixes`` (when given). Creates nothing that stays.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputPathError(f"{option} {path}: expected a {' or '.join(suffixes)} file")
    for source in inputs:
        source = Path(source)
        same = source.exists() and path.exists() and os.path.samefile(source, path)
        if same or source.resolve() == path.resolve():
            raise OutputPathError(f"{option} {path} is also the input file; write to another file")
    folder = path.parent if path.parent.exists() else _existing_ancestor(path)
    if not folder.is_dir():
        raise OutputPathError(f"{option} {path}: {folder} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise OutputPathError(f"{option} {path}: cannot write in {folder} ({exc.strerror or exc})") from None
    return path
