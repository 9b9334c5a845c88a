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
# # 01 · The vision encoder: Swin, built by hand, then taught by reports
#
# XrayGPT (arXiv 2306.07971, Sec. 3) sees a radiograph through **MedCLIP's vision encoder**: a
# Swin Transformer (swin-tiny, 224 px → 7 × 7 = 49 tokens of width 768) trained contrastively on
# image–report pairs, then frozen. The LLM only ever sees those 49 tokens (through one linear
# layer), so **whatever the tokens do not carry, the report cannot say.**
#
# **Learning goals.** After this notebook you can
# 1. rebuild Swin's four ideas — patch embedding, window attention, shifted windows, patch
#    merging — and check each against `transformers.SwinModel`;
# 2. explain MedCLIP's contrastive objective and its *semantic matching* targets;
# 3. measure what the tokens carry with a **linear probe** (trained vs random encoder), classify
#    **zero-shot** with prompt ensembles, and retrieve reports from images.
#
# We use the `tiny` profile: 128 px images, 8 px patches, 3 stages, a 4 × 4 token grid of width
# 128. Runs on a CPU in about a minute (the first time, plus 5–13 minutes, by CPU, to train the tiny
# run its second half uses). Two tiny-profile departures from MedCLIP, both shown
# below: a small **convolutional stem** instead of the linear patch embedding, and **absolute
# position embeddings** (so a token knows whether it lies on the patient's left or right).
#
# Training and encoding run on the toolkit's device (`xraygpt_lab.device`: a CUDA GPU when
# present, else the CPU). The by-hand rebuilds of sections 1–5 take two images each and stay on
# the CPU, where our code and the library's run the same kernels.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from matplotlib_inline.backend_inline import set_matplotlib_formats

from xraygpt_lab.data.readers.images import preprocess
from xraygpt_lab.data.synthetic.world import generate_cases
from xraygpt_lab.device import default_device, describe_device
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder

set_matplotlib_formats("jpeg")  # radiograph noise makes PNG figures large
torch.manual_seed(0)
torch.set_num_threads(2)
device = default_device()  # CUDA when present, else the CPU; XRAYGPT_DEVICE=cpu forces the CPU
print("Running on:", describe_device(device))
config = EncoderConfig.tiny()
print(config)
print("token grid", config.grid, "of width", config.token_dim)

# %%
cases = list(generate_cases(700, size=config.image_size, seed=1))
images = torch.stack([preprocess(c.image, config.image_size) for c in cases])  # [N, 1, 128, 128]
texts = [c.summary for c in cases]
fig, axes = plt.subplots(1, 4, figsize=(9, 2.6), dpi=100)
for ax, case in zip(axes, cases):
    ax.imshow(case.image, cmap="gray")
    ax.set_title(", ".join(f.observation for f in case.findings)[:28] or "normal", fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 1 · Patch embedding
# Cut the image into non-overlapping 8 × 8 patches and map each to a vector — one strided
# convolution does both. Then LayerNorm. 128 / 8 = 16, so 16 × 16 = 256 patch tokens.

# %%
medclip_style = EncoderConfig.tiny(stem="patch", absolute_position=False)  # Swin/MedCLIP's embedding
encoder = VisionEncoder(medclip_style).eval()
swin = encoder.backbone
x = images[:2]  # [2, 1, 128, 128]

conv = swin.embeddings.patch_embeddings.projection  # Conv2d(1, 32, kernel 8, stride 8)
patches = conv(x)  # [2, 32, 16, 16]
ours = swin.embeddings.norm(patches.flatten(2).transpose(1, 2))  # [2, 256, 32]
theirs, grid = swin.embeddings(x)
assert torch.allclose(ours, theirs, atol=1e-6)
print("patch embedding ✓", tuple(ours.shape), "grid", grid)

# %% [markdown]
# **The tiny profile's stem.** A linear map of each 8 × 8 patch is hard to train from a few
# thousand images: our tiny Swin learned the big findings with it but missed devices,
# atelectasis and nodules in the walkthrough's budget. Following Xiao et al. 2021 ("Early
# convolutions help transformers see better"), `EncoderConfig.tiny()` puts three stride-2
# 3 × 3 convolutions, each followed by an unstrided one (`stem_depth=2`; all with BatchNorm and
# GELU), where the patchify convolution was — same 16 × 16 grid, same width — and adds a learned
# position embedding per patch. The second convolution per scale is what lets it see nodules and
# rib fractures, a few pixels each (measured in `models/conv_stem.py`). The rest of
# `SwinModel` is untouched, and the `full` profile keeps MedCLIP's layout so its weights load.

# %%
tiny_encoder = VisionEncoder(config).eval()
embeddings = tiny_encoder.backbone.embeddings
stem = embeddings.patch_embeddings.projection  # ConvStem: 128 → 64 → 32 → 16 px grid, 2 convs per scale
print(stem)
ours = embeddings.norm(stem(x).flatten(2).transpose(1, 2)) + embeddings.position_embeddings  # [2, 256, 32]
assert torch.allclose(ours, embeddings(x)[0], atol=1e-6)
print("conv stem + position embedding ✓", tuple(ours.shape))

# %% [markdown]
# ## 2 · Window attention
# Full self-attention over 256 tokens costs 256². Swin attends only **inside 4 × 4 windows**
# (16 tokens each), adding a learned *relative position bias* per head — cost grows linearly
# with the image. Each block: `x + attn(LN(x))`, then `x + MLP(LN(x))`.

# %%
def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """[B, H, W, C] → [B·(H/w)·(W/w), w·w, C]"""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_merge(windows: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of window_partition: → [B, H, W, C]"""
    c = windows.shape[-1]
    x = windows.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, wd, c)


def window_attention(x: torch.Tensor, attention: nn.Module, w: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention inside each window, plus the relative position bias. x [windows, w², C]"""
    n, t, c = x.shape
    heads = attention.num_attention_heads
    d = c // heads
    q = attention.q_proj(x).view(n, t, heads, d).transpose(1, 2)  # [n, heads, w², d]
    k = attention.k_proj(x).view(n, t, heads, d).transpose(1, 2)
    v = attention.v_proj(x).view(n, t, heads, d).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / d**0.5 + attention.relative_position_bias()  # [n, heads, w², w²]
    if mask is not None:  # [windows per image, w², w²]: -100 between tokens that were not neighbours
        scores = scores.view(-1, mask.shape[0], heads, t, t) + mask[None, :, None]
        scores = scores.view(n, heads, t, t)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, c)
    return attention.o_proj(out)


def swin_block(x: torch.Tensor, block: nn.Module, h: int, wd: int, shift: int = 0, mask=None) -> torch.Tensor:
    b, _, c = x.shape
    w = block.window_size
    y = block.layernorm_before(x).view(b, h, wd, c)
    if shift:
        y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))  # cyclic shift up-left
    y = window_merge(window_attention(window_partition(y, w), block.attention, w, mask), w, h, wd)
    if shift:
        y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))  # and back
    x = x + y.reshape(b, h * wd, c)
    return x + block.mlp(block.layernorm_after(x))


with torch.no_grad():  # the bias tables start at zero; randomise them so the check covers them
    for name, p in swin.named_parameters():
        if "relative_position_bias_table" in name:
            p.normal_(std=0.5)
stage = swin.encoder.layers[0]
block0 = stage.blocks[0]
reference = block0(theirs, grid)[0]
ours = swin_block(theirs, block0, *grid)
assert torch.allclose(ours, reference, atol=1e-5)
print("window attention block ✓ (window", block0.window_size, "shift", block0.shift_size, ")")

# %% [markdown]
# ## 3 · Shifted windows
# With fixed windows, information never crosses a window border. Every second block shifts the
# grid by half a window (here 2 tokens) with a cyclic roll, so the new windows straddle the old
# borders. Tokens that the roll wrapped around from the opposite edge are not real neighbours:
# a mask of −100 stops them attending to each other.

# %%
def shift_mask(h: int, wd: int, w: int, shift: int) -> torch.Tensor:
    """Label each position by the region it came from; mask pairs with different labels."""
    region = torch.zeros(1, h, wd, 1)
    label = 0
    for rows in (slice(0, -w), slice(-w, -shift), slice(-shift, None)):
        for cols in (slice(0, -w), slice(-w, -shift), slice(-shift, None)):
            region[:, rows, cols] = label
            label += 1
    windows = window_partition(region, w).squeeze(-1)  # [windows, w²]
    different = windows[:, None, :] != windows[:, :, None]
    return different.float() * -100.0  # [windows, w², w²]


block1 = stage.blocks[1]
after0 = reference
reference1 = block1(after0, grid)[0]
mask = shift_mask(*grid, block1.window_size, block1.shift_size)
ours1 = swin_block(after0, block1, *grid, shift=block1.shift_size, mask=mask)
assert torch.allclose(ours1, reference1, atol=1e-5)
print("shifted-window block ✓ (shift", block1.shift_size, "); masked pairs in window 0:", int((mask[0] < 0).sum()),
      "of", mask.shape[1] ** 2, "; in the last window:", int((mask[-1] < 0).sum()))

# %% [markdown]
# ## 4 · Patch merging
# Between stages, each 2 × 2 group of neighbouring tokens is concatenated (4C channels),
# normalised and linearly reduced to 2C: half the resolution, twice the width — a CNN-like
# pyramid. 16 × 16 → 8 × 8 → 4 × 4.

# %%
def patch_merging(x: torch.Tensor, merge: nn.Module, h: int, wd: int) -> torch.Tensor:
    b, _, c = x.shape
    x = x.view(b, h, wd, c)
    groups = [x[:, r::2, s::2] for s in (0, 1) for r in (0, 1)]  # the order SwinPatchMerging uses
    x = torch.cat(groups, dim=-1).view(b, -1, 4 * c)  # [B, h/2 · w/2, 4C]
    return merge.reduction(merge.norm(x))  # [B, h/2 · w/2, 2C]


merged = patch_merging(reference1, stage.downsample, *grid)
assert torch.allclose(merged, stage.downsample(reference1, grid), atol=1e-6)
print("patch merging ✓", tuple(reference1.shape), "→", tuple(merged.shape))

# %% [markdown]
# ## 5 · The whole encoder
# Three stages, a final LayerNorm: 16 tokens of width 128 on a 4 × 4 grid, read row by row.
# Token `i` sits at row `i // 4`, column `i % 4`; columns 2–3 are the **patient's left**
# (radiological convention). The mean of the tokens, projected without bias and L2-normalised,
# is the contrastive embedding.

# %%
out = encoder(images[:2], output_attentions=True)
print("tokens", tuple(out.tokens.shape), "pooled", tuple(out.pooled.shape), "embedding", tuple(out.embedding.shape))
print("attention per stage:", [tuple(a.shape) for a in out.attentions], "= [B·windows, heads, w², w²]")
assert torch.allclose(out.pooled, swin(images[:2]).pooler_output, atol=1e-6)

# %% [markdown]
# ## 6 · Contrastive pretraining, MedCLIP style
#
# CLIP pulls each image towards *its* report and pushes it from every other report in the batch.
# In radiology many studies say the same thing ("no acute findings"), so CLIP's "others are
# wrong" creates false negatives. MedCLIP's **semantic matching** replaces the one-hot target by
# `softmax(label_sim)` with `label_sim = labels_img @ labels_txtᵀ`: reports with the same
# findings are equally right. We split lateralised labels into left/right columns so that the
# targets also teach laterality.
#
# The tiny profile adds a second, token-level loss (`train/label_supervision.py`): a linear head
# on *every* token, pooled by a smooth maximum (log-sum-exp, multiple-instance learning), with
# binary cross-entropy against the same labels. MedCLIP's loss only shapes the pooled embedding;
# XrayGPT's linear layer reads the tokens, so each token should say what it sees. Because the
# synthetic world knows *where* each finding is, the walkthrough also trains that head on every
# token against the finding masks (`token_targets`, `dense_label_loss`; `dense_weight=1` in
# `pretrain_encoder`): a token then fires for the findings inside its own 32 × 32-pixel cell,
# which the linear alignment and the attribution maps of notebook 05 both rely on.

# %%
from xraygpt_lab.models.text_encoder import TextEncoder
from xraygpt_lab.train.contrastive import medclip_loss, observation_targets, pretrain_encoder
from xraygpt_lab.widgets.live import LiveCurves

labels, columns = observation_targets(cases)  # [N, 16]
print(columns)
sim = labels[:6] @ labels[:6].T
print("label_sim of the first 6 studies:\n", sim.int().numpy())
print("targets row 0:", sim.softmax(1)[0].numpy().round(2))

# %%
train, test = slice(0, 500), slice(500, 700)
text_encoder = TextEncoder.from_corpus(texts[train]).to(device)
trained = VisionEncoder(config).to(device)
random_encoder = VisionEncoder(config).to(device)  # the baseline: same architecture, never trained
start = time.perf_counter()
live = LiveCurves(every=10, window=10, width=6.5, height=3.2, titles={"encoder": "encoder pretraining (demo)"},
                  lines={"chance for the MedCLIP part: ln 48": float(np.log(48))})
history = pretrain_encoder(
    trained, text_encoder, images[train], texts[train], labels[train],
    steps=110, batch_size=48, lr=2e-3, seed=0, progress=False, label_weight=1.0, shift=4, on_step=live,
)
live.close()
print(f"pretrained in {time.perf_counter() - start:.0f} s; temperature scale {history['logit_scale']:.1f}")
for part in ("loss_labels", "loss_contrastive"):
    values = [v for v in history[part] if v is not None]
    print(f"{part}: first 5 steps {np.mean(values[:5]):.2f}, last 5 {np.mean(values[-5:]):.2f}")

# %% [markdown]
# The plot redrew while the encoder trained (running means over 10 steps, the raw total faintly).
# The **token label part** falls from the first steps: each token learns which findings it sees.
# The **MedCLIP part** starts at chance, ln 48 ≈ 3.87 — the loss of a model that cannot tell which
# of the 48 reports in the batch belongs to which image — and stays at or a little below it in
# these 110 steps: matching whole reports is the harder task, and 110 steps are a demonstration. The walkthrough
# trains this recipe for 2,800 steps on 6,000 studies, showing each film with a lung lesion three
# times an epoch (about two thirds of its 5–13 minutes on an idle 2-core machine, by CPU; `xraygpt-lab walkthrough`), and its history shows the
# MedCLIP part leaving chance (next cell). From here on we use that encoder and its text encoder
# (the tiny run is trained first if it is absent).

# %%
import json

from xraygpt_lab.runs import ensure_tiny_run

run_dir = ensure_tiny_run(on_step=LiveCurves(every=25))  # curves redraw while it trains, if it must
demo_encoder = trained
trained = VisionEncoder.from_pretrained(run_dir / "encoder", device=device).eval()
text_encoder = TextEncoder.from_pretrained(run_dir / "text_encoder", device=device).eval()
run_history = json.loads((run_dir / "history.json").read_text())["encoder"]
run_batch = json.loads((run_dir / "config.json").read_text())["recipe"]["encoder"]["batch"]
steps_c = [r["step"] for r in run_history if r["loss_contrastive"] is not None]
loss_c = np.array([r["loss_contrastive"] for r in run_history if r["loss_contrastive"] is not None])
smooth = np.convolve(loss_c, np.ones(15) / 15, mode="valid")  # running mean over 15 steps
fig, ax = plt.subplots(figsize=(6, 2.8), dpi=100)
ax.plot(steps_c, loss_c, lw=0.6, alpha=0.4, color="C1")
ax.plot(steps_c[7:7 + len(smooth)], smooth, lw=1.6, color="C1", label="MedCLIP part (running mean)")
ax.axhline(np.log(run_batch), color="grey", ls=":", lw=1)
ax.text(steps_c[-1], np.log(run_batch) + 0.08, f"chance: ln {run_batch}", ha="right", fontsize=8, color="grey")
ax.legend(fontsize=8)
ax.set(xlabel="encoder step", ylabel="loss", title="the tiny run's encoder: the MedCLIP part leaves chance")
ax.title.set_fontsize(9)
plt.show()
print(f"MedCLIP part: first 20 steps {loss_c[:20].mean():.2f}, last 50 {loss_c[-50:].mean():.2f} "
      f"(chance {np.log(run_batch):.2f})")

# %% [markdown]
# ## 7 · What do the tokens carry? A linear probe
# For each observation we fit a logistic regression on the frozen tokens (all 16 × 128 values)
# of 500 training studies and score ROC AUC on 200 held-out ones. XrayGPT's single linear layer
# can only pass on what is linearly readable like this. The random encoder is the honest
# baseline: random convolutions already keep some brightness information.

# %%
from xraygpt_lab.models.zero_shot import linear_probe_auc, retrieval_at_k, roc_auc, zero_shot_probabilities

with torch.no_grad():  # the probes fit on the CPU: bring the tokens back from the device
    tokens_trained = trained.eval().encode_tokens(images).flatten(1).cpu()  # [N, 16·128]
    tokens_random = random_encoder.eval().encode_tokens(images).flatten(1).cpu()
auc_trained = linear_probe_auc(tokens_trained[train], labels[train], tokens_trained[test], labels[test], columns)
auc_random = linear_probe_auc(tokens_random[train], labels[train], tokens_random[test], labels[test], columns)
fig, ax = plt.subplots(figsize=(8, 2.8), dpi=100)
pos = np.arange(len(columns))
ax.bar(pos - 0.2, [auc_random[c] for c in columns], 0.4, label="random encoder")
ax.bar(pos + 0.2, [auc_trained[c] for c in columns], 0.4, label="pretrained (tiny run)")
ax.set_xticks(pos, columns, rotation=60, ha="right", fontsize=7)
ax.set(ylim=(0.4, 1.0), ylabel="probe AUC")
ax.legend(fontsize=7)
plt.show()
mean_trained = np.nanmean(list(auc_trained.values()))
mean_random = np.nanmean(list(auc_random.values()))
print(f"mean AUC: trained {mean_trained:.3f} vs random {mean_random:.3f}")
weakest = sorted((v, c) for c, v in auc_trained.items() if not np.isnan(v))[:4]
print("weakest after training:", ", ".join(f"{c} {v:.2f}" for v, c in weakest))

# %% [markdown]
# **Read the numbers honestly.** The trained tokens make the big findings — and their side —
# linearly readable far better than random features (which already keep some brightness
# information, so "random" is not 0.5). The weakest columns are the small findings: the thin
# lines of support devices, and a nodule or mass of a few pixels. What the tokens miss, XrayGPT's single linear
# layer cannot pass on (notebook 03 measures how much of the report quality this costs). Try a
# longer pretraining, or set `label_weight=0` above and watch what MedCLIP's loss alone gives.

# %% [markdown]
# ## 8 · Zero-shot labels with prompt ensembles
# No classifier at all: for each observation, average the text embeddings of a few positive
# sentences and a few negative ones; an image is "positive" if it is closer to the positive
# set. This only works for phrasings the text encoder has learned — our text encoder has read
# only the synthetic world's reports, so we use that world's wording. Even so it can fail: in the run shown
# here Edema scores 0.54, at chance (0.5), although the linear probe of section 7
# reads edema almost perfectly.

# %%
prompts = {
    "Cardiomegaly": (["The heart is enlarged.", "Moderate cardiomegaly."], ["Heart size is normal.", "Normal heart size."]),
    "Pleural Effusion": (["Moderate left pleural effusion.", "Small right pleural effusion."], ["There is no pleural effusion or pneumothorax."]),
    "Pneumothorax": (["Large right pneumothorax.", "Small left pneumothorax."], ["No pneumothorax."]),
    "Edema": (["Moderate pulmonary edema."], ["There is no focal consolidation or pulmonary edema."]),
    "Support Devices": (["Endotracheal tube in standard position."], ["The lungs are clear."]),
}
with torch.no_grad():
    image_embeddings = trained.encode_image(images[test]).cpu()  # [200, 128]
probabilities = zero_shot_probabilities(image_embeddings, text_encoder, prompts, scale=history["logit_scale"])
truth = {c.split(" (")[0]: labels[test][:, [i for i, n in enumerate(columns) if n.startswith(c.split(" (")[0])]].amax(1)
         for c in columns}
for observation, p in probabilities.items():
    print(f"{observation:17s} zero-shot AUC {roc_auc(p, truth[observation]):.2f}")

# %% [markdown]
# ## 9 · Retrieval: find the report for an image
# Recall@k: how often the paired report is among the k most similar texts. Because many
# synthetic reports describe the same findings, we also count a hit when the retrieved report
# has exactly the same labels.

# %%
with torch.no_grad():
    text_embeddings = text_encoder.encode_text(texts[test]).cpu()  # [200, 128]
    random_embeddings = random_encoder.encode_image(images[test]).cpu()
same = (labels[test][:, None] == labels[test][None]).all(-1)  # [200, 200]
print("trained, exact report:  ", retrieval_at_k(image_embeddings, text_embeddings, ks=(1, 5, 10)))
print("trained, same findings: ", retrieval_at_k(image_embeddings, text_embeddings, ks=(1, 5), relevant=same))
print(f"chance of an exact hit @10: {10 / 200:.2f}")

# %% [markdown]
# ## 10 · Where does the encoder look?
# The last stage's tokens are a 4 × 4 map. How much does each token change when we remove a
# finding from the same phantom (`toggle_finding`)? The change should sit on the finding's side.

# %%
from xraygpt_lab.data.synthetic.world import toggle_finding
from xraygpt_lab.interpret.maps import upsample_grid
from xraygpt_lab.interpret.plots import overlay

case = next(c for c in cases[test] if c.finding("Pleural Effusion") is not None)
clean = toggle_finding(case, "Pleural Effusion")
with torch.no_grad():
    pair = torch.stack([preprocess(case.image, config.image_size), preprocess(clean.image, config.image_size)])
    tokens = trained.encode_tokens(pair).cpu()  # [2, 16, 128]
change = trained.token_map((tokens[0] - tokens[1]).norm(dim=-1, keepdim=True)[None])[0, ..., 0]  # [4, 4]
up = upsample_grid(change[None], config.image_size)[0].numpy()  # [S, S]: each token's change over its 32 px cell
fig, axes = plt.subplots(1, 2, figsize=(7.4, 3.4), dpi=100)
axes[0].imshow(case.image, cmap="gray", vmin=0, vmax=1)
axes[0].contour(case.masks["Pleural Effusion"].astype(float), levels=[0.5], colors="cyan", linewidths=1.2)
axes[0].set_title(f"{case.finding('Pleural Effusion').side} effusion (cyan: its mask)", fontsize=9)
axes[0].axis("off")
overlay(axes[1], case.image, up, title="how far each token moves without it", baseline="the same film without it",
        mask=case.masks["Pleural Effusion"], label="token change (L2 norm, clipped at 99th pct)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Takeaways and caveats.**
# * Swin = patches → local windows → shifted windows → merging; `transformers.SwinModel` is
#   exactly these few lines, and so is MedCLIP's encoder at 224 px.
# * Pretraining with label-aware targets (MedCLIP's loss, plus the tiny profile's token label
#   loss) makes the findings — and their side — linearly readable from the tokens; a random
#   encoder keeps far less, and small findings stay the hardest.
# * Our world is synthetic and small: AUCs here say nothing about real radiographs. Real
#   MedCLIP was trained on ~20k CheXpert/MIMIC studies; `xraygpt_lab.models.medclip.load_medclip`
#   loads its released weights into the same `VisionEncoder` (`full` profile).

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
#
# <details><summary>Answer (click)</summary>
#
# CLIP's target is one-hot: image 1 must match report 1 and is pushed *away* from report 2,
# although report 2 describes the same finding. MedCLIP's target is `softmax(label_sim)` over the
# row: reports 1 and 2 have the same labels, so both get the same, highest weight, and reports with
# other findings get less. In a dataset where most studies are normal, CLIP would push every normal
# film away from almost every other normal report in its batch — false negatives that fight the
# learning signal; semantic matching counts them as right.
#
# </details>
