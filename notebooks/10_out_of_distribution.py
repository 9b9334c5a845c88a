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
# # 10 · Out of distribution: does the model know when an image is not from its world?
#
# The tiny XrayGPT was trained on one world: synthetic chest films. Give it a real radiograph, a
# CT slice or a square of noise and it still writes a fluent report, in the same tone. This
# notebook shows why, and builds the check that `xraygpt-lab describe`, `chat`, `explain` and the
# chat panel now run on every image: a **score on the frozen encoder's features**, calibrated on
# synthetic films the model never saw.
#
# **Learning goals**
# 1. See that a generative model has no way to say "I don't know this kind of image".
# 2. Score how unusual an image is for the encoder: a Gaussian per feature level and the
#    Mahalanobis distance to it, with a shrunk covariance.
# 3. Calibrate a threshold on held-out images, and read the score histogram of synthetic films
#    against real films, CT and MR slices, photographs, blank and noise images.
# 4. Know what the check cannot tell you.
#
# Library: `xraygpt_lab/models/ood.py` (score, calibration, input checks), `runs.ood_detector`
# (the run's calibration, stored in `ood.safetensors` in the run folder).

# %%
import time
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
import numpy as np
import torch
import transformers
from pydicom.data import get_testdata_file

from xraygpt_lab.data.readers.images import load_image, preprocess
from xraygpt_lab.data.synthetic.world import render_cases
from xraygpt_lab.device import describe_device
from xraygpt_lab.models.ood import calibration_seeds, input_problems, ledoit_wolf
from xraygpt_lab.runs import ensure_tiny_run, load_run, ood_detector

plt.rcParams.update({"figure.dpi": 100, "font.size": 9})
set_matplotlib_formats("jpeg")  # radiograph noise makes PNG figures large
transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars in the outputs
torch.set_num_threads(1)  # the tiny model's kernels are too small to split across threads
device = torch.device("cpu")
print("Running on:", describe_device(device))
START = time.perf_counter()

# %% [markdown]
# ## 0. The trained run, and images from inside and outside its world
#
# `ensure_tiny_run()` trains the tiny run once and then reuses it. `ood_detector(model)` reads
# the run's calibration from `ood.safetensors`, or makes it the first time (about 20 s: 500
# synthetic films of two seeds the run never trained on).
#
# The outside images are public test data that ship with `pydicom` and `pydicom-data` (a real
# chest CR with three edited copies, CT slices, MR slices) and with matplotlib (a photograph),
# plus two blank images (black and white) and a noise image. The inside images are synthetic films
# of another fresh seed.

# %%
model = load_run(ensure_tiny_run(), device=device)
detector = ood_detector(model, progress=False)
SIZE, config = model.image_size, model.run_config
TEST_SEED = max([*calibration_seeds(config), *config["seeds"].values()]) + 1000
print(f"training seeds {config['seeds']}, calibration seeds {calibration_seeds(config)}, test seed {TEST_SEED}")


def dicom(*names):
    """pydicom test files that are installed, as grey images in [0, 1]."""
    paths = [get_testdata_file(n, download=False) for n in names]
    return [load_image(p) for p in paths if p is not None]


sample_data = Path(matplotlib.get_data_path()) / "sample_data"
rng = np.random.default_rng(0)
films = [c.image for c in render_cases(200, SIZE, TEST_SEED, workers=1)]
chest = dicom("RG1_UNCR.dcm")  # empty without pydicom-data
chest += [c[:: 2, :: 2] ** g for c in chest[:1] for g in (0.7, 1.0, 1.4)]  # reduced, brightened, darkened
groups = {
    "synthetic films (held out)": films,
    "real chest CR": chest,
    "CT slices": dicom("CT_small.dcm", "693_UNCR.dcm", "eCT_Supplemental.dcm", "explicit_VR-UN.dcm", "bad_sequence.dcm"),
    "MR slices": dicom("MR_small.dcm", "MR2_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "examples_overlay.dcm"),
    "photograph, blank, noise": [load_image(sample_data / "grace_hopper.jpg"), np.zeros((256, 256), np.float32),
                                 np.ones((256, 256), np.float32), rng.random((256, 256)).astype(np.float32)],
}
print({name: len(images) for name, images in groups.items()})

# %% [markdown]
# ## 1. The model answers about anything
#
# One image of each group, through the model exactly as `xraygpt-lab describe` sends it: the
# MedCLIP transform (pad to a square, resize to 128 px, normalise), the frozen encoder, the one
# linear layer, the LLM.

# %%
picks = {name: images[0] for name, images in groups.items() if images}
pixels = torch.stack([preprocess(image, SIZE) for image in picks.values()])  # [5, 1, 128, 128]
reports = model.describe(pixel_values=pixels, max_new_tokens=40)
fig, axes = plt.subplots(1, len(picks), figsize=(2.2 * len(picks), 2.4))
for ax, (name, image), report in zip(axes, picks.items(), reports):
    ax.imshow(pixels[list(picks).index(name), 0], cmap="gray")
    ax.set_title(name, fontsize=8)
    ax.axis("off")
    print(f"{name}:\n    {report}")
plt.tight_layout()
plt.show()

# %% [markdown]
# Every picture, as the model sees it (128 px), gets a report in the same confident voice: the
# real film gets a left-sided pacemaker and severe pulmonary edema, the CT slice moderate pulmonary
# edema and a rib fracture, the MR slice an endotracheal tube 4 cm above the carina and a central
# venous catheter, and the photograph a large left pneumothorax. Nothing in the model can answer
# "this is not a chest film": the LLM was trained only on reports, the linear layer maps *any* 128-wide
# feature vector to some image tokens, and greedy decoding always picks the likeliest next word.
# A softmax probability does not help either: the report's words are likely *given* the prompt,
# whatever the image was.
#
# ## 2. A score on the encoder's features
#
# What does change between the groups is what the frozen encoder computes. For each level `l` of
# the encoder (the patch embedding, then each Swin stage) we mean-pool the tokens to a vector
# `f_l` of width `d_l` (32, 64, 128, 128 here), and fit a Gaussian `N(μ_l, Σ_l)` to 300 synthetic
# films. An image's score is the squared **Mahalanobis distance**, divided by `d_l` so that the
# levels are comparable (held-out films score about 0.13–1.0 here), averaged over the levels (Lee
# et al., NeurIPS 2018):
#
# `score = mean_l (f_l − μ_l)ᵀ Σ_l⁻¹ (f_l − μ_l) / d_l`
#
# 300 films estimate a 128 × 128 covariance poorly (its small eigenvalues come out too small, and
# the inverse blows them up), so `Σ_l` is shrunk towards a scaled identity by the Ledoit–Wolf
# rule. Here is the last level by hand, next to the library's stored Gaussian:

# %%
levels = model.encoder.pooled_stages(pixels)  # per level [5, d_l]
print("level widths:", [f.shape[1] for f in levels])
fit_films = [c.image for c in render_cases(300, SIZE, calibration_seeds(config)[0], workers=1)]
with torch.no_grad():
    fit_last = model.encoder.pooled_stages(torch.stack([preprocess(f, SIZE) for f in fit_films]))[-1].double()
mean, covariance, shrinkage = ledoit_wolf(fit_last)  # [128], [128, 128]
centred = levels[-1].detach().double() - mean  # [5, 128]
by_hand = torch.einsum("bi,ij,bj->b", centred, torch.linalg.inv(covariance), centred) / mean.numel()
print(f"Ledoit-Wolf shrinkage of the last level: {shrinkage:.3f}")
for name, value in zip(picks, by_hand):
    print(f"  {name:28s} last-level score {value:8.2f}")
assert torch.allclose(mean, detector.means[-1])  # the same films, the same Gaussian as the stored one

# %% [markdown]
# ## 3. Calibration, and the histogram
#
# A threshold needs films the Gaussian was *not* fitted on (on its own fitting films the distance
# comes out too small). The calibration scores 200 films of a second fresh seed and puts the
# threshold at the 99.5th percentile of a log-normal fitted to those scores (a percentile read
# straight off 200 scores moves by about 15 % from one set of films to the next). Below, each
# group's scores (all levels) against that threshold:

# %%
scores = {}
for name, images in groups.items():
    if images:
        batch = torch.stack([preprocess(image, SIZE) for image in images])  # [n, 1, 128, 128]
        scores[name] = detector.scores(model.encoder, batch).numpy()
everything = np.concatenate(list(scores.values()))
bins = np.logspace(np.log10(everything.min() / 1.2), np.log10(everything.max() * 1.2), 45)  # every score drawn
fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 4.2), sharex=True, height_ratios=[3, 2])
top.hist(scores["synthetic films (held out)"], bins=bins, color="tab:blue")
top.set(ylabel="films", title=f"Feature score of the tiny run's encoder (threshold {detector.threshold:.2f}, dashed)")
others = [name for name in scores if not name.startswith("synthetic")]
for row, name in enumerate(others):  # one dot per image, one row per group
    bottom.scatter(scores[name], np.full(len(scores[name]), row), s=22, alpha=0.8)
bottom.set(yticks=range(len(others)), yticklabels=[f"{n} ({len(scores[n])})" for n in others], ylim=(-0.7, len(others) - 0.3),
           xscale="log", xlabel="feature score (mean over levels of Mahalanobis² / width; log scale)")
top.text(0.99, 0.9, f"{len(scores['synthetic films (held out)'])} held-out synthetic films", transform=top.transAxes,
         ha="right", fontsize=8)
for ax in (top, bottom):
    ax.axvline(detector.threshold, color="k", linestyle="--")
plt.tight_layout()
plt.show()
for name, values in scores.items():
    right = (values <= detector.threshold) if name.startswith("synthetic") else (values > detector.threshold)
    verb = "in distribution" if name.startswith("synthetic") else "flagged"
    print(f"{name:28s} {verb}: {right.sum():3d} of {len(values):3d}   scores {values.min():6.2f} to {values.max():6.2f}")

# %% [markdown]
# **What the figure shows.** The horizontal axis is the feature score on a log scale, shared by
# both panels; the dashed line is the run's threshold. Top: a histogram of the 200 held-out
# synthetic films (films per bin); they lie between 0.13 and about 1.0: 199 of the 200 below the
# threshold and 1 just above it, a false alarm on a film from the model's own world (the threshold
# is set so that about 1 in 200 lies above). Bottom: one dot per image
# of the other groups, one row per group (the number of images in brackets). Every one lies far
# to the right of the line: the real chest CR and its edited copies, the CT and MR slices, the
# photograph, the blanks and the noise image all score at least four times the threshold (each
# group's range is printed below). On this run the separation is wide, not marginal:
# `benchmarks/ood_rates.py` measures it on more images of each kind (12 real-film variants, 20 CT
# and 22 MR slices, 1×1 and elongated images …).
#
# ## 4. Input checks, and what the score cannot tell you
#
# The transform pads every image to a square and resizes it, so the encoder never sees that an
# image was 1×1 or an 8×128 strip. Two checks on the file's own size add to the score:

# %%
for shape in [(1, 1), (128, 8), (2000, 60), (128, 128), (1955, 1841)]:
    print(f"{shape[1]:>4}×{shape[0]:<4} px:", input_problems(shape) or "fine")
strip = films[0][:, 60:68]  # [128, 8]: a strip of a film
verdict = detector.check(model.encoder, preprocess(strip, SIZE)[None], [strip.shape])[0]
print(verdict.summary())

# %% [markdown]
# The score says *"unlike the films this encoder was trained on"*, nothing more:
#
# * **Not "wrong".** A flagged image may get a correct report by luck, and a film that passes can
#   still be misread: the score looks at the encoder, not at the report.
# * **The reference is the synthetic world.** Every real film is flagged here, which is right for
#   a model that has only seen phantoms. A model trained on real films (the `full` profile) must
#   be calibrated on held-out *real* films; this calibration draws synthetic ones only.
# * **One Gaussian per level** blurs the differences between findings: a film with several large
#   findings scores higher than a normal one, and a rare enough combination can cross the line.
# * **A score can be fooled.** An image made to match the feature statistics (an adversarial
#   example) passes; this is a guard against honest mistakes, not against an attacker.

# %%
print(f"notebook body ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
# ## Exercise: the feature score from the Gaussians
#
# Write `feature_score(levels, means, precisions)`: `levels` is a list of pooled features, one
# `[B, d_l]` tensor per level; `means[l]` is `[d_l]` and `precisions[l]` the inverse covariance
# `[d_l, d_l]`. Return the scores `[B]`: for each level the squared Mahalanobis distance
# `(f − μ)ᵀ P (f − μ)` divided by `d_l`, averaged over the levels.
#
# Solution: `tutorials/solutions/s10_out_of_distribution.py`; library:
# `models.ood.OODDetector.score_features`.

# %%
from xraygpt_lab.exercises import check_feature_score  # noqa: E402


def feature_score(levels, means, precisions):
    # YOUR CODE HERE
    raise NotImplementedError


check_feature_score(feature_score)
