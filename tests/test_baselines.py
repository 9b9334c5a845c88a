"""Baseline report generators."""
from __future__ import annotations

import pytest
import torch

from xraygpt_lab.eval.baselines import NORMAL_REPORT, always_normal_reports, nearest_neighbour_reports


def test_always_normal():
    assert always_normal_reports(3) == [NORMAL_REPORT] * 3
    with pytest.raises(ValueError):
        always_normal_reports(-1)


def test_nearest_neighbour_picks_most_similar_direction():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    reports = ["east", "north", "west"]
    query = torch.tensor([[10.0, 1.0], [0.1, 5.0], [-2.0, -0.5]])
    assert nearest_neighbour_reports(train, reports, query) == ["east", "north", "west"]


def test_nearest_neighbour_shape_errors():
    with pytest.raises(ValueError, match="embedding sizes differ"):
        nearest_neighbour_reports(torch.zeros(2, 3), ["a", "b"], torch.zeros(1, 4))
    with pytest.raises(ValueError, match="reports for"):
        nearest_neighbour_reports(torch.zeros(2, 3), ["a"], torch.zeros(1, 3))
