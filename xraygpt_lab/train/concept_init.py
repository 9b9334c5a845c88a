"""A least-squares start for the linear layer (tiny profile only): image tokens → concept tokens.

XrayGPT starts its one linear layer from random weights (arXiv 2306.07971, Sec. 3.2), and
Vicuna-7B reads whatever soft tokens it writes. The tiny LLM reads only what its grounded
fine-tuning taught it (``train.grounding``): one concept token (``<lung_lesion_left>``) per
finding among ``<blank>`` fillers. So the tiny profile can start the layer where each image token
already lands on the concept of the finding under it: the ridge regression

    ``W, b = argmin Σ_{m,n} ‖W · f_mn + b − c_mn‖² + λ ‖W‖²``

(closed form, Hoerl & Kennard 1970) from the stage-1 encoder tokens ``f_mn`` to targets ``c_mn``:
the LLM's input embedding of the concept whose mask covers token cell ``n`` of image ``m`` (the
mean of the concepts where several do, ``<blank>`` where none does; with graded concepts, the
finding's graded concept, ``<pleural_effusion_left_large>``). The cell targets are the
encoder's own per-token label targets (``label_supervision.token_targets``), so this needs the
synthetic world's masks; the ``full`` profile keeps XrayGPT's random start.

Stage 1 still trains the layer with the language-model loss (XrayGPT's objective): the start alone
writes poor reports (CE macro-F1 0.44–0.45 against 0.69–0.74 after stage 1, two trainings), but
stage 1 from it passes on findings the random start loses — in three of four trainings
(docs/design-notes.md): the phrase of a lung nodule gains 0.9–1.2 instead of 0.6–0.9 nats from the nodule.
"""
from __future__ import annotations

import torch
from torch import nn

from .grounding import CONCEPT_TOKENS, GRADED, GRADED_TOKENS, concept_columns, finding_token
from .label_supervision import finding_columns


def concept_targets(token_labels: torch.Tensor, concepts: torch.Tensor, blank: torch.Tensor) -> torch.Tensor:
    """Per-token target embeddings ``[M, N, d]`` from ``token_labels [M, N, L]`` (multi-hot over
    :func:`grounding.concept_columns`), ``concepts`` ``[L, d]`` (or ``[M, L, d]``, one table per
    image: graded concepts) and the filler ``blank [d]``."""
    if token_labels.dim() != 3 or token_labels.shape[-1] != concepts.shape[-2] or concepts.dim() not in (2, 3) \
            or (concepts.dim() == 3 and concepts.shape[0] != token_labels.shape[0]):
        raise ValueError(f"token_labels must be [images, tokens, {concepts.shape[-2]}] for concepts "
                         f"{list(concepts.shape)}, got {list(token_labels.shape)}")
    hits = token_labels.to(concepts.dtype)  # [M, N, L]
    count = hits.sum(-1, keepdim=True)  # [M, N, 1]
    mean = (hits @ concepts) / count.clamp(min=1)  # [M, N, d]
    return torch.where(count > 0, mean, blank.expand_as(mean))


def ridge_fit(features: torch.Tensor, targets: torch.Tensor,
              ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Closed-form ridge regression of ``targets [M, N, d]`` on ``features [M, N, d_v]``.

    Returns ``weight [d, d_v]`` and ``bias [d]`` (``nn.Linear`` layout) and the fit's R² over all
    tokens. ``ridge`` is λ relative to the mean squared feature (scale-free). Float64 solve.
    """
    if features.dim() != 3 or targets.dim() != 3 or features.shape[:2] != targets.shape[:2]:
        raise ValueError(f"features [M, N, d_v] and targets [M, N, d] must share M and N; got "
                         f"{list(features.shape)} and {list(targets.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    x = features.reshape(-1, features.shape[-1]).double()  # [M*N, d_v]
    y = targets.reshape(-1, targets.shape[-1]).double()  # [M*N, d]
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc  # [d_v, d_v]
    lam = ridge * float(gram.diagonal().mean())
    w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ yc)  # [d_v, d]
    residual = yc - xc @ w
    r2 = 1.0 - float((residual ** 2).sum() / (yc ** 2).sum().clamp(min=1e-12))
    bias = y_mean - x_mean @ w
    return w.T.to(features.dtype), bias.to(features.dtype), r2


def _token_ids(tokenizer, tokens: list[str]) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError("the tokenizer lacks the concept tokens of train.grounding (a tiny-profile LLM "
                         "trained with the same graded_concepts setting has them)")
    return ids


def graded_tables(findings: list[list], table: torch.Tensor, embeddings: torch.Tensor, tokenizer) -> torch.Tensor:
    """One concept table per image ``[M, L, d]``: ``table [L, d]`` with each graded finding's
    column(s) replaced by its graded concept's embedding (``grounding.finding_token``)."""
    columns = concept_columns()
    graded_ids = dict(zip(GRADED_TOKENS, _token_ids(tokenizer, list(GRADED_TOKENS))))
    out = table.expand(len(findings), *table.shape).clone()  # [M, L, d]
    for m, case in enumerate(findings):
        for f in case:
            if f.observation in GRADED and f.severity is not None:
                out[m, finding_columns(f, columns)] = embeddings[graded_ids[finding_token(f, graded=True)]]  # [d]
    return out


def init_projection_from_concepts(projection: nn.Linear, embeddings: torch.Tensor, tokenizer,
                                  features: torch.Tensor, token_labels: torch.Tensor, ridge: float = 1e-3,
                                  graded_findings: list[list] | None = None) -> float:
    """Set ``projection`` to the ridge fit of the concept targets; returns the fit's R².

    ``embeddings`` ``[vocab, d]``: the LLM's input embeddings; ``tokenizer`` holds the concept
    tokens (``grounding.CONCEPT_TOKENS``); ``features`` ``[M, N, d_v]`` the frozen encoder's tokens
    of the images whose per-token label targets are ``token_labels`` ``[M, N, L]``.
    ``graded_findings``: the images' findings, for an LLM with graded concepts (each graded
    finding's cells then target its graded concept).
    """
    ids = _token_ids(tokenizer, list(CONCEPT_TOKENS))  # every concept column, then <blank>
    vocab = embeddings.detach().float().cpu()  # [vocab, d]  (the fit runs on the CPU in float64)
    table = vocab[ids]  # [L + 1, d]
    concepts = table[:-1] if graded_findings is None else graded_tables(graded_findings, table[:-1], vocab, tokenizer)
    targets = concept_targets(token_labels, concepts, table[-1])  # [M, N, d]
    weight, bias, r2 = ridge_fit(features.float(), targets, ridge)
    if weight.shape != projection.weight.shape:
        raise ValueError(f"fit gives a {list(weight.shape)} weight; the projection is {list(projection.weight.shape)}")
    with torch.no_grad():
        projection.weight.copy_(weight)
        projection.bias.copy_(bias)
    return r2
