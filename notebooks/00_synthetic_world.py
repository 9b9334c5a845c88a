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
from matplotlib_inline.backend_inline import set_matplotlib_formats
import seaborn as sns

from xraygpt_lab.data.synthetic.anatomy import AnatomyParams
from xraygpt_lab.data.synthetic.atlas import landmarks
from xraygpt_lab.data.synthetic.lesions import DRAWABLE, Finding
from xraygpt_lab.data.synthetic.world import (WorldConfig, render_case, sample_findings, toggle_finding,
                                        phantom_coordinates)

plt.rcParams.update({"figure.dpi": 100, "font.size": 9})
set_matplotlib_formats("jpeg")  # radiograph noise makes PNG figures large

# %% [markdown]
# ## 1. One radiograph, structure by structure
#
# The film is formed the way a real one is. The thorax is built from 3-D solids: soft tissue,
# two air-filled lungs, the heart and great vessels, the domes of the diaphragm, ribs as curved
# tubes of dense cortex around softer marrow, clavicles, scapulae, spine, a branching tree of
# pulmonary vessels. Each pixel's ray crosses path lengths `l_m` of these materials, and the
# detector counts `N = N0 exp(-P)` photons with `P = sum_m mu_m l_m` (Beer-Lambert; `mu` from
# NIST tables at the beam's energy). The workstation then displays `P` with a detector blur,
# quantum noise and a tone curve. Air is black, soft tissue grey, bone white: the lungs are dark
# because the ray through them crosses 10-15 cm of air.

# %%
normal = render_case(seed=1, size=256, findings=[])
fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
ax.imshow(normal.image, cmap="gray", vmin=0, vmax=1)
ax.set_title(f"seed 1, no finding ({normal.anatomy.view} film)", fontsize=10)
for name, (row, col) in landmarks(normal).items():
    ax.text(col, row, name, color="yellow", fontsize=8, ha="center", va="center")
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
# **Beside a real film.** On the left a real chest radiograph (a PA computed radiograph from
# pydicom's public test images, `RG1_UNCI.dcm`, MIT licence), on the right a synthetic PA film,
# both at 256 px. Compare the grey levels of lungs, heart and abdomen, the posterior ribs
# running down and out, the fainter anterior ribs, the clavicles crossing the apices, the
# vessels fanning out of the hila. What still gives the synthetic film away: smooth organs and
# no lung texture, ribs that read as bands rather than thin arcs, a simpler heart and mediastinum
# outline, and black air around the body where the real film is collimated to the chest.

# %%
from PIL import Image
from pydicom.data import get_testdata_file

from xraygpt_lab.data.readers.images import load_image

path = get_testdata_file("RG1_UNCI.dcm")  # None when pydicom's test images are not installed
synthetic = render_case(seed=5, size=256, findings=[])
if path is None:
    print("pydicom's test images are not installed (pip install pydicom-data): showing the synthetic film only")
    real = None
else:
    film = load_image(path)  # [H, W] in [0, 1], bone white
    side = max(film.shape)
    square = np.zeros((side, side), np.float32)
    square[(side - film.shape[0]) // 2:][:film.shape[0], (side - film.shape[1]) // 2:][:, :film.shape[1]] = film
    real = np.asarray(Image.fromarray(square).resize((256, 256), Image.BILINEAR))
fig, axes = plt.subplots(1, 2, figsize=(9, 4.8), dpi=100)
for ax, img, title in zip(axes, [real, synthetic.image], ["real chest CR (pydicom RG1_UNCI)", "synthetic PA film, seed 5"]):
    if img is not None:
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
plt.tight_layout()

# %% [markdown]
# ## 2. The findings, each beside its normal twin
#
# `render_case(seed, findings=[...])` keeps the patient, exposure and noise of `seed` and draws
# only the findings you ask for, so each finding can be compared with the same film without
# it. Each is drawn as the sign a radiology textbook teaches (Felson), and the arrows point at
# it (films at 256 px, cropped around the finding):

# %%
from xraygpt_lab.data.synthetic.atlas import sign_examples

examples = sign_examples(seed=2, size=256)
fig, axes = plt.subplots(4, 6, figsize=(15, 10.6), dpi=100)
for pair, ex in zip(axes.reshape(-1, 2), examples):
    f = ex.case.findings[0]
    rows, cols = np.nonzero(ex.case.masks[f.observation])
    points = np.array([[r, c] for _, r, c in ex.signs] + [[rows.min(), cols.min()], [rows.max(), cols.max()]])
    centre = points.mean(axis=0)
    half = int(np.clip(0.5 * np.ptp(points, axis=0).max() + 20, 40, 128))  # zoom on small signs
    r0, c0 = np.clip(centre - half, 0, 256 - 2 * half).astype(int)
    crop = (slice(r0, r0 + 2 * half), slice(c0, c0 + 2 * half))
    pair[0].imshow(ex.twin.image[crop], cmap="gray", vmin=0, vmax=1)
    pair[0].set_title("normal twin", fontsize=9)
    pair[1].imshow(ex.case.image[crop], cmap="gray", vmin=0, vmax=1)
    name = " ".join(str(v) for v in (f.severity, f.side, f.zone if f.observation == "Consolidation" else None,
                                     f.observation) if v)
    pair[1].set_title(name, fontsize=9)
    for i, (label, r, c) in enumerate(ex.signs):
        pair[1].annotate(label, xy=(c - c0, r - r0), xytext=(0.03, 0.04 + 0.11 * i), textcoords="axes fraction",
                         color="yellow", fontsize=8, arrowprops=dict(arrowstyle="->", color="yellow", lw=1.2),
                         bbox=dict(boxstyle="round,pad=0.15", fc="black", alpha=0.6, lw=0))
for ax in axes.ravel():
    ax.axis("off")
plt.subplots_adjust(left=0.01, right=0.99, top=0.96, bottom=0.01, wspace=0.04, hspace=0.16)

# %% [markdown]
# **What to look for**
# * *Pleural effusion*: dependent fluid whose surface (the **meniscus**) climbs the lateral chest
#   wall, filling the **costophrenic angle**; once above the dome it erases it.
# * *Pneumothorax*: the lung retracts; a thin white **visceral pleural line** with black air and
#   **no lung markings** between it and the chest wall.
# * *Consolidation*: air-space opacity in which the bronchi keep their air (**air
#   bronchograms**); where it touches the heart or a dome, that border disappears (**silhouette
#   sign**: a middle-lobe or lingular opacity erases the heart border, a lower-lobe one the dome).
# * *Atelectasis*: **volume loss**: the hemidiaphragm rises under a plate-like band.
# * *Edema*: perihilar **bat-wing** opacity sparing the periphery, **Kerley B lines** (short
#   horizontal septal lines at the lateral bases), distended upper-lobe vessels.
# * *Cardiomegaly*: heart wider than half the chest, **CTR > 0.5**, read off the film.
# * *Lesion*: a round, soft-edged **nodule** (15–30 mm) or **mass** (> 30 mm).
# * *Fracture*: a **gap and cortical step** in one rib, and beside it an **extrapleural
#   hematoma**: a lens of soft tissue along the lateral chest wall (the break alone is a few
#   faint pixels at 128 px; the hematoma is what makes an acute rib fracture stand out on a
#   chest film). *Devices*: tube and line **tips** in their proper places.
#
# A finding the film cannot show (basal atelectasis hidden behind a large heart or under an
# effusion, a nodule over a rib crossing too faint to see) is neither labelled nor reported:
# the world keeps it in `case.hidden`.

# %% [markdown]
# ## 3. Counterfactuals: toggling one finding
#
# The noise pattern and the film's processing depend on the patient only, so removing a finding
# changes **only** the pixels of its own region (plus the 2-pixel reach of the detector blur). Later notebooks use this to ask
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
# ## 4. The patient and the film: parameters you can turn
#
# Each film is an `AnatomyParams` dataclass: the patient (thorax shape, heart size, ribs, lung
# markings) and the acquisition (PA or AP view, tube voltage, dose, noise, rotation, depth of
# inspiration, a burned-in laterality marker). Real datasets mix all of these, so the world
# does too, and `labels.csv` records them for every exported image. Change a field and pass
# `anatomy=` to redraw the same patient.

# %%
p = normal.anatomy
pd.DataFrame({"value": p.as_dict()}).T.round(3)

# %%
from xraygpt_lab.data.synthetic.anatomy import set_inspiration

variants = {
    "as sampled": {},
    "heart_ctr 0.58": {"heart_ctr": 0.58},
    "AP portable": {"view": "AP", "clavicle_y": p.apex_y + 0.05, "rib_curvature": 0.65, "kvp": 85.0},
    "poor inspiration": {"inspiration": 8.5},
    "dose x 0.15": {"exposure": 0.15},
    "rotated 8°, marker L": {"rotation_deg": 8.0, "axial_rotation_deg": 10.0, "marker": "L"},
}
fig, axes = plt.subplots(1, len(variants), figsize=(15, 3.0), dpi=100)
for ax, (name, change) in zip(axes, variants.items()):
    params = AnatomyParams(**{**p.as_dict(), **change})
    set_inspiration(params, params.inspiration)  # the domes follow the breath
    ax.imshow(render_case(1, 160, findings=[], anatomy=params).image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(name, fontsize=9); ax.axis("off")

# %% [markdown]
# An AP portable film magnifies the heart (a normal heart reads up to about 0.45 here, still
# below 0.5, because the world labels what the film shows) and puts the scapulae over the upper
# lungs; a poor inspiration raises the domes to the 8th posterior rib; a lower dose brings more
# quantum noise.
#
# **Turn the knobs.** Pick a patient (the seed fixes anatomy and acquisition), one finding with
# its side and severity, the breath, the dose and the view; the film redraws when you release a
# slider, the finding outlined in cyan and its report's summary above it. Try a small pneumothorax
# at a low dose, or a moderate effusion on an AP film.

# %%
from xraygpt_lab.widgets.knobs import world_knobs

world_knobs(seed=1)

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
# * **Anatomy is parametric.** The organs are smooth solids and the vessel tree a random
#   branching pattern; real chests vary far more (scoliosis, emphysema, children, obesity,
#   lateral views), and real lungs have texture the phantom lacks.
# * **Findings follow textbook signs only.** Real effusions loculate and hide behind
#   consolidation; real pneumothoraces can be skin folds; real nodules can be nipple shadows.
#   Here every labelled finding shows its sign clearly, and the mimics are missing.
# * **Labels are certain.** Real CheXpert labels include *uncertain* (-1) and missed findings.
#   Real reports hedge ("cannot exclude"), compare with priors and contain errors.
# * **Reports are templated.** Even with several phrasings per statement, the language is far
#   narrower than a radiologist's, so ROUGE on this world overstates real-world quality.
# * **Physics is simplified.** There is Beer-Lambert attenuation, quantum noise, detector blur
#   and an unsharp-mask processing, but no scatter, grid lines, burned-in text beyond the
#   laterality marker, compression or vendor-specific processing.
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
