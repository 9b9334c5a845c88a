"""Solution for notebook 01: MedCLIP's soft-label (semantic matching) contrastive loss."""
from __future__ import annotations

import torch


def soft_label_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, scale: torch.Tensor,
                    image_labels: torch.Tensor, text_labels: torch.Tensor) -> torch.Tensor:
    logits = scale * image_embeddings @ text_embeddings.T  # [B, B']
    label_sim = image_labels.float() @ text_labels.float().T  # [B, B']
    targets_image = label_sim.softmax(dim=1)  # each image's distribution over texts
    targets_text = label_sim.T.softmax(dim=1)  # each text's distribution over images
    loss_image = -(targets_image * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_text = -(targets_text * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_image + loss_text)
