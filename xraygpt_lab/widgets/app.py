"""The workshop page: the chat panel as Voilà serves it to a room (``scripts/serve_chat.sh``).

A participant reaches only what the instructor offered: the data folder chosen when the server
starts (``XRAYGPT_CHAT_DATASET``; default: a synthetic set written once by :func:`workshop_data`),
uploads, and synthetic cases drawn on the fly. Every path typed into the page is resolved inside
that folder and refused outside it (:class:`~xraygpt_lab.widgets.offered.OfferedFiles`).
``XRAYGPT_CHAT_RUN`` names the run folder, or ``reference`` (default: the reference run shipped with
the toolkit, so the page opens in seconds; the tiny run, trained once, if this install lacks it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .chat import ChatPanel

RUN_ENV = "XRAYGPT_CHAT_RUN"
DATA_ENV = "XRAYGPT_CHAT_DATASET"
#: The default offered set: held-out synthetic cases (the walkthrough trains on other seeds).
WORKSHOP_CASES, WORKSHOP_SEED = 48, 31337


def default_data_dir() -> Path:
    """``<repo>/data/workshop`` in a checkout, else ``~/.cache/xraygpt-lab/workshop``."""
    from ..runs import _repo_root

    root = _repo_root()
    return root / "data" / "workshop" if root is not None else Path.home() / ".cache" / "xraygpt-lab" / "workshop"


def workshop_data(folder: str | os.PathLike | None = None) -> Path:
    """The offered data folder: ``folder``, else ``$XRAYGPT_CHAT_DATASET``, else the default synthetic
    set (:func:`default_data_dir`, written on first use: 48 cases, a few seconds)."""
    from ..data.synthetic.export import export_dataset

    chosen = folder or os.environ.get(DATA_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{DATA_ENV}={chosen}: no such folder")
        return path.resolve()
    path = default_data_dir()
    if not (path / "filter_cap.json").is_file():
        export_dataset(path, n=WORKSHOP_CASES, seed=WORKSHOP_SEED, progress=False, workers=1, overwrite=True)
    return path.resolve()


def chat_run(run: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> Path:
    """The page's run folder: ``run``, else ``$XRAYGPT_CHAT_RUN`` (either may be ``reference``), else
    the reference run shipped with the toolkit (``runs.reference_or_tiny_run``: the tiny run, with a
    note, when this install lacks it)."""
    from ..runs import reference_or_tiny_run, resolve_run

    chosen = run or os.environ.get(RUN_ENV)
    return resolve_run(chosen) if chosen else reference_or_tiny_run(log=log)


def workshop_panel(run: str | os.PathLike | None = None, data: str | os.PathLike | None = None) -> ChatPanel:
    """The chat panel restricted to the offered data, its browser already open on it."""
    root = workshop_data(data)
    run = chat_run(run)
    panel = ChatPanel(run, dataset=root, data_root=root)
    if panel.browser.open_folder(""):
        panel.sources.selected_index = 1  # the Dataset tab
    return panel
