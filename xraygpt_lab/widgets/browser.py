"""A small dataset browser for the chat panel: open a folder, flip through its radiographs, pick one.

Any layout :func:`xraygpt_lab.data.readers.open_dataset` reads works (XrayGPT / our synthetic
export, MIMIC-CXR-JPG, OpenI, a plain image folder). The reference report of the selected record
(when the dataset has one) is shown beside the thumbnail, so a student can compare the model's
answer with it. Without any dataset, "Draw" renders a case of the synthetic world on the fly
(:func:`xraygpt_lab.data.synthetic.world.render_case`).

With ``root`` (the workshop page), only folders inside ``root`` open: a typed path is taken from
``root``, and one that leads out of it (``..``, an absolute path elsewhere, a link) is refused.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import ipywidgets as widgets
import numpy as np

from ..data.readers.common import Dataset
from ..errors import XrayGPTLabError
from .html import ERROR, NOTICE, render_reference, render_status
from .offered import OfferedFiles
from .pictures import set_picture, thumbnail_png

#: ``on_choose(image_or_path, name, reference)``: what the browser hands to the chat panel.
ChooseCallback = Callable[[np.ndarray | Path, str, str | None], None]

#: At most this many records are listed in the drop-down (a MIMIC-CXR folder has 377,110).
MAX_LISTED = 2000


class DatasetBrowser(widgets.VBox):
    """Folder box + Open, a record drop-down with thumbnail and reference, "Use this image".

    ``on_choose`` receives the record's image path (or a synthetic image array), a display name
    and the reference summary (``None`` when unknown). ``offered``: which folders may be opened
    (:class:`~.offered.OfferedFiles`; default: any path as typed).
    """

    def __init__(self, on_choose: ChooseCallback, folder: str | os.PathLike | None = None,
                 synthetic_size: int = 128, offered: OfferedFiles | None = None) -> None:
        self.on_choose = on_choose
        self.synthetic_size = int(synthetic_size)
        self.dataset: Dataset | None = None
        self.offered = offered or OfferedFiles()
        shown = "" if folder is None else self.offered.shown(folder)  # not the server's own path
        self.folder = widgets.Text(value=shown, placeholder="a folder of the workshop data (empty = all of it)"
                                   if self.offered.restricted else "dataset folder",
                                   layout=widgets.Layout(width="100%"))
        self.open_button = widgets.Button(description="Open", icon="folder-open",
                                          layout=widgets.Layout(width="90px"))
        self.records = widgets.Dropdown(options=[], layout=widgets.Layout(width="100%"))
        self.preview = widgets.Image(format="png", layout=widgets.Layout(width="128px"))
        set_picture(self.preview, b"")
        self.reference = widgets.HTML()
        self.use_button = widgets.Button(description="Use this image", icon="check", disabled=True)
        self.seed = widgets.BoundedIntText(value=0, min=0, max=2**31 - 1, description="seed",
                                           layout=widgets.Layout(width="150px"))
        self.draw_button = widgets.Button(description="Draw case", icon="random",
                                          tooltip="render this case of the synthetic world")
        self.status = widgets.HTML()
        self.open_button.on_click(lambda _: self.open_folder(self.folder.value))
        self.use_button.on_click(lambda _: self.use())
        self.draw_button.on_click(lambda _: self.draw(self.seed.value))
        self.records.observe(lambda change: self._preview(change["new"]), names="value")
        super().__init__([
            widgets.HBox([self.folder, self.open_button]),
            self.records,
            widgets.HBox([self.preview, self.reference]),
            self.use_button,
            widgets.HTML("<hr style='margin:4px 0'><small>or a case of the synthetic world:</small>"),
            widgets.HBox([self.seed, self.draw_button]),
            self.status,
        ])

    def _say(self, text: str, kind: str = NOTICE) -> None:
        self.status.value = render_status(text, kind)

    def open_folder(self, folder: str | os.PathLike) -> int:
        """Read the dataset at ``folder``; returns the number of records (0 and a message on failure)."""
        from ..data.readers import open_dataset

        folder = str(folder).strip()
        if not folder and not self.offered.restricted:
            self._say("Type the path of a dataset folder first.", ERROR)
            return 0
        try:
            dataset = open_dataset(self.offered.resolve(folder))
        except (XrayGPTLabError, OSError, ValueError) as exc:  # no dataset there, outside, or unreadable
            self._say(f"Could not open {folder or 'the data folder'}: {self.offered.hide(str(exc))}", ERROR)
            return 0
        records = [r for r in dataset.records if r.image_path is not None]
        self.dataset = dataset
        options = [(f"{r.image_id}" + (f" ({r.split})" if r.split else ""), i)
                   for i, r in enumerate(records[:MAX_LISTED])]
        self._listed = records
        self.records.options = options
        self.use_button.disabled = not options
        more = f", showing the first {MAX_LISTED}" if len(records) > MAX_LISTED else ""
        skipped = sum(dataset.skipped.values())
        self._say(f"{dataset.layout} layout: {len(records)} images{more}"
                  + (f"; {skipped} bad rows skipped" if skipped else "") + ".")
        if options:
            self.records.value = 0
            self._preview(0)
        return len(records)

    def _preview(self, index: int | None) -> None:
        from ..data.readers.images import load_image
        from ..errors import ImageLoadError

        if index is None or not getattr(self, "_listed", None):
            return
        record = self._listed[index]
        try:
            set_picture(self.preview, thumbnail_png(load_image(record.image_path), 128))
        except ImageLoadError as exc:
            set_picture(self.preview, b"")
            self._say(self.offered.hide(str(exc)), ERROR)
        text = record.summary or record.report
        self.reference.value = render_reference(text)

    def use(self, index: int | None = None) -> None:
        """Hand record ``index`` (default: the selected one) to ``on_choose``."""
        records = getattr(self, "_listed", None)
        index = self.records.value if index is None else index
        if not records or index is None:
            self._say("Open a dataset folder and pick an image first.", ERROR)
            return
        record = records[int(index)]
        self.on_choose(record.image_path, record.image_id, record.summary or record.report)

    def draw(self, seed: int) -> None:
        """Render synthetic case ``seed`` at the model's input size and hand it to ``on_choose``."""
        from ..data.synthetic.world import render_case

        try:
            case = render_case(int(seed), size=self.synthetic_size)
        except ValueError as exc:
            self._say(str(exc), ERROR)
            return
        set_picture(self.preview, thumbnail_png(case.image, 128))
        self.reference.value = render_reference(case.summary)
        self.on_choose(case.image, f"synthetic case {case.seed}", case.summary)
