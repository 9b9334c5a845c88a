"""Exception types shared by the whole toolkit."""
from __future__ import annotations

import os
from pathlib import Path


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class XrayGPTLabError(Exception):
    """Base class: an error the user can act on (the CLI prints its message on one line)."""


class ImageLoadError(XrayGPTLabError, ValueError):
    """An image file could not be read; the message names the file and the reason.

    ``reason`` is a short category without the file name ("not an image", "truncated or corrupt
    image", ...): readers and ``evaluate`` count skipped records by it.
    """

    def __init__(self, message: str, reason: str = "unreadable image") -> None:
        super().__init__(message)
        self.reason = reason


class RunFolderError(XrayGPTLabError, FileNotFoundError):
    """A trained run folder is missing a file or is malformed; the message says which."""


class CorruptFileError(RunFolderError):
    """A run-folder file exists but cannot be used: empty, truncated, not the expected format, or
    sizes that do not match its config. ``path`` is the file; the message names it and the fault."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the library said
        super().__init__(f"{self.path}: {self.reason}")

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def __reduce__(self):  # picklable (a worker process may raise it)
        return type(self), (self.path, self.reason)


class RecipeError(XrayGPTLabError, ValueError):
    """A training recipe setting is unknown or out of range; the message names the setting."""


class OutputPathError(XrayGPTLabError, ValueError):
    """A file a command was asked to write cannot be written there; checked before the work."""


class PathOutsideError(XrayGPTLabError, PermissionError):
    """A path leaves the folder it must stay in (``../``, an absolute path, a symlink out)."""
