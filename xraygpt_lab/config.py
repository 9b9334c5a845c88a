"""Profiles and their recipes: the only place where sizes differ between ``tiny`` (CPU) and ``full`` (GPU).

Nothing else in the code branches on the profile name; modules read the numbers of a
:class:`~xraygpt_lab.recipe.Recipe` (the types, their checks and the flat setting names live in
:mod:`xraygpt_lab.recipe`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .recipe import AlignStage, AlignStage1, DataSizes, EncoderStage, LLMStage, Recipe, TinyLLMArch

#: The tiny LLM (``models.llm.tiny_llm``). About 1 M parameters: small enough to train from scratch
#: on 2 CPU cores in about a minute, deep enough (3 layers) to copy findings from the image slot
#: into the report.
TINY_LLM = TinyLLMArch(vocab_size=1024, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                       num_attention_heads=4, max_position_embeddings=512)

#: The tiny walkthrough (``train.walkthrough``). Step counts are scaled down from XrayGPT's so the
#: whole walkthrough fits minutes on 2 CPU cores; learning rates are raised (a from-scratch 1 M-parameter
#: model and a projection that must move far from its random start in ~10^2 steps need ~10-30x
#: XrayGPT's 1e-4). XrayGPT's own values are :data:`FULL_RECIPE`'s stages.
TINY_RECIPE = Recipe(
    image_size=128,
    # stage 1: "MIMIC-like" synthetic set (XrayGPT: 114,690 summaries); stage 2: "OpenI-like" second
    # set, another seed (XrayGPT: 3,403); eval: held-out set, a third seed. 6,000 stage-1 studies
    # instead of 3,000 (17 s more to render): the encoder sees each film 13 times instead of 26, and
    # its token head names the nodules of unseen films better (F1 0.35-0.61 -> 0.53-0.65 on seed
    # 8800, three trainings; docs/design-notes.md, "The 6-minute recipe")
    data=DataSizes(n_stage1=6000, n_stage2=200, n_eval=100),
    # MedCLIP loss + the token-level label loss (train/label_supervision.py: pooled MIL + per-token
    # targets from the finding masks); ±4 px shifts. bf16 autocast where the CPU has it natively
    # (AVX-512 BF16 / AMX) and a timed step is faster with it (train/precision.py): on an AMD EPYC
    # encoder stage 185 -> 135 s, same quality (encoder head .823 vs .827, CE .698 vs .687); on an
    # Intel Xeon with AVX-512 BF16 but no usable AMX a step took a fifth longer; float32 elsewhere.
    # 2,800 steps: 1,200 -> 2,400 raised the token head's lung-lesion F1 0.00-0.31 -> 0.51-0.59;
    # 2,400 -> 2,800 (a sixth more encoder time) the reports' nodule F1 0.61 -> 0.68 mean and 0.45 -> 0.53
    # worst, CE 0.888 -> 0.904 mean (three trainings x five held-out seeds). Films with a lung lesion
    # (one in ten) are shown three times an epoch, at no cost in time: nodule F1 0.56 -> 0.64
    # (docs/design-notes.md, "The 6-minute recipe"). grade_weight 0: no grade head yet (with 0.5 and
    # graded LLM concepts, two trainings graded sizes 0.72-0.84 instead of 0.33-0.39, CE 0.88-0.91;
    # docs/design-notes.md, "Does each finding have the right side and size?")
    encoder=EncoderStage(steps=2800, batch=32, lr=1e-3, contrastive_weight=1.0, contrastive_every=4,
                         label_weight=1.0, dense_weight=1.0, shift=4, bf16="auto", lesion_repeats=2,
                         grade_weight=0.0),
    llm_arch=TINY_LLM,
    # 90 % of the LLM's examples are grounded (concept tokens in the image slot, see
    # train/grounding.py): without them a frozen tiny LLM never reads its image slot.
    # Two thirds of the grounded examples are chats (slot in the first question, 1-2 turns of the
    # case's conversation; each yes/no question drawn with "Yes" as often as "No", train.grounding.
    # yes_no_weights): follow-up questions then read the slot. 16 chats a case in batches of 24
    # (was 8 in batches of 16; a step reads 50 % more tokens, about 40 s more on a 2-core Xeon), with the
    # alignment's yes/no share below: the first word of an answer reads the image (seed 0's
    # "Is there cardiomegaly?" -> "Yes. The heart is normal in size." 37 % of the time before;
    # docs/design-notes.md, "The 6-minute recipe"). 1,200 steps instead of 600: given the true
    # concepts it writes reports of CE 0.90 -> 0.94 (pneumothorax and fractures were the misses)
    llm=LLMStage(steps=1200, batch=24, lr=3e-3, min_lr=3e-4, warmup=20, weight_decay=0.05,
                 grounded_share=0.9, cases=1000, grounded_chats=16, chat_turns=2, chat_yes_weight=1.0,
                 spatial_slots=False, graded_concepts=False),  # graded_concepts: see the encoder's grade_weight
    # stage 1 starts from the least-squares map of the image tokens onto the concept tokens
    # (train/concept_init.py; "random": XrayGPT's start). Three of four trainings: nodule phrases gain
    # 0.9-1.2 instead of 0.6-0.9 nats from the nodule, CE the same within noise. 1,200 steps at
    # 1e-3 -> 2e-4 (was 300 at 3e-3 -> 6e-4; --long keeps those rates): a slower, longer descent
    # ... and half of stage 1's batches ask the image's yes/no questions (train.align.alignment_batches),
    # as --long's do: with this LLM the projection then writes what its first word reads
    stage1=AlignStage1(steps=1200, batch=8, lr=1e-3, min_lr=2e-4, warmup_lr=1e-5, warmup=20, weight_decay=0.05,
                       yes_no_share=0.5, lesion_repeats=0, init="concepts"),
    # stage 2 starts below where stage 1 ended, as XrayGPT's does (3e-5 after 8e-5); at 1e-3, above
    # stage 1's end, it undid part of stage 1 (the --long reference: 0.958-0.975 -> 0.966-0.981 on
    # five seeds at 3e-4, which --long keeps); here 1e-4 -> 3e-5, below stage 1's 2e-4
    stage2=AlignStage(steps=40, batch=4, lr=1e-4, min_lr=3e-5, warmup_lr=1e-5, warmup=5, weight_decay=0.05,
                      yes_no_share=0.0, lesion_repeats=0),
    max_new_tokens=140,
)

#: ``walkthrough --long``: the tiny recipe trained longer (about an hour on 2 cores instead of
#: ~6). Same models, same data, same frozen XrayGPT alignment; steps grow, and the alignment keeps the
#: rates the shipped reference run was trained with. It measures how much of the gap to the quality
#: bar is training budget (notebook 03, section 7; docs/design-notes.md).
TINY_LONG = replace(
    TINY_RECIPE,
    # 19,200 encoder steps (32-51 min) instead of 4,800: the token head's lung-lesion AUC 0.89 -> 0.95 at
    # 9,600 steps, and the reference's lesion F1 0.53-0.59 (4,800) -> 0.67-0.89 (9,600) -> 0.78-0.85
    # (19,200) on held-out seeds, the rest the same or better (docs/design-notes.md)
    # 24,000 studies instead of 6,000, films with a lung lesion three times an epoch (as the 6-minute
    # recipe): lesion F1 on eight held-out seeds 0.80-0.90 (mean 0.825) -> 0.79-0.93 with 12,000
    # (mean 0.865) -> 0.81-0.91 with 24,000 (mean 0.873), CE 0.968-0.986 -> 0.972-0.987; on its own
    # training films the encoder's token head named every nodule (AUC 1.00 against 0.93 on unseen
    # films): more films, not more steps (docs/design-notes.md)
    data=replace(TINY_RECIPE.data, n_stage1=24000),
    encoder=replace(TINY_RECIPE.encoder, steps=19200),
    # (its LLM keeps the chats its reference run was trained with: 8 a case, batches of 16)
    llm=replace(TINY_RECIPE.llm, steps=3600, cases=3000, batch=16, grounded_chats=8),
    # a projection that also answers the image's yes/no questions (train.align.alignment_batches):
    # chat sensitivity 0.73-0.75 -> 0.92-0.95 on three held-out seeds, specificity 0.96-0.99 as
    # before, CE the same; the longer stage 1 (4,800 steps, 3 min) is what lets it learn both
    stage1=replace(TINY_RECIPE.stage1, steps=4800, lr=3e-3, min_lr=6e-4, yes_no_share=0.5),
    # stage 2 at 3e-4 -> 1e-4 instead of 1e-3: lesion F1 0.78-0.85 -> 0.80-0.90 on five seeds
    stage2=replace(TINY_RECIPE.stage2, lr=3e-4, min_lr=1e-4, yes_no_share=0.5),
)

#: Full profile: MedCLIP and Vicuna come pretrained, so only the alignment stages are stated, with
#: XrayGPT's own numbers from its ``train_configs`` (arXiv 2306.07971, Sec. 4.1), used by
#: ``train.schedule.XRAYGPT_STAGE1/2``:
#:
#: * stage 1 (MIMIC-CXR, ``xraygpt_mimic_pretrain.yaml``): ``init_lr`` 1e-4, ``min_lr`` 8e-5,
#:   ``warmup_lr`` 1e-6, 500 warmup steps, weight decay 0.05, 4 epochs × 5000 iterations, batch 3
#:   per GPU on 4 GPUs; the projection starts at random;
#: * stage 2 (OpenI, ``xraygpt_openi_finetune.yaml``): 3e-5 → 1e-5, 200 warmup steps,
#:   1 epoch × 2501 iterations, batch 1.
FULL_RECIPE = Recipe(
    image_size=224,  # MedCLIP's input
    data=None, encoder=None, llm_arch=None, llm=None,
    stage1=AlignStage1(steps=20_000, batch=3, lr=1e-4, min_lr=8e-5, warmup_lr=1e-6, warmup=500, weight_decay=0.05,
                       yes_no_share=0.0, lesion_repeats=0, init="random"),
    stage2=AlignStage(steps=2_501, batch=1, lr=3e-5, min_lr=1e-5, warmup_lr=1e-6, warmup=200, weight_decay=0.05,
                      yes_no_share=0.0, lesion_repeats=0),
    max_new_tokens=160,
)


@dataclass(frozen=True)
class Profile:
    """A named recipe and the device it is meant for."""

    name: str
    recipe: Recipe
    device: str = "cpu"

    @property
    def image_size(self) -> int:
        """Side of the square radiograph the encoder sees (MedCLIP: 224): ``recipe.image_size``."""
        return self.recipe.image_size


TINY = Profile(name="tiny", recipe=TINY_RECIPE)
FULL = Profile(name="full", recipe=FULL_RECIPE, device="cuda")

PROFILES: dict[str, Profile] = {"tiny": TINY, "full": FULL}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name`` (``tiny`` or ``full``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
