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
# # 08 · Full scale: MedCLIP + Vicuna-7B on a GPU
#
# Notebooks 00–07 ran the `tiny` profile: the real `transformers` classes at toy size, trained
# from scratch on a CPU. This notebook runs the **same code** with the `full` profile: MedCLIP's
# Swin-tiny encoder (224 px → 7 × 7 = **49 tokens of 768**), one `nn.Linear(768, 4096)`, and a
# 7-billion-parameter LLaMA/Vicuna, all loaded from **local folders** (nothing is downloaded).
#
# **Learning goals**
# 1. Know what the full profile needs: which weights, which data, which hardware, and where they go.
# 2. See the full-size shapes: image tokens `[1, 49, 768]` → projection → `[1, 49, 4096]`.
# 3. Do the memory and time arithmetic for each stage from parameter counts, and state its assumptions.
# 4. Know how to launch the alignment stages on one or several GPUs.
#
# **Without a GPU or the weights** (the usual case in a classroom) every step below explains what
# is missing and skips cleanly. The shapes and the arithmetic still run, on the CPU, in seconds.
# Step-by-step instructions for getting the weights and data: `tutorials/full_scale.md`.

# %%
import os
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from xraygpt_lab.config import FULL, get_profile
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.llm import count_parameters

pd.set_option("display.width", 120)
print("profile:", FULL.name, "| image size:", FULL.image_size, "| device:", FULL.device)
print("alignment stage 1:", {k: v for k, v in FULL.recipe.flat().items() if k.startswith("stage1")})

# %% [markdown]
# ## 1. What the full profile needs, and what this machine has
#
# Three folders, given by environment variables (set them before starting Jupyter, e.g.
# `export XRAYGPT_MEDCLIP_DIR=/data/medclip`):
#
# | variable | holds | needed file(s) |
# |---|---|---|
# | `XRAYGPT_MEDCLIP_DIR` | MedCLIP's Swin release (RyanWangZf/MedCLIP, `MedCLIPVisionModelViT`; its `from_pretrained()` unpacks it to `pretrained/medclip-vit/`) | `pytorch_model.bin` |
# | `XRAYGPT_LLM_DIR` | a LLaMA-family checkpoint in Hugging Face layout: Vicuna-7B (v1.1), or XrayGPT's MedVicuna/RadVicuna | `config.json`, `*.safetensors` (or `*.bin`), `tokenizer.json` or `tokenizer.model` |
# | `XRAYGPT_DATA_DIR` | MIMIC-CXR-JPG (stage 1) or OpenI (stage 2), or any folder `open_dataset` reads | detected layout |
#
# The check below never raises: it lists what it found and, for anything missing, which folder and file.

# %%
ENV = {"medclip": "XRAYGPT_MEDCLIP_DIR", "llm": "XRAYGPT_LLM_DIR", "data": "XRAYGPT_DATA_DIR"}


def check_folder(kind: str) -> tuple[Path | None, str]:
    """(folder, '') when usable, else (None, what is missing)."""
    value = os.environ.get(ENV[kind], "").strip()
    if not value:
        return None, f"${ENV[kind]} is not set"
    folder = Path(value).expanduser()
    if not folder.is_dir():
        return None, f"{folder} (from ${ENV[kind]}) is not a folder"
    if kind == "medclip":
        if not (folder / "pytorch_model.bin").is_file():
            return None, f"{folder / 'pytorch_model.bin'} is missing (MedCLIP's released weights)"
    elif kind == "llm":
        missing = []
        if not (folder / "config.json").is_file():
            missing.append("config.json")
        if not (list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))):
            missing.append("*.safetensors weights")
        if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
            missing.append("tokenizer.json or tokenizer.model")
        if missing:
            return None, f"{folder} lacks {', '.join(missing)}"
    else:
        from xraygpt_lab.data.readers import detect_layout

        try:
            detect_layout(folder)
        except Exception as err:  # XrayGPTLabError with the reason
            return None, str(err)
    return folder, ""


def gpu_status(min_gib: float = 20.0) -> tuple[bool, str]:
    """A CUDA GPU with at least ``min_gib`` GiB (7B in bf16 = 12.6 GiB of weights + activations)."""
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False)"
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    name = torch.cuda.get_device_name(0)
    if total < min_gib:
        return False, f"{name} has {total:.0f} GiB; the 7B model needs about {min_gib:.0f} GiB"
    return True, f"{name}, {total:.0f} GiB, {torch.cuda.device_count()} device(s)"


FOLDERS, REASONS = {}, {}
for kind in ENV:
    FOLDERS[kind], REASONS[kind] = check_folder(kind)
HAS_GPU, GPU_NOTE = gpu_status()
status = pd.DataFrame(
    [{"need": "GPU", "status": "ok" if HAS_GPU else "missing", "detail": GPU_NOTE}]
    + [{"need": ENV[k], "status": "ok" if FOLDERS[k] else "missing", "detail": str(FOLDERS[k] or REASONS[k])}
       for k in ENV])
READY = HAS_GPU and all(FOLDERS.values())
print(status.to_string(index=False))
print("\nready to run the full profile:", READY)

# %% [markdown]
# ## 2. The vision side at full size: 49 tokens of 768
#
# MedCLIP's encoder is `microsoft/swin-tiny-patch4-window7-224` (Liu et al. 2021): 4 × 4 patches
# of a 224 px image (56 × 56), merged three times (28, 14, 7), so the last stage is a 7 × 7 grid
# of 768-wide tokens. Swin-tiny has 28 M parameters, small enough to build at real size on a CPU.
# With `XRAYGPT_MEDCLIP_DIR` set we load the real weights (`load_medclip_vision`); otherwise the
# weights are random, which is fine for shapes.

# %%
from xraygpt_lab.data.readers.images import preprocess
from xraygpt_lab.data.synthetic.world import render_case

if FOLDERS["medclip"]:
    from xraygpt_lab.models.medclip import load_medclip_vision

    encoder = load_medclip_vision(FOLDERS["medclip"])
    weights_note = f"MedCLIP weights from {FOLDERS['medclip']}"
else:
    torch.manual_seed(0)
    encoder = VisionEncoder(EncoderConfig.full()).eval()
    weights_note = f"random weights ({REASONS['medclip']})"
image = render_case(seed=1, size=256).image  # [H, W] in [0, 1]
pixels = preprocess(image, encoder.config.image_size)[None]  # [1, 1, 224, 224]
start = time.perf_counter()
with torch.no_grad():
    tokens = encoder.encode_tokens(pixels)  # [1, 49, 768]
print(f"encoder: {count_parameters(encoder) / 1e6:.1f} M parameters, {weights_note}")
print(f"pixels {list(pixels.shape)} -> tokens {list(tokens.shape)} (grid {encoder.grid}) "
      f"in {time.perf_counter() - start:.1f} s on {tokens.device}")
assert tokens.shape == (1, 49, 768)

# %% [markdown]
# ## 3. The one trainable layer: 768 → 4096
#
# XrayGPT's only trained weights map each image token into the LLM's embedding space. LLaMA-7B's
# embeddings are 4096 wide, so the layer has 768 · 4096 + 4096 ≈ 3.1 M parameters, about 0.05 % of
# the whole model.

# %%
LLAMA_7B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                intermediate_size=11008, vocab_size=32000, max_position_embeddings=2048)  # Touvron et al. 2023, Table 2
if FOLDERS["llm"]:
    from transformers import AutoConfig

    llm_config = AutoConfig.from_pretrained(FOLDERS["llm"], local_files_only=True)
else:
    from transformers import LlamaConfig

    llm_config = LlamaConfig(**LLAMA_7B, tie_word_embeddings=False)
d_llm = llm_config.hidden_size
projection = nn.Linear(encoder.token_dim, d_llm)  # the layer stage 1 and 2 train
image_embeds = projection(tokens)  # [1, 49, 4096]
print(f"projection {encoder.token_dim} -> {d_llm}: {count_parameters(projection):,} parameters; "
      f"image embeddings {list(image_embeds.shape)}")
assert image_embeds.shape == (1, 49, d_llm)

# %% [markdown]
# ## 4. The LLM without its memory: counting on the meta device
#
# Building a 7B model normally allocates 27 GB of float32. On PyTorch's `meta` device the tensors
# have shapes but no storage, so we can count parameters (and list layers) on any laptop.

# %%
from transformers import AutoModelForCausalLM

with torch.device("meta"):
    llm_skeleton = AutoModelForCausalLM.from_config(llm_config)
N_LLM = count_parameters(llm_skeleton)
N_ENC = count_parameters(encoder)
N_PROJ = count_parameters(projection)
print(f"LLM: {N_LLM / 1e9:.2f} B parameters "
      f"({llm_config.num_hidden_layers} layers × width {d_llm}, vocabulary {llm_config.vocab_size})")

# %% [markdown]
# ## 5. Memory per stage, from parameter counts
#
# Bytes per parameter: bf16 = 2, fp32 = 4; AdamW keeps two fp32 moments. Activations follow
# Korthikanti et al. 2022 ("Reducing activation recomputation", Sec. 4.1): one transformer layer
# stores about `T·b·h·(34 + 5·a·T/h)` bytes in 16-bit for `T` tokens, batch `b`, width `h`, `a`
# heads. With gradient checkpointing (on by default on a GPU, `train.loop.train_stage`) only each
# layer's input (`2·T·b·h` bytes) is kept, plus one layer being recomputed. Logits for the loss are
# fp32: `4·T·b·vocab`.
#
# Sequence length of an alignment sample: BOS + about 32 prompt tokens + 49 image tokens + at most
# 160 target tokens ≈ **242**. Assumptions are stated in each row; real peaks add the CUDA context
# (~0.5 GiB) and allocator fragmentation (10–20 %).

# %%
GiB = 2**30
h, L, V, a = d_llm, llm_config.num_hidden_layers, llm_config.vocab_size, llm_config.num_attention_heads
T_ALIGN = 1 + 32 + 49 + 160


def activations(T: int, b: int, checkpointing: bool = True) -> float:
    """Activation bytes of the LLM's forward pass kept for backward (Korthikanti et al. 2022)."""
    per_layer = T * b * h * (34 + 5 * a * T / h)
    stored = L * 2 * T * b * h + per_layer if checkpointing else L * per_layer
    return stored + 4 * T * b * V  # + fp32 logits


lora_params = 2 * L * 2 * 8 * h  # rank 8 on q_proj and v_proj: A [8, h] + B [h, 8] each
rows = [
    ("inference (chat, 1 × 2048 tokens)", 2 * N_LLM + 4 * N_ENC + 4 * N_PROJ + 2 * 2 * L * h * 2048,
     "bf16 LLM + fp32 encoder/projection + KV cache 2·L·h·T·2 bytes (1 GiB at T = 2048)"),
    ("feature caching (encoder only, batch 32)", 4 * N_ENC + 32 * 4 * 224 * 224 * 4 * 12,
     "fp32 Swin-T; activations ≈ 12 × the input per image (rough)"),
    ("alignment stage 1 (batch 3 × 242 tokens)",
     2 * N_LLM + 16 * N_PROJ + activations(T_ALIGN, 3),
     "frozen bf16 LLM; projection fp32 + grad + 2 AdamW moments = 16 B/param; checkpointing"),
    ("alignment stage 2 (batch 1 × 242 tokens)", 2 * N_LLM + 16 * N_PROJ + activations(T_ALIGN, 1), "as stage 1"),
    ("LLM domain fine-tuning, LoRA r=8 (batch 4 × 512)",
     2 * N_LLM + 16 * lora_params + activations(512, 4), "MedVicuna/RadVicuna step with peft; checkpointing"),
    ("full fine-tuning of the LLM (not used)", 16 * N_LLM + activations(512, 4),
     "bf16 weights + fp32 master copy, grads and 2 moments ≈ 16 B/param: needs ZeRO/FSDP across GPUs"),
]
memory = pd.DataFrame([{"stage": s, "GiB": round(b / GiB, 1), "assumptions": note} for s, b, note in rows])
print(memory.to_string(index=False))

# %% [markdown]
# ## 6. Time per stage, from FLOPs
#
# A forward pass costs about `2·N` FLOPs per token (Kaplan et al. 2020). Training the projection
# needs the backward pass through the frozen LLM's *activations* (another `2·N`), not its weight
# gradients, plus one more forward (`2·N`) when checkpointing recomputes: `6·N` per token. GPU
# time = FLOPs / (peak × MFU). **Assumptions**: bf16 dense peak 312 TFLOP/s (A100) — change
# `PEAK` to 989e12 for an H100 SXM — and a model-FLOPs utilisation of 40 %, typical for a
# well-fed 7B model; small batches (stage 2, batch 1) reach less.

# %%
PEAK, MFU = 312e12, 0.40
T_LORA = 512  # assumed tokens per conversation for domain fine-tuning
SWIN_T_FLOPS = 2 * 4.5e9  # Swin-T: 4.5 GMACs at 224 px (Liu et al. 2021, Table 1) = 9 GFLOPs


def gpu_hours(flops: float, mfu: float = MFU) -> float:
    return flops / (PEAK * mfu) / 3600


stage1_samples = 20_000 * 3 * 4  # 4 epochs × 5000 iterations, batch 3 per GPU × 4 GPUs (XrayGPT Sec. 4.1)
stage2_samples = 2_501 * 1
times = pd.DataFrame([
    {"stage": "cache MedCLIP features (241k MIMIC images)", "FLOPs": 241_000 * SWIN_T_FLOPS},
    {"stage": "LLM fine-tuning, ~100k + 30k conversations (1 epoch, LoRA)", "FLOPs": 6 * N_LLM * T_LORA * 130_000},
    {"stage": f"alignment stage 1 ({stage1_samples:,} samples × {T_ALIGN} tokens)", "FLOPs": 6 * N_LLM * T_ALIGN * stage1_samples},
    {"stage": f"alignment stage 2 ({stage2_samples:,} samples, batch 1, MFU 15 %)", "FLOPs": 6 * N_LLM * T_ALIGN * stage2_samples},
])
times["GPU-hours"] = [gpu_hours(f) for f in times["FLOPs"][:3]] + [gpu_hours(times["FLOPs"][3], 0.15)]
times["FLOPs"] = times["FLOPs"].map(lambda f: f"{f:.2e}")
times["GPU-hours"] = times["GPU-hours"].map(lambda x: f"{x:.3g}")
print(times.to_string(index=False))
print(f"\ngeneration: a 160-token report needs ≈ 2·N·(242) FLOPs but is memory-bound: "
      f"each new token reads all {2 * N_LLM / GiB:.1f} GiB of weights; at ~1.5 TB/s (A100) that is "
      f"≥ {2 * N_LLM / 1.5e12 * 1e3:.0f} ms per token.")

# %% [markdown]
# ## 7. The data
#
# Stage 1 uses MIMIC-CXR-JPG 2.0.0 (credentialed PhysioNet access, a data-use agreement and
# CITI training; 377k images) with the MIMIC-CXR reports; stage 2 uses OpenI (IU X-ray, 7,470
# PNGs, 3,955 reports, CC BY-NC-ND 4.0). `open_dataset` detects the layout; reports become
# XrayGPT summaries with the rules of notebook 00b. MIMIC-CXR's DICOM release (`.dcm` files,
# `cxr-record-list.csv.gz`) reads the same way; a view filter then reads each film's view from
# its DICOM header.

# %%
if FOLDERS["data"]:
    from xraygpt_lab.data.readers import open_dataset

    dataset = open_dataset(FOLDERS["data"])
    print(dataset.summary())
    with_summary = [r for r in dataset.records if r.summary and r.image_path is not None]
    print(f"{len(with_summary)} records with an image and a summary; first: {with_summary[0].summary[:120]!r}"
          if with_summary else "no record has both an image and a summary")
else:
    print(f"skipped: {REASONS['data']}.\nPoint XRAYGPT_DATA_DIR at a MIMIC-CXR-JPG root "
          "(files/p10/…, mimic-cxr-2.0.0-*.csv.gz) or an OpenI folder (ecgen-radiology/, NLMCXR_png/).")

# %% [markdown]
# ## 8. Running it (GPU only)
#
# With everything present, this cell loads Vicuna in bf16, builds `XrayGPT`, trains the projection
# for a few steps (`XRAYGPT_FULL_STEPS`, default 20 — a smoke test, not a training run) and writes
# a report. The real runs use the script, which resumes after an interruption:
#
# ```bash
# # one GPU, stage 1 on MIMIC-CXR (XrayGPT: 20,000 steps; batch 3 per GPU)
# python tutorials/full_scale_train.py --medclip $XRAYGPT_MEDCLIP_DIR --llm $XRAYGPT_LLM_DIR \
#     --data $XRAYGPT_DATA_DIR --out runs/full-stage1
# # four GPUs: the same flags under accelerate launch (batch 3 per process, as XrayGPT)
# accelerate launch --num_processes 4 --mixed_precision bf16 tutorials/full_scale_train.py \
#     --medclip $XRAYGPT_MEDCLIP_DIR --llm $XRAYGPT_LLM_DIR --data $XRAYGPT_DATA_DIR --out runs/full-stage1
# # stage 2 on OpenI, starting from stage 1's projection
# python tutorials/full_scale_train.py --stage 2 --data /data/openi --out runs/full-stage2 \
#     --init-projection runs/full-stage1/projection.safetensors --medclip … --llm …
# ```

# %%
if READY:
    from xraygpt_lab.models.conversation import xraygpt_prompt
    from xraygpt_lab.models.llm import load_llm
    from xraygpt_lab.models.xraygpt import XrayGPT
    from xraygpt_lab.train.align import AlignmentSet, align_stage
    from xraygpt_lab.train.schedule import XRAYGPT_STAGE1
    from xraygpt_lab.data.readers.images import load_image

    llm, tokenizer = load_llm(FOLDERS["llm"], dtype=torch.bfloat16, device="cuda")
    model = XrayGPT(encoder.to("cuda"), llm, tokenizer).to("cuda")
    records = with_summary[:64]
    pixels = torch.stack([preprocess(load_image(r.image_path), 224) for r in records])  # [M, 1, 224, 224]
    with torch.no_grad():
        features = torch.cat([model.encode_image(p[None]) for p in pixels]).float().cpu()  # [M, 49, 768]
    steps = int(os.environ.get("XRAYGPT_FULL_STEPS", "20"))
    result = align_stage(model, AlignmentSet(features, [r.summary for r in records]),
                         XRAYGPT_STAGE1.scaled(steps=steps, warmup_steps=min(5, steps)), progress=False)
    print(f"{steps} steps, loss {result.history[0]['loss']:.2f} -> {result.history[-1]['loss']:.2f}, "
          f"peak memory {torch.cuda.max_memory_allocated() / GiB:.1f} GiB")
    print(model.describe(features=features[:1].cuda(), max_new_tokens=80)[0])
else:
    missing = [f"{k}: {v}" for k, v in {"GPU": "" if HAS_GPU else GPU_NOTE, **REASONS}.items() if v]
    print("skipped (this is expected on a CPU machine). Missing:\n  - " + "\n  - ".join(missing))

# %% [markdown]
# ## 9. Honest caveats
#
# * **MedCLIP is not what XrayGPT's released code loads**: their repository runs MiniGPT-4's
#   EVA-ViT + Q-Former (32 query tokens). We build the paper's design: 49 MedCLIP tokens.
# * **MedVicuna/RadVicuna weights** were released by the XrayGPT authors; plain Vicuna-7B works in
#   the same code but has never seen radiology conversations, so expect weaker reports.
# * **The estimates above are arithmetic**, not measurements: MFU depends on kernels, batch and
#   sequence packing; run `benchmarks/gpu_scale.py --shape 7b` on your GPU for measured numbers.
# * **Credentialed data stays where its licence allows**: MIMIC-CXR must not be copied to shared
#   machines or uploaded to online services (PhysioNet data-use agreement).

# %%
assert tokens.shape[1:] == (49, 768) and image_embeds.shape[-1] == d_llm
assert 6.5e9 < N_LLM < 7.0e9 or FOLDERS["llm"]  # LLaMA-7B: 6.74 B

# %% [markdown]
# ## Exercise: what a frozen 7 B model costs to train through
#
# Section 6 counted `6·N` FLOPs per token for the alignment. Make that count yours. Write
# `step_flops(frozen_params, trainable_params, tokens, backward_through_frozen)`: the FLOPs of one
# training step **without** activation checkpointing. Per token, a weight costs 2 FLOPs forward;
# backward, a *trainable* weight costs 2 for the activation gradient and 2 for its own gradient; a
# *frozen* weight gets no gradient of its own, but still costs 2 for the activation gradient when
# something trainable sits below it (`backward_through_frozen`) — XrayGPT's projection sits under the
# whole LLM. `check_step_flops` tries XrayGPT's stage 1, full fine-tuning, a frozen encoder and LoRA.

# %%
from xraygpt_lab.exercises import check_step_flops  # noqa: E402


def step_flops(frozen_params, trainable_params, tokens, backward_through_frozen):
    raise NotImplementedError("your turn")


check_step_flops(step_flops)

# %% [markdown]
# Then use it: with `PEAK` set to your GPU's bf16 peak, how many GPU-hours does one epoch of
# MIMIC-CXR (114,690 summaries of about 242 tokens) take in stage 1, with and without activation
# checkpointing (which adds one more forward of the LLM)? Solution: `tutorials/solutions/s08_full_scale.py`.
#
# <details><summary>Answer (click)</summary>
#
# Per token: 4 · 6.74 B (frozen LLM, gradients pass through) + 6 · 4.2 M (projection) ≈ 27 GFLOPs,
# so 114,690 × 242 tokens ≈ 7.5 × 10¹⁷ FLOPs: at 312 TFLOP/s and 40 % MFU (A100) about 1.7
# GPU-hours; with checkpointing (6·N per token) about 2.5. The projection's own cost is
# negligible: almost all the compute goes into carrying gradients *through* a model that does not
# learn.
#
# </details>
