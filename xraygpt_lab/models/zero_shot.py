"""Reading a contrastive encoder without training a head: zero-shot labels, retrieval, linear probes.

* **Zero-shot classification with prompt ensembles** (CLIP, Radford et al. 2021 Sec. 3.1.4;
  MedCLIP's ``PromptClassifier``): each observation has a set of positive and a set of negative
  sentences; each set's text embeddings are averaged and re-normalised, and the image's
  probability of "positive" is the softmax over the two cosine similarities times the scale.
* **Retrieval@k**: the fraction of images whose paired report is among the k most similar texts
  (and vice versa).
* **Linear probe**: an L2-regularised logistic regression per observation on frozen features,
  scored by ROC AUC — how linearly readable an observation is from pooled vectors or tokens.
  That is what XrayGPT's one linear layer relies on.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from .text_encoder import TextEncoder

#: Positive / negative prompt sets per rendered observation (plain report phrasing).
DEFAULT_PROMPTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Cardiomegaly": (
        ("The heart is enlarged.", "Cardiomegaly.", "Enlarged cardiac silhouette."),
        ("The heart size is normal.", "No cardiomegaly.", "Normal cardiac silhouette."),
    ),
    "Pleural Effusion": (
        ("There is a pleural effusion.", "Left pleural effusion.", "Right pleural effusion."),
        ("No pleural effusion.", "The costophrenic angles are sharp.", "No effusion."),
    ),
    "Pneumothorax": (
        ("There is a pneumothorax.", "Left pneumothorax.", "Right pneumothorax."),
        ("No pneumothorax.", "There is no pneumothorax.", "No evidence of pneumothorax."),
    ),
    "Consolidation": (
        ("There is a consolidation.", "Focal consolidation.", "Airspace consolidation."),
        ("No consolidation.", "No focal consolidation.", "The lungs are clear."),
    ),
    "Lung Lesion": (
        ("There is a pulmonary nodule.", "A lung nodule is seen.", "Lung mass."),
        ("No pulmonary nodule.", "No lung nodules or masses.", "No focal lesion."),
    ),
    "Edema": (
        ("Pulmonary edema.", "There is interstitial edema.", "Vascular congestion and edema."),
        ("No pulmonary edema.", "No edema.", "No vascular congestion."),
    ),
    "Atelectasis": (
        ("There is atelectasis.", "Basilar atelectasis.", "Subsegmental atelectasis."),
        ("No atelectasis.", "The lungs are well expanded.", "No collapse."),
    ),
    "Support Devices": (
        ("A support device is present.", "Endotracheal tube in place.", "A catheter is seen."),
        ("No support devices.", "No lines or tubes.", "No devices."),
    ),
    "Fracture": (
        ("There is a rib fracture.", "Fracture.", "Displaced rib fracture."),
        ("No fracture.", "No acute osseous abnormality.", "The bones are intact."),
    ),
}


@torch.no_grad()
def prompt_embedding(text_encoder: TextEncoder, prompts: Sequence[str]) -> torch.Tensor:
    """Mean of the prompts' unit embeddings, re-normalised: ``[p]``."""
    if not prompts:
        raise ValueError("a prompt set needs at least one sentence")
    embeddings = text_encoder.encode_text(list(prompts))  # [P, p]
    return nn.functional.normalize(embeddings.mean(dim=0), dim=-1)  # [p]


@torch.no_grad()
def zero_shot_probabilities(
    image_embeddings: torch.Tensor,
    text_encoder: TextEncoder,
    prompts: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
    scale: float = 100.0,
) -> dict[str, torch.Tensor]:
    """P(positive) per observation: ``softmax(scale · [cos(img, pos), cos(img, neg)])[0]``, each ``[B]``.

    ``image_embeddings`` ``[B, p]`` are unit vectors (``VisionEncoder.encode_image``); ``scale``
    is ``exp(logit_scale)`` (100 = MedCLIP's clamp maximum).
    """
    prompts = DEFAULT_PROMPTS if prompts is None else prompts
    was_training = text_encoder.training
    text_encoder.eval()
    out: dict[str, torch.Tensor] = {}
    for observation, (positive, negative) in prompts.items():
        classes = torch.stack([prompt_embedding(text_encoder, positive), prompt_embedding(text_encoder, negative)])
        logits = scale * image_embeddings @ classes.to(image_embeddings).T  # [B, 2]
        out[observation] = logits.softmax(dim=-1)[:, 0]  # [B]
    text_encoder.train(was_training)
    return out


def zero_shot_classify(
    image_embeddings: torch.Tensor,
    text_encoder: TextEncoder,
    prompts: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
    threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Hard 0/1 zero-shot labels per observation, each ``[B]`` (long)."""
    probabilities = zero_shot_probabilities(image_embeddings, text_encoder, prompts)
    return {k: (v >= threshold).long() for k, v in probabilities.items()}


@torch.no_grad()
def retrieval_at_k(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    relevant: torch.Tensor | None = None,
) -> dict[str, float]:
    """Image→text and text→image recall@k for paired ``[B, p]`` embeddings (pair i ↔ i).

    ``relevant`` ``[B, B]`` bool marks every text that counts as a hit for an image (e.g. reports
    with the same labels); by default only the paired one does.
    """
    if image_embeddings.shape != text_embeddings.shape:
        raise ValueError(
            f"paired retrieval needs equal shapes, got {list(image_embeddings.shape)} and {list(text_embeddings.shape)}"
        )
    n = image_embeddings.shape[0]
    similarity = image_embeddings @ text_embeddings.T  # [B, B]
    if relevant is None:
        relevant = torch.eye(n, dtype=torch.bool, device=similarity.device)
    relevant = relevant.to(device=similarity.device, dtype=torch.bool)
    out: dict[str, float] = {}
    for k in ks:
        k_eff = min(k, n)
        top_text = similarity.topk(k_eff, dim=1).indices  # [B, k]
        top_image = similarity.T.topk(k_eff, dim=1).indices  # [B, k]
        hit_text = relevant.gather(1, top_text).any(dim=1)  # [B]
        hit_image = relevant.T.gather(1, top_image).any(dim=1)  # [B]
        out[f"image_to_text@{k}"] = float(hit_text.float().mean())
        out[f"text_to_image@{k}"] = float(hit_image.float().mean())
    return out


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC by the Mann–Whitney U statistic (ties count one half); NaN if one class is absent."""
    scores = scores.detach().double().flatten().cpu()
    labels = labels.detach().flatten().bool().cpu()
    positives, negatives = scores[labels], scores[~labels]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).double().sum()
    ties = (positives[:, None] == negatives[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def linear_probe_auc(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    names: Sequence[str] | None = None,
    weight_decay: float = 1e-2,
    steps: int = 100,
) -> dict[str, float]:
    """Fit one logistic regression per label column on frozen features and report test AUCs.

    Features ``[N, D]`` (pooled ``[N, d]``, or tokens flattened to ``[N, N_tok · d]``) are
    standardised with the training statistics; labels ``[N, L]`` are 0/1. L-BFGS on the mean
    binary cross-entropy plus ``weight_decay · ‖W‖²``. Returns ``{name: AUC}`` on the test set.
    The fit runs on the CPU in float64 (features from a GPU encoder are copied there).
    """
    if train_features.dim() != 2 or test_features.dim() != 2:
        raise ValueError("features must be [N, D]; flatten tokens with .flatten(1) first")
    if train_labels.shape[1] != test_labels.shape[1]:
        raise ValueError("train and test labels have different numbers of columns")
    names = list(names) if names is not None else [str(i) for i in range(train_labels.shape[1])]
    if len(names) != train_labels.shape[1]:
        raise ValueError(f"{len(names)} names for {train_labels.shape[1]} label columns")
    x = train_features.detach().double().cpu()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std  # [N, D]
    y = train_labels.detach().double().cpu()  # [N, L]
    weight = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)  # [D, L]
    bias = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)  # [L]
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x @ weight + bias  # [N, L]
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        scores = ((test_features.detach().double().cpu() - mean) / std) @ weight + bias  # [M, L]
    return {name: roc_auc(scores[:, i], test_labels[:, i]) for i, name in enumerate(names)}
