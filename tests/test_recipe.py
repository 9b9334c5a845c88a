"""The typed recipe: the dict recipe's numbers, one-line refusals, config.json in both formats, and
the arguments each walkthrough stage hands to the training functions."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, fields

import pytest
import torch

from xraygpt_lab.config import FULL, FULL_RECIPE, TINY, TINY_LLM, TINY_LONG, TINY_RECIPE
from xraygpt_lab.errors import RecipeError, XrayGPTLabError
from xraygpt_lab.recipe import SETTINGS, Recipe, parse_setting, recipe_of_run

#: The dict-based recipe before ``xraygpt_lab.recipe`` (config.py's TINY_LLM, TINY_TRAIN,
#: TINY_LONG_OVERRIDES and FULL_TRAIN, copied; FULL_TRAIN's unread LoRA/dtype keys left out).
OLD_TINY_LLM = {"vocab_size": 1024, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 3,
                "num_attention_heads": 4, "max_position_embeddings": 512}
OLD_TINY_TRAIN = {
    "n_stage1": 3000, "n_stage2": 200, "n_eval": 100,
    "encoder_steps": 1200, "encoder_batch": 32, "encoder_lr": 1e-3,
    "encoder_contrastive_weight": 1.0, "encoder_contrastive_every": 4, "encoder_label_weight": 1.0,
    "encoder_dense_weight": 1.0, "encoder_shift": 4, "encoder_bf16": "auto",
    "llm_steps": 600, "llm_batch": 16, "llm_lr": 3e-3, "llm_min_lr": 3e-4, "llm_warmup": 20,
    "llm_grounded_share": 0.9, "llm_cases": 1000,
    "llm_grounded_chats": 8, "llm_chat_turns": 2, "llm_chat_yes_weight": 10.0, "llm_spatial_slots": False,
    "stage1_steps": 300, "stage1_batch": 8, "stage1_lr": 3e-3, "stage1_min_lr": 6e-4,
    "stage1_warmup_lr": 1e-5, "stage1_warmup": 20, "stage1_init": "concepts",
    "stage2_steps": 40, "stage2_batch": 4, "stage2_lr": 1e-3, "stage2_min_lr": 3e-4,
    "stage2_warmup_lr": 1e-5, "stage2_warmup": 5,
    "max_new_tokens": 140,
}
OLD_TINY_LONG_OVERRIDES = {"n_stage1": 6000, "encoder_steps": 4800, "llm_steps": 3600, "llm_cases": 3000,
                           "stage1_steps": 1200}
OLD_FULL_TRAIN = {
    "stage1_steps": 20_000, "stage1_batch": 3, "stage1_lr": 1e-4, "stage1_min_lr": 8e-5,
    "stage1_warmup_lr": 1e-6, "stage1_warmup": 500,
    "stage2_steps": 2_501, "stage2_batch": 1, "stage2_lr": 3e-5, "stage2_min_lr": 1e-5,
    "stage2_warmup_lr": 1e-6, "stage2_warmup": 200,
    "max_new_tokens": 160,
}


def legacy_config(**train_changes) -> dict:
    """A config.json as the dict-based walkthrough wrote it (runs/tiny's format), with changes."""
    return {"profile": "tiny", "seed": 0, "image_size": 128, "llm": dict(OLD_TINY_LLM),
            "train": {**OLD_TINY_TRAIN, **train_changes}, "seeds": {"stage1": 0, "stage2": 1000, "eval": 2000},
            "template": "###Patient: <Img><ImageHere></Img> {instruction} ###Doctor: ", "end_sym": "###",
            "chat_system": "", "image_blind": "projection output replaced by zeros"}


def _same(flat: dict, old: dict) -> None:
    for key, value in old.items():
        assert flat[key] == value and type(flat[key]) is type(value), (key, flat[key], value)


#: Settings changed since the dict recipe: yes/no chats are balanced per question, so "Yes"
#: needs no extra weight (train.grounding.yes_no_weights).
CHANGED_SINCE = {"llm_chat_yes_weight": 1.0,
                 # ... and stage 2 starts below stage 1's end (1e-4 instead of 1e-3; --long: 3e-4)
                 "stage2_lr": 1e-4, "stage2_min_lr": 3e-5,
                 # ... and the 6-minute recipe trains its encoder 7/3 and its LLM twice as long and stage 1 four
                 # times as long at a third of the rate (--long keeps 3e-3 -> 6e-4)
                 "encoder_steps": 2800, "llm_steps": 1200, "stage1_steps": 1200, "stage1_lr": 1e-3, "stage1_min_lr": 2e-4,
                 # ... on the --long recipe's 6,000 stage-1 studies instead of 3,000, and shows the
                 # encoder each film with a lung lesion three times an epoch
                 "n_stage1": 6000, "encoder_lesion_repeats": 2,
                 # ... and its LLM learns from 16 grounded chats a case, in batches of 24, and half of its
                 # stage 1 asks the images' yes/no questions, as --long's does
                 "llm_batch": 24, "llm_grounded_chats": 16, "stage1_yes_no_share": 0.5}
#: What an older, flat config.json can hold: it predates lung-lesion oversampling and yes/no questions
#: in the alignment, so it reads as the tiny recipe without them (:data:`LEGACY_TINY`).
LEGACY_CHANGED_SINCE = {k: v for k, v in CHANGED_SINCE.items()
                        if k not in ("encoder_lesion_repeats", "stage1_yes_no_share")}
LEGACY_TINY = TINY_RECIPE.override({"encoder_lesion_repeats": 0, "stage1_yes_no_share": 0.0})
#: ... and ``--long``'s alignment also asks the images' yes/no questions, over a longer stage 1.
#: Its alignment rates stay those its reference run was trained with.
LONG_RATES = {"stage1_lr": 3e-3, "stage1_min_lr": 6e-4, "stage2_lr": 3e-4, "stage2_min_lr": 1e-4}
#: ... and its LLM keeps the chats its reference run was trained with (8 a case, batches of 16).
LONG_LLM = {"llm_batch": 16, "llm_grounded_chats": 8}
LONG_CHANGED_SINCE = {**LONG_LLM, "n_stage1": 24000, "encoder_steps": 19200, "stage1_steps": 4800,
                      "stage1_yes_no_share": 0.5, "stage2_yes_no_share": 0.5, **LONG_RATES}


def test_recipes_hold_the_dict_recipes_numbers():
    _same(TINY_RECIPE.flat(), {**OLD_TINY_TRAIN, **CHANGED_SINCE})
    _same(TINY_LONG.flat(), {**OLD_TINY_TRAIN, **CHANGED_SINCE, **OLD_TINY_LONG_OVERRIDES, **LONG_CHANGED_SINCE})
    _same(FULL_RECIPE.flat(), OLD_FULL_TRAIN)
    assert TINY_LLM == TINY_RECIPE.llm_arch and asdict(TINY.recipe.llm_arch) == OLD_TINY_LLM
    assert FULL.recipe.llm_arch is None
    assert (TINY.image_size, FULL.image_size, FULL.device) == (128, 224, "cuda")
    # settings the dict recipe did not state: the values its code used
    for recipe in (TINY_RECIPE, FULL_RECIPE):
        assert {k: v for k, v in recipe.flat().items() if k.endswith("weight_decay")} == dict.fromkeys(
            [k for k in ("llm_weight_decay", "stage1_weight_decay", "stage2_weight_decay") if k in recipe.flat()], 0.05)
    assert TINY_RECIPE.llm.warmup_lr == OLD_TINY_TRAIN["llm_lr"] / 30
    assert FULL_RECIPE.stage1.init == "random" and not FULL_RECIPE.trains_from_scratch
    assert TINY_LONG.override({**OLD_TINY_LONG_OVERRIDES, **LONG_CHANGED_SINCE}) == TINY_LONG
    assert TINY_RECIPE.override({**OLD_TINY_LONG_OVERRIDES, **LONG_CHANGED_SINCE}) == TINY_LONG


def test_xraygpt_stage_configs_are_built_from_the_full_recipe():
    from xraygpt_lab.train.schedule import XRAYGPT_STAGE1, XRAYGPT_STAGE2, StageConfig

    assert XRAYGPT_STAGE1 == StageConfig(name="stage1", steps=20_000, batch_size=3, init_lr=1e-4, min_lr=8e-5,
                                         warmup_lr=1e-6, warmup_steps=500, weight_decay=0.05, save_every=1000)
    assert XRAYGPT_STAGE2 == StageConfig(name="stage2", steps=2_501, batch_size=1, init_lr=3e-5, min_lr=1e-5,
                                         warmup_lr=1e-6, warmup_steps=200, weight_decay=0.05, save_every=500)


def test_every_field_has_one_flat_name():
    sections = {"data": "", "encoder": "encoder_", "llm_arch": "llm_arch_", "llm": "llm_", "stage1": "stage1_",
                "stage2": "stage2_"}
    expected = ["image_size", "max_new_tokens"]
    for name, prefix in sections.items():
        expected += [prefix + f.name for f in fields(getattr(TINY_RECIPE, name))]
    assert sorted(SETTINGS) == sorted(expected) and list(TINY_RECIPE.flat()) == list(SETTINGS)


@pytest.mark.parametrize(("settings", "message"), [
    ({"llm_lr": math.nan}, "llm_lr takes a finite number > 0, got nan"),
    ({"stage1_lr": math.inf}, "stage1_lr takes a finite number > 0"),
    ({"encoder_batch": 0}, "encoder_batch takes an integer >= 1, got 0"),
    ({"stage2_steps": -3}, "stage2_steps takes an integer >= 1"),
    ({"n_eval": True}, "n_eval takes an integer >= 1, got True"),
    ({"encoder_steps": 1.5}, "encoder_steps takes an integer"),
    ({"llm_grounded_share": 5}, "llm_grounded_share takes a finite number between 0 and 1, got 5"),
    ({"encoder_label_weight": -1.0}, "encoder_label_weight takes a finite number >= 0"),
    ({"encoder_lr": "fast"}, "encoder_lr takes a finite number > 0, got 'fast'"),
    ({"encoder_bf16": 1}, 'encoder_bf16 takes one of true, false, "auto", got 1'),
    ({"stage1_init": "zeros"}, 'stage1_init takes one of "concepts", "random"'),
    ({"llm_spatial_slots": "yes"}, "llm_spatial_slots takes true or false"),
    ({"stage1_min_lr": 0.1}, "stage1_min_lr must be <= stage1_lr"),
    ({"llm_arch_hidden_size": 130}, "llm_arch_hidden_size 130 is not divisible"),
    ({"stage2_init": "random"}, "unknown training setting 'stage2_init'; choose from image_size, n_stage1"),
    ({"llm_lora_r": 8}, "unknown training setting 'llm_lora_r'"),
])
def test_bad_settings_are_refused_in_one_line_naming_the_key(settings, message):
    with pytest.raises(RecipeError) as info:
        TINY_RECIPE.override(settings)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, XrayGPTLabError) and isinstance(info.value, ValueError)


def test_a_recipe_built_directly_is_checked_too():
    from dataclasses import replace

    with pytest.raises(RecipeError, match="stage2_batch takes an integer >= 1"):
        replace(TINY_RECIPE, stage2=replace(TINY_RECIPE.stage2, batch=0))
    with pytest.raises(RecipeError, match="stage2 must be of type AlignStage, got AlignStage1"):
        replace(TINY_RECIPE, stage2=TINY_RECIPE.stage1)
    with pytest.raises(RecipeError, match="encoder_steps: this recipe has no encoder section"):
        FULL_RECIPE.override({"encoder_steps": 3})


def test_parse_setting_reads_json_or_a_bare_string():
    assert parse_setting("encoder_steps=4800") == ("encoder_steps", 4800)
    assert parse_setting("stage1_init=random") == ("stage1_init", "random")
    assert parse_setting("encoder_bf16=auto") == ("encoder_bf16", "auto")
    assert parse_setting("encoder_bf16=false") == ("encoder_bf16", False)
    assert parse_setting("llm_lr=1") == ("llm_lr", 1.0)
    assert parse_setting("image_size=64") == ("image_size", 64)
    for bad, message in (("llm_lr=NaN", "llm_lr takes a finite number"), ("encoder_steps", "expected KEY=VALUE"),
                         ("=3", "expected KEY=VALUE"), ("llm_grounded_share=5", "between 0 and 1")):
        with pytest.raises(RecipeError, match=message):
            parse_setting(bad)


def test_to_dict_round_trips_and_from_dict_refuses_unknown_or_missing_entries():
    for recipe in (TINY_RECIPE, TINY_LONG, FULL_RECIPE):
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    data = TINY_RECIPE.to_dict()
    with pytest.raises(RecipeError, match="recipe: unknown key 'lora'"):
        Recipe.from_dict({**data, "lora": {}})
    with pytest.raises(RecipeError, match="recipe entry stage1: missing key 'init'"):
        Recipe.from_dict({**data, "stage1": {k: v for k, v in data["stage1"].items() if k != "init"}})
    with pytest.raises(RecipeError, match="llm_batch takes an integer >= 1, got 0"):
        Recipe.from_dict({**data, "llm": {**data["llm"], "batch": 0}})


def test_a_run_written_before_yes_no_alignment_questions_reads_as_trained_without_them():
    data = TINY_LONG.to_dict()
    for stage in ("stage1", "stage2"):
        del data[stage]["yes_no_share"]
    old = Recipe.from_dict(data)
    assert (old.stage1.yes_no_share, old.stage2.yes_no_share) == (0.0, 0.0)
    assert old == TINY_LONG.override({"stage1_yes_no_share": 0.0, "stage2_yes_no_share": 0.0})
    with pytest.raises(RecipeError, match="stage2_yes_no_share takes a finite number between 0 and 1"):
        TINY_RECIPE.override({"stage2_yes_no_share": 1.5})

def test_a_run_written_before_lesion_oversampling_reads_as_trained_without_it():
    data = TINY_RECIPE.override({"encoder_lesion_repeats": 2, "stage1_lesion_repeats": 2}).to_dict()
    for section in ("encoder", "stage1", "stage2"):
        del data[section]["lesion_repeats"]
    old = Recipe.from_dict(data)
    assert (old.encoder.lesion_repeats, old.stage1.lesion_repeats, old.stage2.lesion_repeats) == (0, 0, 0)
    with pytest.raises(RecipeError, match="encoder_lesion_repeats takes an integer >= 0, got -1"):
        TINY_RECIPE.override({"encoder_lesion_repeats": -1})


def test_a_run_written_before_graded_concepts_reads_as_trained_without_them():
    """The shipped reference's config.json predates the settings: its LLM reads ungraded concepts
    and its encoder has no grade head."""
    from xraygpt_lab.runs import reference_run

    data = TINY_RECIPE.override({"llm_graded_concepts": True, "encoder_grade_weight": 0.5}).to_dict()
    del data["llm"]["graded_concepts"], data["encoder"]["grade_weight"]
    old = Recipe.from_dict(data)
    assert old.llm.graded_concepts is False and old.encoder.grade_weight == 0.0
    assert recipe_of_run(json.loads((reference_run() / "config.json").read_text())).llm.graded_concepts is False
    with pytest.raises(RecipeError, match="llm_graded_concepts takes true or false"):
        TINY_RECIPE.override({"llm_graded_concepts": "yes"})


def test_recipe_of_run_migrates_the_older_format_and_refuses_what_does_not_map():
    from xraygpt_lab.train.walkthrough import run_config

    # a run written before lung-lesion oversampling reads as trained without it
    assert recipe_of_run(legacy_config(**LEGACY_CHANGED_SINCE)) == LEGACY_TINY
    # a run written before the alignment asked yes/no questions reads as trained without them
    legacy_long = legacy_config(**{**LEGACY_CHANGED_SINCE, **OLD_TINY_LONG_OVERRIDES, **LONG_RATES, **LONG_LLM})
    assert recipe_of_run(legacy_long) == TINY_LONG.override(
        {"encoder_steps": 4800, "stage1_steps": 1200, "stage1_yes_no_share": 0.0, "stage2_yes_no_share": 0.0,
         "n_stage1": 6000, "encoder_lesion_repeats": 0})
    assert recipe_of_run(legacy_config()).llm.chat_yes_weight == 10.0  # an older run keeps its own
    assert recipe_of_run(run_config(TINY_LONG, "tiny", 0)) == TINY_LONG
    refused = [
        (legacy_config(llm_lora_r=8), "unknown: llm_lora_r"),
        ({**legacy_config(), "train": {k: v for k, v in OLD_TINY_TRAIN.items() if k != "encoder_shift"}},
         "missing: encoder_shift"),
        (legacy_config(llm_batch=0), "llm_batch takes an integer >= 1"),
        ({k: v for k, v in legacy_config().items() if k != "llm"}, "needs 'train', 'image_size' and 'llm'"),
        ({**run_config(TINY_RECIPE, "tiny", 0), "recipe_version": 2}, "recipe_version 2"),
        ({"seed": 0}, "holds no recipe"),
    ]
    for config, message in refused:
        with pytest.raises(RecipeError, match=message):
            recipe_of_run(config)


def test_tiny_llm_defaults_to_the_tiny_architecture():
    from xraygpt_lab.models.llm import tiny_llm, train_tokenizer

    tokenizer = train_tokenizer(["a small corpus of words", "more words here"] * 20, vocab_size=300)
    config = tiny_llm(tokenizer).config
    assert [getattr(config, k) for k in OLD_TINY_LLM if k != "vocab_size"] == [
        v for k, v in OLD_TINY_LLM.items() if k != "vocab_size"]
    assert config.vocab_size == len(tokenizer)


# --------------------------------------------------------------------------- what each stage receives


def _old_walkthrough_arguments(t: dict, llm: dict) -> dict:
    """What the dict-based ``run_walkthrough`` handed to each training function for ``t`` (its
    ``t[key]`` / ``t.get(key, fallback)`` reads, copied)."""
    def stage(name: str) -> dict:
        return {"name": name, "steps": t[f"{name}_steps"], "batch_size": t[f"{name}_batch"],
                "init_lr": t[f"{name}_lr"], "min_lr": t[f"{name}_min_lr"],
                "warmup_lr": t.get(f"{name}_warmup_lr", t[f"{name}_lr"] / 30), "warmup_steps": t[f"{name}_warmup"],
                "weight_decay": 0.05, "grad_clip": None, "seed": 0, "save_every": 50}

    k = t.get("llm_cases", t["n_stage1"])
    return {
        "make_split": [(t["n_stage1"], 128, 0, (4, 4)), (t["n_stage2"], 128, 1000, None),
                       (t["n_eval"], 128, 2000, (4, 4) if t.get("llm_spatial_slots") else None)],
        "pretrain_encoder": {"steps": t["encoder_steps"], "batch_size": t["encoder_batch"], "lr": t["encoder_lr"],
                             "seed": 0, "contrastive_weight": t.get("encoder_contrastive_weight", 1.0),
                             "label_weight": t.get("encoder_label_weight", 0.0), "shift": t.get("encoder_shift", 0),
                             "contrastive_every": t.get("encoder_contrastive_every", 1),
                             "dense_weight": t.get("encoder_dense_weight", 0.0), "bf16": t.get("encoder_bf16", False),
                             "n_images": t["n_stage1"], "checkpoint": "encoder.ckpt.safetensors",
                             "repeats": [1],  # since then: lung-lesion films may repeat (the one case here has none;
                             # test_encoder_lesion_repeats_oversample_the_films_with_a_lung_lesion)
                             "save_every": 50,  # since then: the walkthrough's checkpoint cadence, as the other stages
                             # ... and a second head may read sizes and severities (encoder_grade_weight)
                             "grade_weight": t.get("encoder_grade_weight", 0.0),
                             "grades": bool(t.get("encoder_grade_weight"))},
        # since then: graded findings' concepts may carry the grade (llm_graded_concepts)
        "grounded_examples": {"n": k, "n_slots": 16, "seed": 0, "layouts": None,
                              "graded": t.get("llm_graded_concepts", False)},
        "grounded_conversations": {"n": k, "n_slots": 16, "seed": 1, "per_case": t["llm_grounded_chats"],
                                   "max_turns": t.get("llm_chat_turns", 3),
                                   "yes_weight": t.get("llm_chat_yes_weight", 4.0), "layouts": None,
                                   "graded": t.get("llm_graded_concepts", False)},
        "llm_examples": {"n": k, "seed": 0},
        "mix": {"share": t.get("llm_grounded_share", 0.0), "seed": 0},
        "train_tokenizer": {"vocab_size": llm["vocab_size"]},
        "tiny_llm": {"seed": 0, **{key: v for key, v in llm.items() if key != "vocab_size"}},
        "domain_finetune": {"stage": stage("llm"), "checkpoint": "llm.ckpt.safetensors", "bf16": False},
        "concept_init": {"n": t["n_stage1"], "graded": t.get("llm_graded_concepts", False)}
        if t.get("stage1_init") == "concepts" else None,
        "align_stage": [{"stage": stage("stage1"), "n": t["n_stage1"], "checkpoint": "stage1.ckpt.safetensors",
                         "bf16": False, "yes_no_share": t.get("stage1_yes_no_share", 0.0),
                         "questions": bool(t.get("stage1_yes_no_share"))},
                        {"stage": stage("stage2"), "n": t["n_stage2"], "checkpoint": "stage2.ckpt.safetensors",
                         "bf16": False, "yes_no_share": t.get("stage2_yes_no_share", 0.0),
                         "questions": bool(t.get("stage2_yes_no_share"))}],
        "evaluate_model": {"n": t["n_eval"], "max_new_tokens": t["max_new_tokens"]},
        "diagnostics": {"seed": 0, "max_new_tokens": t["max_new_tokens"], "spatial": bool(t.get("llm_spatial_slots")),
                        "graded": t.get("llm_graded_concepts", False)},
    }


class _FakeCache:
    """``FeatureCache`` without the encoder: zeros of the right shape, as broadcast views."""

    misses = hits = 0
    unreadable: list = []

    def __init__(self, root, encoder) -> None:
        self.shape = (encoder.num_tokens, encoder.token_dim)

    def features(self, pixels):
        return torch.zeros(1, *self.shape).expand(len(pixels), *self.shape)


@pytest.fixture
def recorded_walkthrough(monkeypatch, tmp_path):
    """``run(recipe)`` trains nothing and returns what each training function received. The splits
    have the requested number of cases, all views of one rendered case."""
    from types import SimpleNamespace

    import xraygpt_lab.train.walkthrough as walkthrough
    from xraygpt_lab.models import llm as llm_module
    from xraygpt_lab.train import align, concept_init, contrastive, evaluation, feature_cache, grounding, llm_finetune

    calls: dict = {"make_split": [], "align_stage": []}
    real_split = walkthrough.make_split

    def make_split(n, size, seed, workers=None, grid=None):
        calls["make_split"].append((n, size, seed, grid))
        one = real_split(1, size, seed, workers=1, grid=grid)
        return walkthrough.SplitData(
            one.pixels.expand(n, *one.pixels.shape[1:]), one.summaries * n, one.conversations * n, one.labels * n,
            one.findings * n, None if grid is None else one.token_labels.expand(n, *one.token_labels.shape[1:]))

    def pretrain_encoder(encoder, text_encoder, images, texts, labels=None, *, checkpoint, token_labels, repeats,
                         grades, **kw):
        calls["pretrain_encoder"] = {**kw, "n_images": len(images), "checkpoint": checkpoint.name,
                                     "repeats": sorted(set(repeats.tolist())), "grades": grades is not None}
        calls["pretrain_encoder"].pop("progress")
        calls["pretrain_encoder"].pop("on_step", None)  # a display hook, not a training setting
        return {"step": [0], "loss": [1.0], "bf16": False, "loss_contrastive": [1.0], "loss_labels": [None],
                "label_head": None}

    def grounded_examples(findings, summaries, n_slots, seed, layouts=None, graded=False):
        calls["grounded_examples"] = {"n": len(findings), "n_slots": n_slots, "seed": seed, "layouts": layouts,
                                      "graded": graded}
        return [("grounded prompt", "grounded answer###")]

    def grounded_conversations(findings, conversations, n_slots, seed, **kw):
        calls["grounded_conversations"] = {"n": len(findings), "n_slots": n_slots, "seed": seed, **kw}
        return [("chat prompt", "Yes###")]

    def llm_examples(conversations, seed):
        calls["llm_examples"] = {"n": len(conversations), "seed": seed}
        return [("question", "answer###")]

    def mix(conversations, grounded, share, seed):
        calls["mix"] = {"share": share, "seed": seed}
        return conversations + grounded

    real_tokenizer, real_llm = llm_module.train_tokenizer, llm_module.tiny_llm

    def train_tokenizer(corpus, vocab_size):
        calls["train_tokenizer"] = {"vocab_size": vocab_size}
        return real_tokenizer(corpus * 20, vocab_size=300)

    def tiny_llm(tokenizer, seed, arch):
        c = real_llm(tokenizer, seed=seed, arch=arch).config
        calls["tiny_llm"] = {"seed": seed, **{k: getattr(c, k) for k in OLD_TINY_LLM if k != "vocab_size"}}
        return real_llm(tokenizer, seed=seed, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2)

    def domain_finetune(llm, tokenizer, examples, stage, checkpoint, *, bf16, **kw):
        calls["domain_finetune"] = {"stage": stage.to_dict(), "checkpoint": checkpoint.name, "bf16": bf16}
        return SimpleNamespace(history=[{"step": 1, "loss": 1.0}])

    def init_projection_from_concepts(projection, embeddings, tokenizer, features, token_labels,
                                      graded_findings=None):
        calls["concept_init"] = {"n": len(features), "graded": graded_findings is not None}
        return 0.5

    def align_stage(model, data, stage, checkpoint, *, bf16, **kw):
        calls["align_stage"].append({"stage": stage.to_dict(), "n": len(data), "checkpoint": checkpoint.name,
                                     "bf16": bf16, "yes_no_share": kw.get("yes_no_share"),
                                     "questions": data.questions is not None})
        return SimpleNamespace(history=[{"step": 1, "loss": 1.0}])

    def evaluate_model(model, refs, features, ground_truth, max_new_tokens, log):
        calls["evaluate_model"] = {"n": len(refs), "max_new_tokens": max_new_tokens}
        return {"rougeL": 0.0, "ce_f1_macro": 0.0, "baselines": {"image_blind": {"ce_f1_macro": 0.0}}}

    def diagnostics(model, out, features, split, seed, max_new_tokens, spatial, graded):
        calls["diagnostics"] = {"seed": seed, "max_new_tokens": max_new_tokens, "spatial": spatial, "graded": graded}
        return {}

    for module, name, fake in ((walkthrough, "make_split", make_split), (walkthrough, "llm_examples", llm_examples),
                               (walkthrough, "diagnostics", diagnostics),
                               (contrastive, "pretrain_encoder", pretrain_encoder),
                               (grounding, "grounded_examples", grounded_examples),
                               (grounding, "grounded_conversations", grounded_conversations), (grounding, "mix", mix),
                               (llm_module, "train_tokenizer", train_tokenizer), (llm_module, "tiny_llm", tiny_llm),
                               (llm_finetune, "domain_finetune", domain_finetune),
                               (concept_init, "init_projection_from_concepts", init_projection_from_concepts),
                               (align, "align_stage", align_stage), (evaluation, "evaluate_model", evaluate_model),
                               (feature_cache, "FeatureCache", _FakeCache)):
        original = getattr(module, name)
        # every module that imported the name (the walkthrough imports at module level) sees the fake
        for other in [m for m in list(sys.modules.values()) if getattr(m, "__name__", "").startswith("xraygpt_lab.")]:
            if getattr(other, name, None) is original:
                monkeypatch.setattr(other, name, fake)
        monkeypatch.setattr(module, name, fake)

    def run(recipe: Recipe, name: str) -> dict:
        calls.clear()
        calls.update({"make_split": [], "align_stage": [], "concept_init": None})
        walkthrough.run_walkthrough(tmp_path / name, recipe=recipe, log=lambda m: None, progress=False,
                                    device="cpu")
        return dict(calls)

    return run


@pytest.mark.parametrize(("recipe", "old"), [
    (TINY_RECIPE, {**OLD_TINY_TRAIN, **CHANGED_SINCE}),
    (TINY_LONG, {**OLD_TINY_TRAIN, **CHANGED_SINCE, **OLD_TINY_LONG_OVERRIDES, **LONG_CHANGED_SINCE}),
    (TINY_RECIPE.override({"stage1_init": "random", "llm_spatial_slots": True, "encoder_bf16": False,
                           "llm_lr": 1e-3, "max_new_tokens": 20}),
     {**OLD_TINY_TRAIN, **CHANGED_SINCE, "stage1_init": "random", "llm_spatial_slots": True, "encoder_bf16": False,
      "llm_lr": 1e-3, "max_new_tokens": 20}),
], ids=["tiny", "long", "set"])
def test_walkthrough_stages_receive_the_dict_recipes_values(recorded_walkthrough, recipe, old):
    expected = _old_walkthrough_arguments(old, OLD_TINY_LLM)
    got = recorded_walkthrough(recipe, "run")
    if old.get("llm_spatial_slots"):  # layouts: the per-token targets of the first k cases
        for key in ("grounded_examples", "grounded_conversations"):
            assert len(got[key].pop("layouts")) == old["llm_cases"]
            expected[key].pop("layouts")
    assert got == expected


def test_encoder_lesion_repeats_oversample_the_films_with_a_lung_lesion(monkeypatch, tmp_path):
    import xraygpt_lab.train.walkthrough as walkthrough
    got = {}

    def pretrain_encoder(encoder, text_encoder, images, texts, labels=None, *, repeats, **kw):
        got.update(labels=labels, repeats=repeats)
        return {"step": [0], "loss": [1.0], "bf16": False, "loss_contrastive": [1.0], "loss_labels": [None],
                "label_head": None}

    monkeypatch.setattr(walkthrough, "pretrain_encoder", pretrain_encoder)
    recipe = TINY_RECIPE.override({"encoder_lesion_repeats": 2})
    split = walkthrough.make_split(60, recipe.image_size, 11, workers=1, grid=walkthrough.encoder_config(recipe).grid)
    run = walkthrough.RunFolder(out=tmp_path, seed=0, log=lambda m: None, progress=False,
                                device=torch.device("cpu"), accelerator=None)
    walkthrough.train_encoder(recipe, run, split)
    lesion_columns = [j for j, (observation, _) in enumerate(walkthrough.laterality_columns()) if observation == "Lung Lesion"]
    lesion = got["labels"][:, lesion_columns].amax(1).bool()  # [60] films whose labels name a nodule or mass
    assert 0 < int(lesion.sum()) < 60
    assert got["repeats"].tolist() == (1 + 2 * lesion.long()).tolist()


def test_image_size_reaches_the_data_the_encoder_and_config_json(recorded_walkthrough, tmp_path):
    got = recorded_walkthrough(TINY_RECIPE.override({"image_size": 160}), "big")
    assert [call[1:] for call in got["make_split"]] == [(160, 0, (5, 5)), (160, 1000, None), (160, 2000, None)]
    config = json.loads((tmp_path / "big" / "config.json").read_text())
    encoder = json.loads((tmp_path / "big" / "encoder" / "encoder_config.json").read_text())
    assert config["recipe"]["image_size"] == encoder["image_size"] == 160 and "image_size" not in config


def test_an_image_size_the_encoder_cannot_take_is_refused_before_anything_is_written(tmp_path):
    from xraygpt_lab.train.walkthrough import run_walkthrough

    for size in (60, 64):  # not a multiple of the patch; a token grid smaller than the window
        with pytest.raises(RecipeError, match=f"image_size {size} does not fit the tiny encoder"):
            run_walkthrough(tmp_path / "run", overrides={"image_size": size})
    assert not (tmp_path / "run").exists()
