# %% [markdown]
# ## Exercise: MedCLIP's soft-label contrastive loss (checked automatically)
#
# CLIP pushes every non-matching image–report pair apart, even two studies with the same
# findings. MedCLIP (Wang et al. 2022, Sec. 3) replaces the one-hot targets with
# `softmax(image_labels @ text_labels.T)` row by row, and averages the soft cross-entropy over
# image→text and text→image. Write
# `soft_label_loss(image_embeddings, text_embeddings, scale, image_labels, text_labels)`:
# embeddings are unit vectors `[B, p]` and `[B', p]`, `scale = exp(logit_scale)`, labels are
# multi-hot `[B, L]` / `[B', L]`; return a scalar tensor. Solution:
# `tutorials/solutions/s01_vision_encoder.py`; library: `train.contrastive.medclip_loss`.

# %%
import torch

from xraygpt_lab.exercises import check_soft_label_loss


def soft_label_loss(image_embeddings, text_embeddings, scale, image_labels, text_labels):
    # YOUR CODE HERE
    raise NotImplementedError


check_soft_label_loss(soft_label_loss)

# %% [markdown]
# The feedback for a typical mistake: plain CLIP targets (the diagonal), labels ignored.

# %%
def clip_instead(image_embeddings, text_embeddings, scale, image_labels, text_labels):
    logits = scale * image_embeddings @ text_embeddings.T  # [B, B]
    target = torch.arange(logits.shape[0])
    return 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                  + torch.nn.functional.cross_entropy(logits.T, target))


check_soft_label_loss(clip_instead)

# %% [markdown]
# Question: in a batch where two studies both show only a left effusion, what are the targets of
# image 1 under CLIP, and under MedCLIP? Why does that matter for a dataset with many normals?
