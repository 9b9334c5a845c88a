"""Which server files a chat page may open: any (a notebook) or only those the instructor offered.

On the workshop page (:mod:`xraygpt_lab.widgets.app`) a participant types paths into the Path tab
and the dataset browser of a server that is not theirs. :class:`OfferedFiles` with a ``root``
resolves every such path inside that folder (relative paths start there; ``..``, absolute paths
elsewhere and links that lead out are refused with :class:`~xraygpt_lab.errors.PathOutsideError`)
and keeps the server's own folder names out of the messages shown in the page.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import PathOutsideError
from ..paths import inside

#: What a participant is told when a path leads outside the offered data.
OUTSIDE_MESSAGE = ("only the images offered on this page can be opened here (the data folder, "
                   "uploads and synthetic cases); upload your own image instead")


class OfferedFiles:
    """``OfferedFiles(None)``: every path as typed; ``OfferedFiles(root)``: files inside ``root`` only."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).resolve() if root is not None else None

    @property
    def restricted(self) -> bool:
        return self.root is not None

    def resolve(self, path: str | os.PathLike) -> Path:
        """The file or folder to open for ``path``; raises :class:`PathOutsideError` outside ``root``."""
        if self.root is None:
            return Path(path).expanduser()
        try:
            return inside(self.root, str(path).strip() or ".")
        except PathOutsideError:
            raise PathOutsideError(f"{path}: {OUTSIDE_MESSAGE}") from None

    def shown(self, path: str | os.PathLike) -> str:
        """``path`` as the page shows it: relative to ``root`` (``"."`` for ``root`` itself)."""
        if self.root is None:
            return str(path)
        return self.resolve(path).relative_to(self.root).as_posix()

    def hide(self, message: str) -> str:
        """``message`` with the server's folder replaced by "data folder" (restricted pages only)."""
        return message.replace(str(self.root), "data folder") if self.root is not None else message
