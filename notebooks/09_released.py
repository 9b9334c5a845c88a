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
# # 09 · Explaining the released XrayGPT
#
# Notebooks 00–08 build XrayGPT as the paper describes it: a Swin encoder, **one linear layer**,
# an LLM. The model its authors released is built differently, on MiniGPT-4's vision path:
#
# ```
# radiograph → BLIP-2 processor [1, 3, 224, 224] → EVA ViT-g (39 blocks) + ln_vision [1, 257, 1408]
#   → BLIP-2 Q-Former: 32 learned query tokens read the image by cross-attention [1, 32, 768]
#   → llama_proj [1, 32, 4096] → radiology Vicuna-7B
# ```
#
# The LLM no longer reads image patches: it reads **32 query tokens**, each a mixture of the
# whole image that the Q-Former chose. So "which image token did the word look at?" has no
# place on the image until we follow each query back through its cross-attention. This notebook
# runs every explanation of notebooks 05 and 06 through that path.
#
# **Learning goals**
#
# 1. Open the released model from its files and follow one image through its shapes.
# 2. Attribute a phrase to the pixels through ViT + Q-Former + projection (Integrated Gradients,
#    the gated map, Grad-CAM on a ViT block, IG per query token …) and check completeness.
# 3. Read the LLM's attention from the phrase to the 32 query tokens, and the Q-Former's
#    cross-attention from each query to the 16 × 16 patches, rolled out to the pixels.
# 4. Say what a map of this model can and cannot tell, and which model produced it.
#
# **Which model?** Set `XRAYGPT_RELEASE_RUN` to a run folder made by `xraygpt-lab release init`
# from the downloaded files ([docs/released.md](../docs/released.md); the 7B model needs a GPU).
# Without it, the notebook builds a **reduced model with random weights** in exactly the released
# files' layout (224 px, 14 px patches, 32 queries; narrow and shallow), so that everything runs on
# a laptop in about a minute. Its maps show the *mechanics* of each method, not medicine: every
# figure says which model it shows.

# %%
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib_inline.backend_inline import set_matplotlib_formats
from transformers.utils import logging as hf_logging

from xraygpt_lab.data.synthetic.lesions import Finding
from xraygpt_lab.data.synthetic.world import render_case
from xraygpt_lab.device import default_device, describe_device
from xraygpt_lab.errors import XrayGPTLabError
from xraygpt_lab.interpret.attention import llm_image_attention
from xraygpt_lab.interpret.attribution import MAP_KINDS, RECOMMENDED_IG, explain, make_baseline
from xraygpt_lab.interpret.localization import observation_phrase
from xraygpt_lab.interpret.plots import compare_methods, query_attention_figure, query_maps_figure
from xraygpt_lab.interpret.stacks import vision_stack
from xraygpt_lab.interpret.targets import phrase_target
from xraygpt_lab.models.reduced_release import ReducedLayout, write_reduced_release
from xraygpt_lab.models.released import load_release
from xraygpt_lab.runs import load_run

warnings.filterwarnings("ignore", category=UserWarning)
set_matplotlib_formats("jpeg")  # radiograph noise makes PNG figures large
torch.set_num_threads(2)
pd.set_option("display.width", 120)
hf_logging.disable_progress_bar()
device = default_device()  # CUDA when present, else the CPU; XRAYGPT_DEVICE=cpu forces the CPU
print("Running on:", describe_device(device))
ENV = "XRAYGPT_RELEASE_RUN"


def open_model():
    """The released XrayGPT from ``$XRAYGPT_RELEASE_RUN``, else a reduced random model in its layout."""
    folder = os.environ.get(ENV, "").strip()
    if folder:
        try:
            return load_run(Path(folder).expanduser(), device=device), "the released XrayGPT", True
        except XrayGPTLabError as err:
            print(f"Could not open ${ENV}: {err}")
    else:
        print(f"${ENV} is not set: using the reduced random model (docs/released.md says how to set it).")
    layout = ReducedLayout()
    with tempfile.TemporaryDirectory(prefix="xraygpt-release-") as tmp:
        files = write_reduced_release(tmp, layout, seed=0)
        model = load_release(files["vit"], files["qformer"], files["checkpoint"], files["llm"], device=device,
                             **layout.heads)
    return model, "a reduced RANDOM model in the released layout", False


model, SHOWN, REAL = open_model()
TAG = "released XrayGPT" if REAL else "random stand-in: mechanics, not medicine"
s = model.release_report.sizes
print(f"\nSHOWING: {SHOWN}" + ("" if REAL else " (random weights: the maps show the mechanics, not medicine)"))
pd.DataFrame([
    {"part": "EVA ViT", "this model": f"{s.vision_depth} blocks × {s.vision_width}, {s.vision_heads} heads",
     "released": "39 blocks × 1408, 16 heads"},
    {"part": "image / patch", "this model": f"{s.image_size} px / {s.patch_size} px", "released": "224 px / 14 px"},
    {"part": "Q-Former", "this model": f"{s.qformer_layers} layers × {s.qformer_width}, {s.num_query_tokens} queries",
     "released": "12 layers × 768, 32 queries"},
    {"part": "llama_proj → LLM", "this model": f"{s.qformer_width} → {s.llm_width}, "
                                               f"{model.llm.config.num_hidden_layers} LLM layers",
     "released": "768 → 4096, 32 LLM layers"},
])

# %% [markdown]
# ## 1. One radiograph through the released vision path
#
# A synthetic phantom with a large left pleural effusion (its true mask is the cyan contour in
# every figure; the patient's left is on the image's right). BLIP-2's eval processor turns it into
# RGB pixels normalised with CLIP's mean and standard deviation, **stretched** to the square
# (MedCLIP's transform pads instead). Hooks show each stage's shape.

# %%
case = render_case(31, s.image_size, findings=[Finding("Pleural Effusion", side="left", severity="large")])
mask = case.masks["Pleural Effusion"]
pixels = model.image_processor(case.image).to(device)  # [1, 3, S, S]
view = model.pixel_space.to_grey(pixels)[0]  # [S, S]: what the ViT sees, back in grey
shapes = {"pixels": tuple(pixels.shape)}
hooks = [model.encoder.hook_vision.register_forward_hook(lambda m, i, o: shapes.update(vit=tuple(o.shape))),
         model.encoder.hook_tokens.register_forward_hook(lambda m, i, o: shapes.update(queries=tuple(o.shape))),
         model.hook_projection.register_forward_hook(lambda m, i, o: shapes.update(llm_tokens=tuple(o.shape)))]
with torch.no_grad():
    model.embed_image(pixel_values=pixels)
for hook in hooks:
    hook.remove()
grid = vision_stack(model.encoder).grid
print(f"pixels {shapes['pixels']} → ViT + ln_vision {shapes['vit']} ([CLS] + {grid[0]}×{grid[1]} patches)"
      f" → Q-Former {shapes['queries']} → llama_proj {shapes['llm_tokens']} (spliced at <ImageHere>)")

# %% [markdown]
# ## 2. The number we explain
#
# As in notebook 05: the log-probability of one phrase, teacher-forced inside a report, given the
# image and the prompt. We use the phantom's own report, so the phrase is certainly there (the
# random stand-in writes noise; the released model writes its own report, printed below).

# %%
phrase = observation_phrase(case.summary, "Pleural Effusion")
target = phrase_target(model, phrase, case.summary)
if REAL:
    with torch.no_grad():
        print("the released model's report:", model.describe(pixel_values=pixels, max_new_tokens=60)[0])
else:
    print("(the random stand-in's own report is noise: not shown)")
print(f"explained: log P({phrase!r} | image, prompt, report so far) = {float(target(pixels)[0]):.2f}")
print("phrase tokens:", target.target_token_texts)

# %% [markdown]
# ## 3. Which pixels raised the phrase? Attribution through ViT + Q-Former + projection
#
# The Captum methods do not care what lies between the pixels and the number: the same code runs.
# What changes is asked of the model: baselines are made in **its** pixel space (black = RGB 0
# under CLIP normalisation), and the channels' attributions are summed per pixel. Three methods
# need a place inside the network:
#
# | method | tiny model (notebook 05) | released model |
# |---|---|---|
# | `gradcam` | last Swin stage, 4 × 4 tokens | last ViT block the Q-Former reads, 16 × 16 patches ([CLS] left out) |
# | `feature_ig`, the gate of the recommended IG | conv stem at strides 4 and 8 | the patch embedding, stride 14: a ViT's only spatial feature map, so the gate has one factor |
# | `layer_ig` | projection output, one value per grid token | projection output, one value per **query**, spread over the patches where that query reads (section 5) |

# %%
SETTINGS = {
    "ig (recommended, gated)": ("ig", {**RECOMMENDED_IG, "n_steps": 16, "internal_batch_size": 8}),
    "smoothgrad": ("smoothgrad", {"nt_samples": 8, "internal_batch_size": 8}),
    "occlusion": ("occlusion", {"occlusion_window": 2 * s.patch_size, "occlusion_stride": s.patch_size,
                                "internal_batch_size": 16}),
    "saliency": ("saliency", {}),
    "gradientshap": ("gradientshap", {"shap_samples": 8}),
    "gradcam (ViT block)": ("gradcam", {}),
    "feature_ig (patch embedding)": ("feature_ig", {"n_steps": 16, "internal_batch_size": 8}),
    "layer_ig (per query)": ("layer_ig", {"n_steps": 16, "internal_batch_size": 8}),
}
maps, rows = {}, []
for name, (method, kwargs) in SETTINGS.items():
    torch.manual_seed(0)
    np.random.seed(0)
    start = time.perf_counter()
    maps[name] = explain(target, pixels, method, **kwargs)
    rows.append({"map": name, "resolution": maps[name].resolution, "seconds": round(time.perf_counter() - start, 2)})
compare_methods(view, maps, mask=mask, suptitle=f"{phrase!r} — {TAG}")
pd.DataFrame(rows)

# %% [markdown]
# **Completeness holds through the whole stack.** Integrated Gradients' attributions add up to
# `f(image) − f(baseline)` (Sundararajan et al. 2017), here across 3 channels, 39 (or 4) ViT blocks,
# the Q-Former and the LLM. Layer IG on the projection does the same per query token.

# %%
ig_black = explain(target, pixels, "ig", baseline="black", n_steps=32, internal_batch_size=8)
layer_black = explain(target, pixels, "layer_ig", baseline="black", n_steps=32, internal_batch_size=8)
with torch.no_grad():
    gap = float(target(pixels)[0] - target(make_baseline(pixels, "black", model.pixel_space)[0])[0])
per_query = layer_black.raw.sum(dim=-1)  # [32]: each query token's share
print(f"f(image) − f(black) = {gap:.3f};  Σ pixel IG = {ig_black.map.sum():.3f};  "
      f"Σ query IG = {float(per_query.sum()):.3f}")
print("queries that carry most of it:", per_query.abs().argsort(descending=True)[:5].tolist())

# %% [markdown]
# ## 4. Attention from the phrase to the 32 query tokens
#
# Teacher-forced, the LLM's attention from each position that predicts a phrase token to the 32
# image slots of the prompt (`[layers, heads, phrase tokens, queries]`, averaged over layers and
# heads below). Query `q` is a column — it is not a place in the image.

# %%
attention = llm_image_attention(target, pixels)
print("weights [layers, heads, phrase tokens, queries]:", tuple(attention.weights.shape),
      "| share of attention on the image:", attention.image_share.mean().numpy().round(3))
query_attention_figure(attention, title=f"phrase tokens → query tokens — {TAG}");

# %% [markdown]
# ## 5. Where does each query read? Q-Former cross-attention, rolled out to the pixels
#
# Each query token attends to the ViT's 257 tokens in every second Q-Former layer. We average its
# cross-attention over heads and layers, carry it back through the ViT's own attention to the
# input patches (rollout: `R = Π (I + A_l)`, residual handled as `R̄ = rownorm(R − I) + I`,
# Chefer et al. 2021), drop [CLS] and normalise each map to 1. That places every query on the
# 16 × 16 patch grid — and with it the attention of section 4 and the layer IG of section 3.

# %%
layout = vision_stack(model.encoder).layout(pixels)  # [32, 16, 16], each sums to 1
print("per-query maps:", tuple(layout.shape), "| sums:", layout.sum(dim=(1, 2))[:4].numpy().round(4), "…")
query_maps_figure(view, layout, title=f"where each query token reads — {TAG}");

# %% [markdown]
# Four maps built from attention weights:
#
# * `attention`: section 4's weights, each query spread over its patches (above) — where the phrase read;
# * `cross_attention`: the mean of the 32 maps above — where the Q-Former reads, for any phrase;
# * `rollout`: the same through the Q-Former's own self-attention too (Chefer et al.'s rules for a
#   stream with self- and cross-attention), target-free;
# * `grad_rollout`: every attention weighted by its gradient for the phrase, `(∇A ⊙ A)⁺`.

# %%
attention_maps = {kind: explain(target, pixels, kind) for kind in ("attention", "cross_attention", "rollout",
                                                                    "grad_rollout")}
compare_methods(view, attention_maps, mask=mask, suptitle=f"attention maps — {TAG}")
drawn = {m.method for m in [*maps.values(), *attention_maps.values()]}
print("map kinds drawn:", len(drawn), "of", len(MAP_KINDS), "| missing:", sorted(set(MAP_KINDS) - drawn) or "none")

# %% [markdown]
# ## 6. Exercise: where does a query read?
#
# Write `query_maps(vision, cross, grid)`: `vision` is the list of the ViT's head-averaged
# attentions `[T, T]` (first block first; token 0 is [CLS], then the patches row by row), `cross`
# a query's cross-attention `[Q, T]`, `grid = (rows, cols)`. Return `[Q, rows, cols]`:
#
# 1. `R = (I + A_L) ⋯ (I + A_1)` — the later block on the left;
# 2. `R̄ = rownorm(R − I) + I`;
# 3. `M = cross @ R̄`, drop column 0 ([CLS]), lay the rest out as `(rows, cols)`;
# 4. normalise each query's map to sum 1.
#
# `check_query_maps` compares it with the library on three grids and names the usual mistake.

# %%
from xraygpt_lab.exercises import check_query_maps  # noqa: E402


def query_maps(vision, cross, grid):
    raise NotImplementedError("your turn")


check_query_maps(query_maps)

# %% [markdown]
# A reference solution is in `tutorials/solutions/s09_released.py` (try first!).
#
# **Caveats.** On the random stand-in every map is about the *mechanics*: which numbers flow where,
# with random weights — do not read anatomy into them. On the released model, the same maps still
# carry notebook 06's warning (attention says where information was read, not that it mattered)
# and one more: a query token mixes the whole image, so a map that goes through the queries
# (`layer_ig`, `attention`) can be no sharper than the queries' cross-attention. The pixel
# methods (`ig`, `occlusion`) do not depend on that choice; compare them with the attention maps
# before trusting either, and against masks or counterfactuals where you have them (notebook 05).
