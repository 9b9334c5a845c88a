"""The least-squares start of the linear layer (train/concept_init.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from xraygpt_lab.models.llm import train_tokenizer
from xraygpt_lab.train.concept_init import concept_targets, init_projection_from_concepts, ridge_fit
from xraygpt_lab.train.grounding import CONCEPT_TOKENS, concept_columns


def test_ridge_fit_recovers_a_linear_map_and_reports_r2() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(200, 16, 12, generator=g)  # [M, N, d_v]
    weight, bias = torch.randn(5, 12, generator=g), torch.randn(5, generator=g)
    targets = features @ weight.T + bias  # [M, N, 5]
    w, b, r2 = ridge_fit(features, targets, ridge=1e-6)
    assert torch.allclose(w, weight, atol=1e-3) and torch.allclose(b, bias, atol=1e-3) and r2 > 0.9999
    noisy = targets + 3.0 * torch.randn(targets.shape, generator=g)
    assert 0.0 < ridge_fit(features, noisy)[2] < 0.9  # noise the features cannot explain lowers R²
    # a strong ridge shrinks the weights toward zero
    assert ridge_fit(features, targets, ridge=100.0)[0].norm() < 0.1 * weight.norm()
    with pytest.raises(ValueError, match="share M and N"):
        ridge_fit(features, targets[:, :8])
    with pytest.raises(ValueError, match="ridge"):
        ridge_fit(features, targets, ridge=-1.0)


def test_concept_targets_average_overlapping_findings_and_fill_blanks() -> None:
    concepts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])  # [L=3, d=2]
    blank = torch.tensor([-1.0, -1.0])
    labels = torch.zeros(1, 3, 3)
    labels[0, 0, 0] = 1
    labels[0, 1, :2] = 1
    out = concept_targets(labels, concepts, blank)  # [1, 3, 2]
    assert out[0, 0].tolist() == [1.0, 0.0] and out[0, 1].tolist() == [0.5, 0.5] and out[0, 2].tolist() == [-1.0, -1.0]
    with pytest.raises(ValueError, match="token_labels"):
        concept_targets(torch.zeros(1, 3, 2), concepts, blank)


def test_init_projection_lands_image_tokens_on_their_concepts() -> None:
    tokenizer = train_tokenizer(["a small left pleural effusion", "no finding"] * 20, vocab_size=300)
    projection = nn.Linear(6, 4)
    embeddings = torch.randn(len(tokenizer) + len(CONCEPT_TOKENS), 4)
    g = torch.Generator().manual_seed(1)
    columns = concept_columns()
    labels = (torch.rand(300, 16, len(columns), generator=g) < 0.05).float()  # [M, N, L]
    features = torch.randn(300, 16, 6, generator=g)
    with pytest.raises(ValueError, match="concept tokens"):
        init_projection_from_concepts(projection, embeddings, tokenizer, features, labels)
    tokenizer.add_tokens(list(CONCEPT_TOKENS), special_tokens=True)
    # features that encode the first concept column linearly: the fit must find it
    features[..., 0] = 3.0 * labels[..., 0]
    before = projection.weight.detach().clone()
    r2 = init_projection_from_concepts(projection, embeddings, tokenizer, features, labels)
    assert not torch.equal(before, projection.weight) and 0.0 < r2 < 1.0
    first = embeddings[tokenizer.convert_tokens_to_ids(CONCEPT_TOKENS[0])]
    blank = embeddings[tokenizer.convert_tokens_to_ids(CONCEPT_TOKENS[-1])]
    hit = (labels[..., 0] == 1) & (labels.sum(-1) == 1)
    with torch.no_grad():
        out = projection(features)  # [M, N, 4]
    to_first = (out[hit] - first).norm(dim=-1).mean()
    to_blank = (out[hit] - blank).norm(dim=-1).mean()
    assert to_first < to_blank


def test_graded_start_targets_each_finding_graded_concept() -> None:
    """With graded concepts, the cells of a small effusion target ``<…_small>`` and those of a large
    one ``<…_large>``; a fit on features that carry the size lands each on its own grade."""
    from xraygpt_lab.data.synthetic.lesions import Finding
    from xraygpt_lab.train.concept_init import graded_tables
    from xraygpt_lab.train.grounding import concept_tokens

    tokenizer = train_tokenizer(["a small left pleural effusion", "no finding"] * 20, vocab_size=300)
    tokenizer.add_tokens(list(concept_tokens(graded=True)), special_tokens=True)
    g = torch.Generator().manual_seed(2)
    embeddings = torch.randn(len(tokenizer), 8, generator=g)
    columns = concept_columns()
    j = columns.index(("Pleural Effusion", "left"))
    grades = ["small", "large"] * 150
    findings = [[Finding("Pleural Effusion", side="left", severity=s)] for s in grades]
    table = embeddings[tokenizer.convert_tokens_to_ids(list(CONCEPT_TOKENS))][:-1]  # [L, d]
    tables = graded_tables(findings, table, embeddings, tokenizer)  # [M, L, d]
    small, large = (embeddings[tokenizer.convert_tokens_to_ids(f"<pleural_effusion_left_{s}>")] for s in ("small", "large"))
    assert torch.equal(tables[0, j], small) and torch.equal(tables[1, j], large)
    assert torch.equal(tables[0, j + 1], table[j + 1])  # other columns keep their plain concept
    labels = torch.zeros(300, 16, len(columns))
    labels[:, :4, j] = 1
    features = torch.randn(300, 16, 6, generator=g)
    features[:, :4, 0] = 3.0
    features[:, :4, 1] = torch.tensor([1.0 if s == "large" else -1.0 for s in grades])[:, None]
    projection = nn.Linear(6, 8)
    init_projection_from_concepts(projection, embeddings, tokenizer, features, labels, graded_findings=findings)
    with torch.no_grad():
        out = projection(features[:, 0])  # [M, 8]: the first cell of each film's effusion
    near_own = [(o - (large if s == "large" else small)).norm() < (o - (small if s == "large" else large)).norm()
                for o, s in zip(out, grades)]
    assert all(near_own)
    bare = train_tokenizer(["a small left pleural effusion"] * 20, vocab_size=300)
    bare.add_tokens(list(CONCEPT_TOKENS), special_tokens=True)  # an ungraded LLM's tokenizer
    with pytest.raises(ValueError, match="graded_concepts"):
        init_projection_from_concepts(projection, embeddings[:len(bare)], bare, features, labels,
                                      graded_findings=findings)
