"""Reference systems every generated-report score is read against.

- *always normal*: the same normal report for every image — what a model that ignores the
  image and bets on the majority class scores (a floor for CE and a surprisingly high ROUGE).
- *nearest neighbour*: the report of the most similar training image under the vision
  encoder's L2-normalised embedding (retrieval baselines as in Endo et al. 2021, "CXR-RePaiR").
- *image-blind*: the trained model with the image withheld; lives with the model
  (``xraygpt_lab.models.xraygpt``) because it needs the model.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

#: A typical normal chest radiograph summary in the synthetic world's register.
NORMAL_REPORT = (
    "The heart size is normal. The mediastinal contours are unremarkable. The lungs are clear. "
    "There is no pleural effusion or pneumothorax. No acute osseous abnormality. "
    "No acute cardiopulmonary process."
)


def always_normal_reports(n: int, report: str = NORMAL_REPORT) -> list[str]:
    """``n`` copies of a normal report."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [report] * n


def nearest_neighbour_reports(train_embeddings: torch.Tensor, train_reports: Sequence[str],
                              query_embeddings: torch.Tensor) -> list[str]:
    """For each query image, the report of the training image with the highest cosine similarity.

    ``train_embeddings`` is ``[N, p]`` and ``query_embeddings`` ``[M, p]`` (any scale: rows are
    normalised here). Returns ``M`` reports.
    """
    if train_embeddings.ndim != 2 or query_embeddings.ndim != 2:
        raise ValueError("embeddings must be 2-D [items, dim]")
    if train_embeddings.shape[1] != query_embeddings.shape[1]:
        raise ValueError(f"embedding sizes differ: {train_embeddings.shape[1]} vs {query_embeddings.shape[1]}")
    if len(train_reports) != train_embeddings.shape[0] or len(train_reports) == 0:
        raise ValueError(f"{len(train_reports)} reports for {train_embeddings.shape[0]} training embeddings")
    train = torch.nn.functional.normalize(train_embeddings.float(), dim=-1)  # [N, p]
    query = torch.nn.functional.normalize(query_embeddings.float().to(train.device), dim=-1)  # [M, p]
    nearest = (query @ train.T).argmax(dim=-1)  # [M]
    return [train_reports[i] for i in nearest.tolist()]
