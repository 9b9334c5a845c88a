"""Exception types shared by the whole toolkit."""
from __future__ import annotations


class XrayGPTLabError(Exception):
    """Base class: an error the user can act on (the CLI prints its message on one line)."""


class ImageLoadError(XrayGPTLabError, ValueError):
    """An image file could not be read; the message names the file and the reason."""


class RunFolderError(XrayGPTLabError, FileNotFoundError):
    """A trained run folder is missing a file or is malformed; the message says which."""


class RecipeError(XrayGPTLabError, ValueError):
    """A training recipe setting is unknown or out of range; the message names the setting."""
