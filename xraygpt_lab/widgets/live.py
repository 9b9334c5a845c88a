"""Loss curves that redraw while a training runs: "watch the loss fall" on screen.

``LiveCurves`` is the ``on_step(stage, row)`` callback of ``train.loop.train_stage`` (and of
``pretrain_encoder``, ``align_stage``, ``run_walkthrough``, ``runs.ensure_tiny_run``). In a notebook
it shows one figure, one panel per stage, and replaces it in place every ``every`` steps (one
output, however long the training: the saved notebook keeps only the last picture). Outside
IPython it only records. Each panel plots the raw loss faintly and a running mean on top, and
names the stage's step count and latest value.

    live = LiveCurves()
    align_stage(model, data, stage, on_step=live)
    live.close()  # the final picture
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Loss parts recorded beside the total by some stages, and their names in the legend.
PART_KEYS = ("loss_contrastive", "loss_labels")
PART_NAMES = {"loss_contrastive": "MedCLIP (contrastive) part", "loss_labels": "token label part"}


def running_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each step (shorter at the start): ``[len(values)]``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x
    window = max(1, min(window, x.size))
    cumulative = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.size + 1)
    start = np.maximum(0, idx - window)
    return (cumulative[idx] - cumulative[start]) / (idx - start)


class LiveCurves:
    """Record ``(stage, row)`` pairs and redraw the loss curves in place (see the module docstring).

    ``every``: redraw after this many steps (and at most once per ``min_seconds``); ``window``:
    steps of the running mean; ``titles``: display names of stages (``{"stage1": "alignment 1"}``);
    ``together``: all stages in one panel, one colour each (to compare runs of the same task);
    ``lines``: labelled horizontal reference lines drawn in every panel (``{"chance: ln 48": 3.87}``).
    """

    def __init__(self, every: int = 10, window: int = 20, min_seconds: float = 0.5,
                 titles: dict[str, str] | None = None, width: float = 10.0, height: float = 2.8,
                 together: bool = False, title: str = "", lines: dict[str, float] | None = None) -> None:
        if every < 1 or window < 1:
            raise ValueError(f"every and window must be >= 1, got {every}, {window}")
        self.every, self.window, self.min_seconds = every, window, min_seconds
        self.titles = dict(titles or {})
        self.size = (width, height)
        self.together, self.title = together, title
        self.lines = dict(lines or {})
        self.losses: dict[str, list[float]] = {}
        self.parts: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self._handle: Any = None
        self._last_draw = 0.0
        self._steps = 0

    def __call__(self, stage: str, row: dict) -> None:
        self.losses.setdefault(stage, []).append(float(row["loss"]))
        step = len(self.losses[stage])
        for key in PART_KEYS:
            if row.get(key) is not None:
                self.parts.setdefault(stage, {}).setdefault(key, []).append((step, float(row[key])))
        self._steps += 1
        now = time.monotonic()
        if self._steps % self.every == 0 and now - self._last_draw >= self.min_seconds:
            self._last_draw = now
            self.draw()

    def figure(self):
        """The current picture as a matplotlib ``Figure`` (one panel per stage)."""
        from matplotlib.figure import Figure

        stages = list(self.losses) or ["(no steps yet)"]
        fig = Figure(figsize=self.size, dpi=100)
        if self.together:
            ax = fig.subplots()
            for i, stage in enumerate(self.losses):
                losses, color = self.losses[stage], f"C{i}"
                steps = np.arange(1, len(losses) + 1)
                ax.plot(steps, losses, color=color, lw=0.6, alpha=0.3)
                ax.plot(steps, running_mean(losses, self.window), color=color, lw=1.6,
                        label=f"{self.titles.get(stage, stage)} (now {running_mean(losses, self.window)[-1]:.3f})")
            self._reference_lines(ax)
            ax.set_title(self.title or "loss", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel("loss", fontsize=8)
            ax.tick_params(labelsize=8)
            if self.losses:
                ax.legend(fontsize=8)
            fig.tight_layout()
            return fig
        axes = fig.subplots(1, len(stages), squeeze=False)[0]
        for ax, stage in zip(axes, stages):
            losses = self.losses.get(stage, [])
            steps = np.arange(1, len(losses) + 1)
            if losses:
                ax.plot(steps, losses, color="tab:blue", lw=0.6, alpha=0.35)
                ax.plot(steps, running_mean(losses, self.window), color="tab:blue", lw=1.6, label="total")
            for (key, points), color in zip(self.parts.get(stage, {}).items(), ("tab:orange", "tab:green")):
                xs, ys = zip(*points)
                ax.plot(xs, running_mean(ys, self.window), color=color, lw=1.1, label=PART_NAMES[key])
            self._reference_lines(ax)
            title = self.titles.get(stage, stage)
            last = f", now {running_mean(losses, self.window)[-1]:.3f}" if losses else ""
            ax.set_title(f"{title}: {len(losses)} steps{last}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel("loss", fontsize=8)
            ax.tick_params(labelsize=8)
            if self.parts.get(stage):
                ax.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def _reference_lines(self, ax) -> None:
        for label, value in self.lines.items():
            ax.axhline(value, color="grey", ls=":", lw=1)
            ax.annotate(label, (1.0, value), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                        textcoords="offset points", ha="right", fontsize=8, color="grey")

    def draw(self) -> None:
        """Show the current picture, replacing the previous one (IPython only)."""
        try:
            from IPython import get_ipython
            from IPython.display import Image, display
        except ImportError:
            return
        if get_ipython() is None:
            return
        picture = Image(data=self.png())  # an image, whatever matplotlib backend the notebook runs
        if self._handle is None:
            self._handle = display(picture, display_id=True)
        else:
            self._handle.update(picture)

    def png(self) -> bytes:
        """The current picture as PNG bytes."""
        import io

        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def close(self) -> None:
        """Draw the final picture (after the last step)."""
        if self.losses:
            self.draw()


__all__ = ["LiveCurves", "running_mean"]
