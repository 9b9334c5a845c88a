# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Attention: where do the report's words look?
#
# XrayGPT (arXiv 2306.07971, Sec. 3) puts the image into the language model as 16 extra "words"
# (tiny profile; 49 with MedCLIP): the projected Swin tokens sit in the prompt between `<Img>` and
# `</Img>`. Every word of the answer can *attend* to them. This notebook reads those attention
# weights, and then looks one level down, at the Swin encoder's own window attention.
#
# **Learning goals**
#
# 1. Read the LLM's attention from each answer token to the image tokens, per layer and head, and
#    put it back on the token grid and on the image.
# 2. Understand Swin's window attention well enough to *roll it out* through windows, shifted
#    windows and patch merging — and say which steps are approximations.
# 3. Know why **attention is not explanation** (Jain & Wallace 2019; Wiegreffe & Pinter 2019):
#    check attention maps against ground-truth masks and against a sanity test.
#
# Everything runs on the reference run shipped with the toolkit (the tiny recipe trained longer,
# `walkthrough --long`; `reference_or_tiny_run()` falls back to the tiny run, trained once).

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib_inline.backend_inline import set_matplotlib_formats

from xraygpt_lab.data.readers.images import preprocess
from xraygpt_lab.data.synthetic.lesions import Finding
from xraygpt_lab.data.synthetic.world import render_case
from xraygpt_lab.device import default_device, describe_device
from xraygpt_lab.interpret import attention as att
from xraygpt_lab.interpret.attribution import explain, upsample_grid
from xraygpt_lab.interpret.faithfulness import default_tolerance, pointing_hit, random_pointing_rate
from xraygpt_lab.interpret.localization import evaluate_positives, held_out_positives, observation_phrase
from xraygpt_lab.interpret.plots import DPI, overlay, token_attention_figure
from xraygpt_lab.interpret.targets import phrase_target
from xraygpt_lab.runs import load_run, reference_or_tiny_run

warnings.filterwarnings("ignore", category=UserWarning)
set_matplotlib_formats("jpeg")  # radiograph noise makes PNG figures large
torch.set_num_threads(2)
device = default_device()  # CUDA when present, else the CPU; XRAYGPT_DEVICE=cpu forces the CPU
print("Running on:", describe_device(device))
run_dir = reference_or_tiny_run()
model = load_run(run_dir, device=device)
size = model.encoder.config.image_size
rows, cols = model.encoder.grid
print(f"image {size} px → {rows}×{cols} = {rows * cols} image tokens; LLM: "
      f"{model.llm.config.num_hidden_layers} layers × {model.llm.config.num_attention_heads} heads")

# %% [markdown]
# ## 1. One radiograph, one phrase
#
# A phantom drawn for this notebook (seed 31) with a large left pleural effusion. We teacher-force
# its ground-truth summary and ask: when the model wrote the words of the effusion phrase, which
# image tokens did it attend to?

# %%
case = render_case(31, size, findings=[Finding("Pleural Effusion", side="left", severity="large")])
pixels = preprocess(case.image, size)[None].to(device)  # [1, 1, S, S], on the device
phrase = observation_phrase(case.summary, "Pleural Effusion")
target = phrase_target(model, phrase, case.summary)
print("summary:", case.summary[:120], "…")
print("phrase:", repr(phrase), "→ tokens", target.target_token_texts)
print("generated:", model.describe(pixels, max_new_tokens=40)[0][:120])

# %% [markdown]
# ## 2. Rebuild it by hand, then use the library
#
# The LLM returns `attentions`: one tensor per layer, `[batch, heads, query, key]`. Query = the
# position that is *predicting* a phrase token (logits at `t − 1` choose token `t`); keys = the 16
# image slots. SDPA kernels do not return weights, so we switch the LLM to eager attention.

# %%
cache = target._prepared()  # prompt with an empty image slot, positions of everything
with torch.no_grad(), att.eager_attention(model.llm):
    embeds = target.splice(model.embed_image(pixel_values=pixels))  # [1, T, d_llm]
    out = model.llm(inputs_embeds=embeds, attention_mask=cache["attention_mask"], output_attentions=True)
start, n = cache["image_start"], cache["n_image"]
by_hand = torch.stack([a[0][:, cache["predict_positions"], start:start + n] for a in out.attentions])  # [L, H, K, N]
by_hand = by_hand.cpu()  # the library hands attention weights back on the CPU

attention = att.llm_image_attention(target, pixels)
assert torch.allclose(by_hand, attention.weights, atol=1e-6)
print("weights [layers, heads, phrase tokens, image tokens]:", tuple(attention.weights.shape))
print("share of each token's attention that goes to the image (layer-mean):",
      attention.image_share.mean(dim=(0, 1)).numpy().round(3))

# %% [markdown]
# Most of a token's attention goes elsewhere (BOS, the prompt, earlier words): the image share
# is small. That is normal — attention "sinks" on the first token are common — and it is the first
# reason to be careful: a head can move information from a token with a small weight.
#
# ### Per layer and head, on the token grid (token `i` sits at row `i // cols`, column `i % cols`)

# %%
grid = attention.weights.mean(dim=2).reshape(*attention.weights.shape[:2], rows, cols)  # [L, H, r, c]
mask_full = case.masks["Pleural Effusion"]  # [S, S]
fig, axes = plt.subplots(grid.shape[0], grid.shape[1], figsize=(2.6 * grid.shape[1], 2.4 * grid.shape[0]), dpi=DPI,
                         squeeze=False)
top = float(grid.max())  # one colour scale for every head, so heads can be compared
for layer in range(grid.shape[0]):
    for head in range(grid.shape[1]):
        ax = axes[layer, head]
        ax.imshow(case.image, cmap="gray", vmin=0, vmax=1, extent=(-0.5, cols - 0.5, rows - 0.5, -0.5))
        heat = ax.imshow(grid[layer, head], cmap="magma", vmin=0, vmax=top, alpha=0.65)
        ax.contour(np.linspace(-0.5, cols - 0.5, mask_full.shape[1]), np.linspace(-0.5, rows - 0.5, mask_full.shape[0]),
                   mask_full.astype(float), levels=[0.5], colors="cyan", linewidths=1.0)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"layer {layer}, head {head}", fontsize=8)
fig.colorbar(heat, ax=axes, fraction=0.025, pad=0.02, label="attention weight (mean over the phrase's tokens)")
fig.suptitle("phrase → image attention per layer and head over the film (cyan: the effusion; patient's left = "
             "image right)", fontsize=9)

# %% [markdown]
# One colour scale for all heads, so they can be compared. In the first two layers some heads look
# at the tokens over the effusion (the lower tokens on the image's right; most of all layer 1,
# head 1); in the last layer the
# phrase hardly looks at the image at all: what the image had to say was moved into the text
# positions earlier. A head's weight says where it reads, not what it takes from there.

# %%
mask = case.masks["Pleural Effusion"]
fig, axes = plt.subplots(1, 2, figsize=(7, 3.2), dpi=DPI)
overlay(axes[0], case.image, att.attention_explanation(target, pixels), title="mean attention, all layers/heads",
        mask=mask)
last = attention.image_map(size, layers=[grid.shape[0] - 1])
overlay(axes[1], case.image, last, title="last layer only", baseline="none (attention)", mask=mask)
fig.tight_layout()
token_attention_figure(case.image, attention, max_tokens=4);

# %% [markdown]
# ## 3. The Swin encoder: window attention and rollout
#
# Swin (Liu et al. 2021) attends only **inside windows** of `w × w` tokens; every second block
# **shifts** the windows by `⌊w/2⌋` so information crosses window borders (not where one window
# covers the whole grid, as in the last stage here: shift 0); between stages
# **patch merging** fuses 2 × 2 tokens into one. To ask "which input patches feed the final
# tokens?", we scatter each block's window weights into one full `[n, n]` matrix, undoing the
# shift, and multiply the blocks together: *attention rollout* (Abnar & Zuidema 2020).
#
# | step | in the rollout | exact? |
# |---|---|---|
# | windows | block-diagonal full matrix | exact |
# | shifted windows | windows mapped back through the roll | exact |
# | residual connection | `0.5·A + 0.5·I` | approximation |
# | LayerNorm, MLP | ignored (token-wise) | approximation |
# | patch merging | plain average of 2 × 2 children | approximation (really a learned linear map) |
# | mean pooling | mean over the final tokens' rows | exact for MedCLIP's pooler |

# %%
blocks = att.swin_attention_blocks(model.encoder, pixels)
for b in blocks:
    print(f"stage {b.stage} block {b.block}: grid {b.resolution}, window {b.window}, shift {b.shift}, "
          f"weights {tuple(b.weights.shape)}")
plain, shifted = blocks[0], blocks[1]
fig, axes = plt.subplots(1, 2, figsize=(7, 3.4), dpi=DPI)
for ax, block in zip(axes, (plain, shifted)):
    ax.imshow(block.full_matrix() > 1e-6, cmap="gray_r")
    ax.set_title(f"stage {block.stage} block {block.block} (shift {block.shift}): who attends to whom", fontsize=8)
    ax.set_xlabel("key token"), ax.set_ylabel("query token")
fig.tight_layout()

# %%
rollout = att.attention_rollout(model.encoder, pixels)  # [h0, w0] on the first stage's patch grid
relevance = att.gradient_rollout(target, pixels)  # Chefer et al. 2021, weighted by ∂target/∂A
fig, axes = plt.subplots(1, 2, figsize=(7, 3.2), dpi=DPI)
for ax, (name, values) in zip(axes, (("attention rollout (target-free)", rollout),
                                     ("gradient-weighted rollout (phrase)", relevance))):
    up = upsample_grid(torch.from_numpy(np.ascontiguousarray(values))[None], size)[0].numpy()
    overlay(ax, case.image, up, title=name, baseline="none (attention)", mask=mask)
fig.tight_layout()

# %% [markdown]
# Both maps peak inside the effusion (green cross): the rollout in its lateral half, the
# gradient-weighted map near its lower lateral corner. The rollout ignores the phrase, and it
# also lights the mediastinum and both upper lungs. The gradient-weighted map also
# shows a strip along the film's right edge, lateral to the effusion, almost as strong as its
# peak: squares 16 px wide, tokens of the encoder's middle stage. Rollout treats patch merging as
# a plain average of the 2 × 2 children (the table above), so whatever such a token holds spreads
# evenly over its square, wherever the pixels that fed it lie. That strip is a property of the
# approximation, not a second finding: read this map's peak, and check it against the truth, as
# section 4 does.

# %% [markdown]
# ## 4. Attention is not explanation: two checks
#
# **Check 1 — against ground truth.** On held-out positives, does the map's peak fall on the lesion
# (pointing game, 4 px tolerance, Zhang et al. 2018)? We compare LLM attention, the encoder
# rollouts and Integrated Gradients with a random map.

# %%
pairs = held_out_positives(2, size)  # 2 positives × 5 localized observations
methods = {"attention": {}, "rollout": {}, "grad_rollout": {}, "ig": {"baseline": "blur", "n_steps": 16}}
rows_ = evaluate_positives(model, pairs, methods)
import pandas as pd  # noqa: E402

frame = pd.DataFrame(rows_)
frame.loc[frame.method == "random", "pointing"] = frame.loc[frame.method == "random", "pointing_expected"]
frame.groupby("method")[["pointing", "energy"]].mean().round(2).sort_values("pointing", ascending=False)

# %% [markdown]
# **Check 2 — a sanity test** (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): if we
# scramble the model part that writes the words, an explanation *of the words* must change.
# Plain rollout reads only the encoder, so it cannot: it is identical for every phrase and every
# language model. It shows what the encoder mixes, not why the report says "effusion".

# %%
ig_before = explain(target, pixels, "ig", n_steps=16).map
saved = model.projection.weight.detach().clone()
with torch.no_grad():
    model.projection.weight.copy_(saved[torch.randperm(saved.shape[0])])  # scramble the alignment layer
rollout_scrambled = att.attention_rollout(model.encoder, pixels)
target_scrambled = phrase_target(model, phrase, case.summary)
ig_after = explain(target_scrambled, pixels, "ig", n_steps=16).map
with torch.no_grad():
    model.projection.weight.copy_(saved)
corr = np.corrcoef(ig_before.ravel(), ig_after.ravel())[0, 1]
print(f"rollout unchanged: {np.allclose(rollout, rollout_scrambled)}; IG correlation before/after: {corr:.2f}")

# %% [markdown]
# ## 5. Exercise: attention rollout
#
# Write `my_rollout(attentions, residual)` for a plain transformer: `attentions` is a list of
# row-stochastic `[n, n]` matrices, first layer first. Each layer becomes
# `Ã = (1 − r)·A + r·I` (rows renormalised) and the rollout is `R = Ã_L ⋯ Ã_2 Ã_1`.
# `check_rollout` tests it on random matrices and tells you what is wrong.

# %%
from xraygpt_lab.exercises.interpret import check_rollout  # noqa: E402


def my_rollout(attentions, residual=0.5):
    raise NotImplementedError("your turn")


check_rollout(my_rollout)

# %% [markdown]
# A reference solution is in `tutorials/solutions/s06_attention.py` (try first!).

# %% [markdown]
# **Caveats.** Weights tell where information was *read*, not whether it mattered; heads can carry
# information with small weights; the residual stream bypasses attention; and the Swin rollout's
# merging and residual steps are approximations (table above). Use attention maps to generate
# hypotheses, and test them with attributions, counterfactuals (notebook 05) and ground truth.
