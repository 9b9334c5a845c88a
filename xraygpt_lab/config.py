"""Profiles: the only place where sizes differ between ``tiny`` (CPU) and ``full`` (GPU).

Nothing else in the code branches on the profile name; modules read the numbers here.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    """Sizes and paths of one profile.

    ``image_size`` is the side of the square radiograph the encoder sees (MedCLIP: 224).
    Model-specific settings live in the ``encoder``/``llm``/``train`` dicts so that each model
    module owns its own keys (documented in that module).
    """

    name: str
    image_size: int
    device: str = "cpu"
    encoder: dict = field(default_factory=dict)
    llm: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


#: Tiny LLM sizes (``models.llm.tiny_llm``) and walkthrough sizes (``train.walkthrough``).
#: Step counts are scaled down from XrayGPT's so the whole walkthrough fits minutes on 2 CPU
#: cores; learning rates are raised (a from-scratch 1 M-parameter model and a projection that
#: must move far from its random start in ~10^2 steps need ~10-30x XrayGPT's 1e-4). The XrayGPT
#: values themselves are the ``full`` defaults (``train.schedule.XRAYGPT_STAGE1/2``).
TINY_LLM: dict = {
    "vocab_size": 1024,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
}
#: Values of the ``stage1_init`` training setting: ``train.concept_init``'s fit, or XrayGPT's random start.
STAGE1_INITS: tuple[str, ...] = ("concepts", "random")
TINY_TRAIN: dict = {
    "n_stage1": 3000,  # "MIMIC-like" synthetic set (XrayGPT: 114,690 summaries)
    "n_stage2": 200,  # "OpenI-like" second synthetic set, another seed (XrayGPT: 3,403)
    "n_eval": 100,  # held-out set, a third seed
    # MedCLIP loss + the token-level label loss (train/label_supervision.py: pooled MIL + per-token
    # targets from the finding masks); ±4 px shifts
    "encoder_steps": 1200, "encoder_batch": 32, "encoder_lr": 1e-3,
    "encoder_contrastive_weight": 1.0, "encoder_contrastive_every": 4, "encoder_label_weight": 1.0,
    "encoder_dense_weight": 1.0, "encoder_shift": 4,
    # bf16 autocast where the CPU has it natively (AVX-512 BF16 / AMX): encoder stage 185 -> 135 s,
    # same quality (encoder head .823 vs .827, CE .698 vs .687); float32 elsewhere
    "encoder_bf16": "auto",
    # 90 % of the LLM's examples are grounded (concept tokens in the image slot, see
    # train/grounding.py): without them a frozen tiny LLM never reads its image slot.
    # Half of the grounded examples are chats (slot in the first question, 1-2 turns of the case's
    # conversation; "Yes" answers drawn 10x more often): follow-up questions then read the slot.
    "llm_steps": 600, "llm_batch": 16, "llm_lr": 3e-3, "llm_min_lr": 3e-4, "llm_warmup": 20,
    "llm_grounded_share": 0.9, "llm_cases": 1000,
    "llm_grounded_chats": 8, "llm_chat_turns": 2, "llm_chat_yes_weight": 10.0, "llm_spatial_slots": False,
    "stage1_steps": 300, "stage1_batch": 8, "stage1_lr": 3e-3, "stage1_min_lr": 6e-4,
    "stage1_warmup_lr": 1e-5, "stage1_warmup": 20,
    # stage 1 starts from the least-squares map of the image tokens onto the concept tokens
    # (train/concept_init.py; "random": XrayGPT's start). Three of four trainings: nodule phrases gain
    # 0.9-1.2 instead of 0.6-0.9 nats from the nodule, CE the same within noise.
    "stage1_init": "concepts",
    "stage2_steps": 40, "stage2_batch": 4, "stage2_lr": 1e-3, "stage2_min_lr": 3e-4,
    "stage2_warmup_lr": 1e-5, "stage2_warmup": 5,
    "max_new_tokens": 140,
}
#: ``walkthrough --long``: the tiny recipe trained longer (about 25-40 min on 2 cores instead of
#: ~6). Same models, same frozen XrayGPT alignment; only data and steps grow. It measures how much
#: of the gap to the quality bar is training budget (notebook 03, section 7; NOTES.md).
TINY_LONG_OVERRIDES: dict = {
    "n_stage1": 6000, "encoder_steps": 4800, "llm_steps": 3600, "llm_cases": 3000, "stage1_steps": 1200,
}
#: Full profile: XrayGPT's own numbers (arXiv 2306.07971, Sec. 4.1; see ``train.schedule``).
FULL_TRAIN: dict = {
    "stage1_steps": 20_000, "stage1_batch": 3, "stage1_lr": 1e-4, "stage1_min_lr": 8e-5,
    "stage1_warmup_lr": 1e-6, "stage1_warmup": 500,
    "stage2_steps": 2_501, "stage2_batch": 1, "stage2_lr": 3e-5, "stage2_min_lr": 1e-5,
    "stage2_warmup_lr": 1e-6, "stage2_warmup": 200,
    "llm_lora_r": 8, "llm_lora_alpha": 16, "llm_dtype": "bfloat16",
    "max_new_tokens": 160,
}

TINY = Profile(name="tiny", image_size=128, llm=TINY_LLM, train=TINY_TRAIN)
FULL = Profile(name="full", image_size=224, device="cuda", train=FULL_TRAIN)

PROFILES: dict[str, Profile] = {"tiny": TINY, "full": FULL}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name`` (``tiny`` or ``full``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
