"""Atomic, durable file writes: a temp file (or folder) in the same folder, fsynced, then ``os.replace``.

An interrupted save (Ctrl-C, a full disk, a killed process) leaves the previous file intact,
never a half-written one; the data is flushed to the disk (``fsync``) before the rename and the
folder after it, so a power cut cannot leave an empty file under the final name either. Files
get the permissions the user's umask gives an ordinary new file (``0644`` under umask ``022``),
not the ``0600`` / ``0700`` of temporary files, so that another account (a web server) can read
a run folder when the umask allows it. Every checkpoint, export and run-folder file goes through here.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

_UMASK_LOCK = threading.Lock()
#: Temp files and folders are ``.<name>.<random>.tmp`` beside their target: a kill leaves only
#: such names behind (:func:`leftovers` finds them).
TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process's umask (read from ``/proc`` where it is shown, else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """Permissions of a new folder under the current umask (``0o777 & ~umask``)."""
    return 0o777 & ~current_umask()


def fsync_path(path: str | os.PathLike) -> None:
    """Flush ``path`` (a file or a folder) to the disk. Folders that cannot be opened for
    syncing (some file systems, Windows) are skipped: the rename is still atomic there."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if Path(path).is_dir():
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not Path(path).is_dir():
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, fsync it, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_folder(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_folder)`` on a temp folder beside ``path``, then put it in ``path``'s place.

    Every file and folder written is given the umask's permissions and fsynced before the
    rename, so ``path`` is either the old folder or the complete new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX))
    try:
        write(tmp)
        _settle(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old{TEMP_SUFFIX}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_path(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def leftovers(folder: str | os.PathLike) -> list[Path]:
    """Temp files and folders under ``folder`` that interrupted atomic writes left behind
    (``.<name>.<8 random characters>.tmp`` and ``.<name>.old.tmp``), deepest first."""
    pattern = re.compile(r"\..+\.([a-z0-9_]{8}|old)" + re.escape(TEMP_SUFFIX))
    found = [p for p in Path(folder).rglob(f".*{TEMP_SUFFIX}") if pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _settle(folder: Path) -> None:
    """Give ``folder``'s tree the umask's permissions and flush it to the disk (files first)."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            os.chmod(os.path.join(root, name), file_mode())
            fsync_path(os.path.join(root, name))
        os.chmod(root, folder_mode())
        fsync_path(root)
