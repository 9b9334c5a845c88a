# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: title
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   title: XrayGPT in one picture
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # XrayGPT in one picture
#
# A **frozen** medical image encoder, **one trainable linear layer**, a **frozen** language model.
#
# Thawakar et al. 2023, *XrayGPT: Chest Radiographs Summarization using Medical Vision-Language
# Models* (arXiv 2306.07971). `make slides` turns this notebook into reveal.js slides; the picture
# is drawn, and the parameter counts and the prompt are computed, by the toolkit's own code.

# %% slideshow={"slide_type": "skip"} tags=["remove_input"]
import textwrap

import matplotlib.pyplot as plt
import torch
from IPython.display import display
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib_inline.backend_inline import set_matplotlib_formats

from xraygpt_lab.data.synthetic.world import render_case
from xraygpt_lab.models.conversation import END_SYM, IMAGE_SLOT, xraygpt_prompt

ENCODER_WIDTH, LLM_WIDTH, TOKENS = 768, 4096, 7 * 7  # MedCLIP Swin-tiny features, Vicuna-7B, 7x7 grid
VICUNA_7B_PARAMETERS = 6_738_415_616  # LLaMA-7B's count (benchmarks/results/gpu-h200-2026-12-04.json)
FROZEN, TRAINED, TEXT = "#dbe4f0", "#f6c85f", "#222222"
set_matplotlib_formats("png")  # figures shown as PNG whatever the backend (slides are built with Agg)


def box(ax, x, y, w, h, title, lines, colour):
    """A rounded box at (x, y) (lower left) with a bold title and smaller lines under it."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=colour, edgecolor="#555555", linewidth=1.2))
    ax.text(x + w / 2, y + h - 0.15, title, ha="center", va="top", fontsize=13, weight="bold",
            color=TEXT)
    ax.text(x + w / 2, y + h - 0.6, "\n".join(lines), ha="center", va="top", fontsize=10.5,
            color=TEXT, linespacing=1.4)


def arrow(ax, start, end, label="", side="above"):
    """An arrow from ``start`` to ``end``, its label above, left of or right of its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, linewidth=1.5,
                                 color="#444444"))
    x, y = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
    place = {"above": (x, max(start[1], end[1]) + 0.1, "center", "bottom"),
             "left": (x - 0.12, y, "right", "center"), "right": (x + 0.12, y, "left", "center")}
    px, py, ha, va = place[side]
    ax.text(px, py, label, ha=ha, va=va, fontsize=9.5, color="#444444")


# %% [markdown] slideshow={"slide_type": "slide"}
# ## The picture

# %% tags=["remove_input"]
case = render_case(seed=106, size=128)  # a synthetic PA film, drawn by code: a left effusion
film = case.image  # [128, 128]
answer = next(s for s in case.report.split(". ") if "effusion" in s)  # its report's sentence
fig, ax = plt.subplots(figsize=(12, 5))
ax.set_xlim(0, 12.4)
ax.set_ylim(-1.0, 4.1)
ax.axis("off")
ax.imshow(film, cmap="gray", extent=(0.1, 1.7, 0.95, 2.55))
ax.text(0.9, 0.8, "chest radiograph", ha="center", va="top", fontsize=10)
box(ax, 2.1, 0.8, 2.3, 1.9, "Vision encoder", ["MedCLIP, Swin-tiny", "frozen",
                                                  f"{TOKENS} tokens x {ENCODER_WIDTH}"], FROZEN)
box(ax, 4.95, 1.05, 1.5, 1.4, "Linear", [f"{ENCODER_WIDTH} -> {LLM_WIDTH}", "trained"], TRAINED)
box(ax, 7.2, 0.8, 2.3, 1.9, "Language model", ["Vicuna-7B (LLaMA)", "frozen", "writes the answer"],
    FROZEN)
arrow(ax, (1.75, 1.75), (2.05, 1.75))
arrow(ax, (4.45, 1.75), (4.9, 1.75))
prompt = xraygpt_prompt("Describe the given chest x-ray image in detail.")
ax.text(6.3, 3.75, prompt, ha="center", va="center", fontsize=10.5, family="monospace",
        bbox={"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": "#999999"})
arrow(ax, (5.6, 2.5), (4.4, 3.45), f"{TOKENS} embeddings\nreplace <ImageHere>", side="right")
arrow(ax, (8.35, 3.45), (8.35, 2.75), "the whole prompt", side="right")
arrow(ax, (9.55, 1.75), (9.95, 1.75))
ax.text(10.05, 1.75, textwrap.fill(answer, 22) + "." + END_SYM, ha="left", va="center",
        fontsize=10, style="italic")
ax.text(0.1, -0.25, "Stage 1: MIMIC-CXR summaries", fontsize=12, weight="bold", va="center")
arrow(ax, (3.85, -0.25), (4.45, -0.25))
ax.text(4.6, -0.25, "Stage 2: OpenI summaries", fontsize=12, weight="bold", va="center")
ax.text(0.1, -0.8, "In both stages only the yellow box learns; the blue boxes never change.",
        fontsize=11, va="center")
fig.tight_layout()
display(fig)
plt.close(fig)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The frozen encoder
#
# * **MedCLIP**: a Swin-tiny transformer trained on radiographs and their reports, contrastively,
#   with *soft* targets: two reports with the same findings are both right answers.
# * A 224-pixel film becomes a **7 × 7 grid of tokens**, each a 768-number description of its
#   patch.
# * Frozen: XrayGPT never changes it, so everything the model can say about an image must
#   already be in these tokens. (Notebook 01 builds and trains one at 128 pixels.)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The one linear layer

# %% tags=["remove_input"]
projection = torch.nn.Linear(ENCODER_WIDTH, LLM_WIDTH)  # [49, 768] tokens -> [49, 4096] embeddings
trained = sum(p.numel() for p in projection.parameters())
print(f"trained: {ENCODER_WIDTH} x {LLM_WIDTH} + {LLM_WIDTH} = {trained:,} parameters")
print(f"frozen:  {VICUNA_7B_PARAMETERS:,} (Vicuna-7B)")
print(f"learns:  {100 * trained / (trained + VICUNA_7B_PARAMETERS):.3f} % of all parameters")

# %% [markdown]
# It maps each image token into the language model's word-embedding space: the LLM then reads
# 49 "words" that describe the image. It can rotate and scale what the encoder saw; it cannot
# add a finding the encoder never noticed. (Notebook 03 trains it.)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The prompt template

# %% tags=["remove_input"]
print(xraygpt_prompt("{instruction}"))
print(f"\nimage slot:    {IMAGE_SLOT}\nanswers end:   {END_SYM}")

# %% [markdown]
# * `<ImageHere>` is replaced by the 49 projected embeddings; the text around it is tokenised.
# * Training target: the doctor's answer followed by `###`; the loss counts **only** those
#   tokens, never the prompt or the image.
# * Generation stops at `###`. A chat keeps earlier turns in the same format. (Notebooks 03, 04.)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The language model
#
# * **Vicuna-7B**, a LLaMA model, fine-tuned by XrayGPT's authors first on medical conversations,
#   then on radiology conversations, before the alignment.
# * Frozen during the alignment: it already writes fluent reports; it only has to learn to
#   *read* the 49 image embeddings.
# * The workshop's stand-in is a 3-layer LLaMA trained from scratch on synthetic reports: the same
#   `LlamaForCausalLM` code with about a million parameters instead of 6.7 billion. (Notebook 02.)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Two training stages, one trainable layer
#
# | stage | data | what learns |
# |---|---|---|
# | 1 | MIMIC-CXR: 114,690 reports, rewritten as short summaries | the linear layer |
# | 2 | OpenI: 3,403 summaries, cleaner and shorter | the same linear layer |
#
# Then: chat with it (04), ask which pixels made it say "effusion" (05, 06), score it against
# baselines that never look at the image (07), and see the same code at 7B (08).
