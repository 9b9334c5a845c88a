# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · The synthetic chest-radiograph world
#
# XrayGPT (arXiv 2306.07971) learns from MIMIC-CXR and OpenI: real radiographs with real reports.
# Those need credentialed access, so this toolkit also ships a **synthetic world**: seeded
# phantoms drawn from a parametric anatomy, with findings named exactly as the CheXpert
# observations, pixel masks, and reports written from the ground truth.
#
# **Learning goals**
# 1. Read a frontal (PA) chest radiograph: which structure is where, and why the patient's
#    *left* is on the image's *right*.
# 2. Recognise what each finding looks like: cardiomegaly, effusion, pneumothorax, and the rest.
# 3. Know the data we train on: prevalence, co-occurrence, reports, summaries, conversations.
# 4. Know what a synthetic world can and cannot teach a model.

# %%
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import seaborn as sns

from xraygpt_lab.data.synthetic.anatomy import AnatomyParams
from xraygpt_lab.data.synthetic.lesions import DRAWABLE, Finding
from xraygpt_lab.data.synthetic.world import (WorldConfig, render_case, sample_findings, toggle_finding,
                                        phantom_coordinates)

plt.rcParams.update({"figure.dpi": 60, "font.size": 9})

# %% [markdown]
# ## 1. One radiograph, structure by structure
#
# The image is an attenuation map: `I = 1 - exp(-exposure * A)`, where `A` sums what the X-rays
# pass through. Air is black (0), soft tissue grey, bone white (1). The lungs are dark because
# they are mostly air. Everything else is brighter: the heart and mediastinum, the domes of the
# diaphragm, ribs, clavicles and spine.

# %%
normal = render_case(seed=1, size=256, findings=[])
fig, ax = plt.subplots(figsize=(4.2, 4.2))
ax.imshow(normal.image, cmap="gray", vmin=0, vmax=1)
ax.set_title("seed 1, no finding")
labels = {"trachea": (0.50, 0.20), "clavicle": (0.70, 0.20), "right lung\n(patient)": (0.28, 0.45),
          "left lung\n(patient)": (0.75, 0.45), "heart": (0.56, 0.62), "R dome": (0.27, 0.72),
          "L dome": (0.76, 0.75)}
for name, (cx, cy) in labels.items():
    ax.text(cx * 256, cy * 256, name, color="yellow", fontsize=7, ha="center")
ax.axis("off");

# %% [markdown]
# **Radiological convention.** A PA film is viewed as if you face the patient, so the patient's
# **left** lung is on the **right** of the image. Everywhere in this toolkit `side` means the
# *patient's* side: a `Finding("Pleural Effusion", side="left")` appears on the image's right.
# The heart lies mostly to the patient's left, so it bulges to the image's right:

# %%
heart_cols = np.nonzero(render_case(1, 128, findings=[Finding("Cardiomegaly")]).masks["Cardiomegaly"])[1]
print(f"mean column of the heart mask: {heart_cols.mean():.0f} of 128 (image centre = 64)")
assert heart_cols.mean() > 64

# %% [markdown]
# ## 2. The findings, one at a time, on the same phantom
#
# `render_case(seed, findings=[...])` keeps the anatomy, exposure and noise of `seed` and draws
# only the findings you ask for. Each positive has a ground-truth **mask** (red). Here every
# finding is drawn on the same patient, with its report's impression above the overlay.

# %%
gallery = [
    Finding("Cardiomegaly", severity="moderate"),
    Finding("Pleural Effusion", side="left", severity="moderate"),
    Finding("Pneumothorax", side="right", severity="moderate"),
    Finding("Consolidation", side="right", zone="lower"),
    Finding("Lung Lesion", side="left", zone="upper", detail={"kind": "mass", "size_mm": 45}),
    Finding("Edema", severity="moderate"),
    Finding("Atelectasis", side="left", severity="moderate"),
    Finding("Support Devices", detail={"devices": ["endotracheal tube", "central venous catheter", "pacemaker"]}),
    Finding("Fracture", side="right"),
]


def overlay(case, alpha=0.35):
    """RGB image with every mask tinted red."""
    rgb = np.repeat(case.image[..., None], 3, axis=2)
    for m in case.masks.values():
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array([1.0, 0.1, 0.1])
    return rgb


fig, axes = plt.subplots(3, 6, figsize=(11, 6.4), dpi=55)
for i, f in enumerate(gallery):
    case = render_case(2, 256, findings=[f])
    r, c = divmod(i, 3)
    axes[r, 2 * c].imshow(case.image, cmap="gray", vmin=0, vmax=1)
    axes[r, 2 * c + 1].imshow(overlay(case))
    first = case.report.split("IMPRESSION: ")[1]
    axes[r, 2 * c].set_title(f.observation, fontsize=9)
    axes[r, 2 * c + 1].set_title(first[:46] + ("…" if len(first) > 46 else ""), fontsize=6.5)
for ax in axes.ravel():
    ax.axis("off")
plt.tight_layout()

# %% [markdown]
# **What to look for**
# * *Cardiomegaly*: the heart is wider than half the chest (cardiothoracic ratio > 0.5).
# * *Pleural effusion*: a dense, dependent opacity with a **meniscus** (higher laterally) that
#   blunts the costophrenic angle and hides the dome.
# * *Pneumothorax*: a thin white **visceral pleural line**, with black air and **no lung
#   markings** between it and the chest wall.
# * *Consolidation*: airspace opacity in one zone/lobe. *Edema*: bilateral perihilar haze.
#   *Atelectasis*: a basal plate-like band. *Lesion*: a round nodule (< 3 cm) or a mass.
# * *Support devices*: bright tubes, lines and a pacemaker box. *Fracture*: a step and gap in one rib.
#
# The three findings the issue asks you to tell apart at a glance, at 256 px:

# %%
trio = [Finding("Cardiomegaly", severity="severe"), Finding("Pleural Effusion", side="right", severity="large"),
        Finding("Pneumothorax", side="left", severity="large")]
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
axes[0].imshow(render_case(5, 256, findings=[]).image, cmap="gray", vmin=0, vmax=1)
axes[0].set_title("normal")
for ax, f in zip(axes[1:], trio):
    ax.imshow(render_case(5, 256, findings=[f]).image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{f.severity} {f.side or ''} {f.observation}".replace("  ", " "))
for ax in axes:
    ax.axis("off")

# %% [markdown]
# ## 3. Counterfactuals: toggling one finding
#
# Noise depends on the seed only, so removing a finding changes **only** the pixels of its own
# region (plus the 2-pixel reach of the detector blur). Later notebooks use this to ask
# whether an explanation looks where the finding is.

# %%
from scipy.ndimage import binary_dilation

with_ptx = render_case(3, 128, findings=[Finding("Pneumothorax", side="left", severity="moderate")])
without = toggle_finding(with_ptx, "Pneumothorax")
diff = np.abs(with_ptx.image - without.image)
region = binary_dilation(with_ptx.masks["Pneumothorax"], structure=np.ones((3, 3), bool), iterations=3)
print("pixels changed outside the finding's region:", int(np.count_nonzero(diff[~region])))
fig, axes = plt.subplots(1, 3, figsize=(8, 2.8))
for ax, img, t in zip(axes, [with_ptx.image, without.image, diff], ["with", "without", "|difference|"]):
    ax.imshow(img, cmap="gray"); ax.set_title(t); ax.axis("off")

# %% [markdown]
# ## 4. The anatomy parameters you can turn
#
# Each phantom is an `AnatomyParams` dataclass sampled from healthy adult ranges. Change a field
# and pass `anatomy=` to redraw the same patient. Try the cardiothoracic ratio, the height of the
# domes, the rib spacing, the exposure.

# %%
p = normal.anatomy
pd.DataFrame({"value": p.as_dict()}).T.round(3)

# %%
variants = {
    "as sampled": {},
    "heart_ctr 0.58": {"heart_ctr": 0.58},
    "domes higher": {"costophrenic_y": p.costophrenic_y - 0.12},
    "exposure 2.2": {"exposure": 2.2},
    "rotated 8°": {"rotation_deg": 8.0},
}
fig, axes = plt.subplots(1, len(variants), figsize=(12, 2.8))
for ax, (name, change) in zip(axes, variants.items()):
    params = AnatomyParams(**{**p.as_dict(), **change})
    ax.imshow(render_case(1, 160, findings=[], anatomy=params).image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(name); ax.axis("off")

# %% [markdown]
# In JupyterLab you can turn them with sliders (not run in CI):
# ```python
# from ipywidgets import interact, FloatSlider
# @interact(ctr=FloatSlider(value=0.44, min=0.35, max=0.7, step=0.01),
#           exposure=FloatSlider(value=1.45, min=0.8, max=2.5, step=0.05))
# def show(ctr, exposure):
#     params = AnatomyParams(**{**p.as_dict(), "heart_ctr": ctr, "exposure": exposure})
#     plt.imshow(render_case(1, 192, findings=[], anatomy=params).image, cmap="gray"); plt.axis("off")
# ```

# %% [markdown]
# ## 5. Reports, summaries and conversations
#
# Each image comes with a MIMIC-style report, an XrayGPT-style summary (the training caption)
# and a conversation: the 15 alignment instructions plus one yes/no question per observation.

# %%
case = render_case(2, 128, findings=[Finding("Pleural Effusion", side="left", severity="moderate"),
                                     Finding("Cardiomegaly", severity="mild")])
print(case.report, "\n\nSUMMARY:", case.summary, "\n")
for turn in case.conversation[:2] + case.conversation[-8:-6]:
    print("Q:", turn["question"], "\nA:", turn["answer"][:150])

# %% [markdown]
# ## 6. Prevalence and co-occurrence
#
# `WorldConfig` sets how often each observation appears and how strongly pairs travel together.
# By default heart failure comes as a package (cardiomegaly, edema, effusion), and trauma brings
# a fracture with a pneumothorax. Which findings are present does not depend on drawing pixels,
# so we can sample 4,000 label sets in a second.

# %%
rng = np.random.default_rng(0)
config = WorldConfig()
rows = []
for _ in range(4000):
    present = {f.observation for f in sample_findings(rng, config)}
    rows.append({obs: int(obs in present) for obs in DRAWABLE} | {"No Finding": int(not present)})
labels = pd.DataFrame(rows)

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
prev = labels.mean().sort_values(ascending=False)
sns.barplot(x=prev.values, y=prev.index, ax=axes[0], color="steelblue")
axes[0].set_xlabel("share of images"); axes[0].set_title("prevalence")
lab = labels[list(DRAWABLE)]
both = lab.T @ lab
expected = np.outer(lab.mean(), lab.mean()) * len(lab)
lift = pd.DataFrame(np.array(both.values / expected), index=lab.columns, columns=lab.columns)
lift = lift.mask(np.eye(len(lift), dtype=bool))
sns.heatmap(lift, ax=axes[1], cmap="vlag", center=1.0, annot=True, fmt=".1f", annot_kws={"size": 7})
axes[1].set_title("co-occurrence lift (observed / independent)")
plt.tight_layout()

# %% [markdown]
# A lift above 1 means the pair appears together more often than chance. That is exactly the
# kind of shortcut a model can learn: "edema, so probably cardiomegaly". Set `co_occurrence={}`
# for a world without it, then compare what a model trained on each world says.

# %% [markdown]
# ## 7. What synthetic radiographs do not teach
#
# Be honest about the gap to real data:
# * **Anatomy is simple and smooth.** Real chests vary far more: body habitus, breasts, scoliosis,
#   poor inspiration, AP portable films with a magnified heart, lateral views, children.
# * **Findings follow textbook signs only.** Real effusions layer, loculate and hide behind
#   consolidation. Real pneumothoraces can be subtle skin folds, real nodules can be nipple
#   shadows. Here every positive is drawn clearly, and the hard cases (and their mimics) are missing.
# * **Labels are certain.** Real CheXpert labels include *uncertain* (-1) and missed findings.
#   Real reports hedge ("cannot exclude"), compare with priors and contain errors.
# * **Reports are templated.** Even with several phrasings per statement, the language is far
#   narrower than a radiologist's, so ROUGE on this world overstates real-world quality.
# * **Detector physics is a caricature.** There is no scatter, grid lines, burned-in text,
#   compression or vendor processing.
#
# So use this world to learn the *mechanics*: how the encoder, the linear alignment and the
# LLM fit together, what attribution maps show, how evaluation works. A model that does well
# here says nothing about clinical performance.

# %%
assert set(case.masks) == {"Pleural Effusion", "Cardiomegaly"}
assert int(np.count_nonzero(diff[~region])) == 0

# %% [markdown]
# ## 8. Exercises (checked automatically)
#
# Each exercise asks for one small function. Replace `raise NotImplementedError` with your code
# and run the check below it: a green box means it matches the library on every test input, a
# red one says on which input it differs and, for common mistakes, why. Reference solutions:
# `tutorials/solutions/s00_synthetic_world.py` (try first!).
#
# **Exercise 1 — the cardiothoracic ratio (CTR).** CTR = widest transverse diameter of the heart /
# widest internal diameter of the thorax (Danzer 1919); above 0.5 on a PA film means cardiomegaly.
# `anatomy_masks(anatomy, size)` gives boolean masks of the heart and of each lung. Write
# `cardiothoracic_ratio(heart, right_lung, left_lung)` that measures both widths in pixels, as
# horizontal extents (first to last column holding a `True` pixel).

# %%
from xraygpt_lab.exercises import check_cardiothoracic_ratio, check_finding_side
from xraygpt_lab.exercises.synthetic import anatomy_masks

ex_masks = anatomy_masks(normal.anatomy, 128)
fig, axes = plt.subplots(1, 3, figsize=(6.5, 2.3))
for ax, (name, mask) in zip(axes, ex_masks.items()):
    ax.imshow(mask, cmap="gray"); ax.set_title(name); ax.axis("off")


def cardiothoracic_ratio(heart, right_lung, left_lung):
    # YOUR CODE HERE
    raise NotImplementedError


check_cardiothoracic_ratio(cardiothoracic_ratio)

# %% [markdown]
# This is what the feedback looks like for a typical mistake: measuring *heights* instead of widths.

# %%
def ctr_with_heights(heart, right_lung, left_lung):
    rows = lambda m: np.flatnonzero(m.any(axis=1))  # noqa: E731
    thorax = rows(right_lung | left_lung)
    return np.ptp(rows(heart)) / np.ptp(thorax)


check_cardiothoracic_ratio(ctr_with_heights)

# %% [markdown]
# **Exercise 2 — which side is the finding on?** Write `finding_side(mask)` returning the
# *patient's* side, `"left"` or `"right"`, of a finding mask. Mind the radiological convention.

# %%
def finding_side(mask):
    # YOUR CODE HERE
    raise NotImplementedError


check_finding_side(finding_side)
