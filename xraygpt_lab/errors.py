"""Exception types shared by the whole toolkit."""
from __future__ import annotations


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


class RecipeError(XrayGPTLabError, ValueError):
    """A training recipe setting is unknown or out of range; the message names the setting."""


class OutputPathError(XrayGPTLabError, ValueError):
    """A file a command was asked to write cannot be written there; checked before the work."""


class PathOutsideError(XrayGPTLabError, PermissionError):
    """A path leaves the folder it must stay in (``../``, an absolute path, a symlink out)."""
