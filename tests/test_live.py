"""``widgets.live.LiveCurves``: every training step reaches the live plot, which draws what it got."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xraygpt_lab.train.loop import train_stage
from xraygpt_lab.train.schedule import StageConfig
from xraygpt_lab.widgets.live import LiveCurves, running_mean


def test_running_mean_averages_the_last_window() -> None:
    assert np.allclose(running_mean([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    assert np.allclose(running_mean([5.0], 10), [5.0]) and running_mean([], 3).size == 0


class _Regression(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(4, 1)

    def forward(self, x, y):
        return SimpleNamespace(loss=torch.nn.functional.mse_loss(self.w(x), y))


def test_train_stage_feeds_every_step_to_the_live_plot() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def batch(step, rng):
        idx = torch.tensor(rng.sample(range(64), 16))
        return {"x": x[idx], "y": y[idx]}

    live = LiveCurves(every=5)
    stage = StageConfig(name="toy", steps=40, batch_size=16, init_lr=0.1, min_lr=0.01, warmup_lr=0.01, warmup_steps=2)
    result = train_stage(_Regression(), stage, batch, progress=False, on_step=live)
    assert live.losses["toy"] == [row["loss"] for row in result.history]  # every step, in order
    assert np.mean(live.losses["toy"][-5:]) < 0.2 * np.mean(live.losses["toy"][:5])  # the curve falls
    fig = live.figure()
    assert len(fig.axes) == 1 and "toy: 40 steps" in fig.axes[0].get_title()
    assert live.png().startswith(b"\x89PNG")


def test_stages_get_their_own_panels_and_loss_parts_their_own_lines() -> None:
    live = LiveCurves(titles={"encoder": "vision encoder"})
    for step in range(6):
        live("encoder", {"loss": 2.0 - 0.1 * step, "loss_contrastive": 1.0 if step % 2 else None, "loss_labels": 1.0})
        live("stage1", {"loss": 1.0})
    fig = live.figure()
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["vision encoder", "stage1"]
    assert len(fig.axes[0].lines) == 4 and len(fig.axes[1].lines) == 2  # raw + mean, and the two parts
    assert live.parts["encoder"]["loss_contrastive"] == [(2, 1.0), (4, 1.0), (6, 1.0)]
    with pytest.raises(ValueError):
        LiveCurves(every=0)


def test_together_draws_every_stage_in_one_panel() -> None:
    live = LiveCurves(together=True, title="two starts", lines={"chance": 2.5})
    for step in range(4):
        live("random", {"loss": 3.0 - step})
        live("concepts", {"loss": 1.0})
    fig = live.figure()
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "two starts" and len(fig.axes[0].lines) == 5
    assert fig.axes[0].lines[-1].get_ydata()[0] == 2.5  # the reference line
