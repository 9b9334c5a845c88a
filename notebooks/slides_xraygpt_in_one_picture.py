# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: title
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
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
import matplotlib.pyplot as plt
import torch
from IPython.display import display
from matplotlib_inline.backend_inline import set_matplotlib_formats

from xraygpt_lab.data.synthetic.world import render_case
from xraygpt_lab.models.conversation import END_SYM, IMAGE_SLOT, xraygpt_prompt
from xraygpt_lab.models.diagram import ArchitectureSizes, architecture_figure

FULL = ArchitectureSizes.full()  # MedCLIP's Swin-tiny (7 x 7 tokens of 768) and Vicuna-7B (4096 wide)
ENCODER_WIDTH, LLM_WIDTH, TOKENS = FULL.d_vision, FULL.d_llm, FULL.tokens
VICUNA_7B_PARAMETERS = FULL.llm_params  # LLaMA-7B's count (benchmarks/results/gpu-h200-2026-12-04.json)
set_matplotlib_formats("png")  # figures shown as PNG whatever the backend (slides are built with Agg)


# %% [markdown] slideshow={"slide_type": "slide"}
# ## The picture

# %% tags=["remove_input"]
case = render_case(seed=106, size=128)  # a synthetic PA film, drawn by code: a left effusion
film = case.image  # [128, 128]
answer = next(s for s in case.report.split(". ") if "effusion" in s)  # its report's sentence
fig = architecture_figure(FULL, film, answer + ".")
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
