"""The whole XrayGPT recipe on the synthetic world, stage by stage, resumable.

    synthetic data → encoder pretraining (MedCLIP loss) → LLM domain fine-tuning (MedVicuna /
    RadVicuna step) → alignment stage 1 ("MIMIC-like") → stage 2 ("OpenI-like") → evaluation

The tiny profile's stand-ins, stated plainly: stage 1 trains on one synthetic set (seed ``S``,
playing MIMIC-CXR's many summaries), stage 2 on a smaller second synthetic set drawn with another
seed (``S + 1000``, playing OpenI; same report generator, other phantoms and phrasings), and the
evaluation uses a third seed (``S + 2000``) that no stage saw. The LLM's domain conversations are
the synthetic conversations of the stage-1 set (single turns, plus multi-turn chains in which
earlier answers must stay consistent with later ones).

Resuming: every finished stage leaves its output in the run folder and is skipped next time; a
stage interrupted midway continues from its last checkpoint in ``RUN/work/``.
"""
from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import STAGE1_INITS, get_profile
from ..device import describe_device, resolve_device
from ..errors import XrayGPTLabError
from ..models.conversation import END_SYM, xraygpt_prompt, xraygpt_text_example
from .checkpoint import atomic_write_text, load_weights, save_weights
from .loop import make_accelerator
from .schedule import StageConfig

#: Files of a complete run folder (``runs.load_run`` checks these, ``metrics.json`` marks the end).
RUN_FILES: tuple[str, ...] = (
    "config.json",
    "encoder/encoder_config.json",
    "encoder/encoder.safetensors",
    "llm/config.json",
    "llm/model.safetensors",
    "llm/tokenizer.json",
    "projection.safetensors",
)
COMPLETE_MARKER = "metrics.json"

Log = Callable[[str], None]


@dataclass
class SplitData:
    """One synthetic split, preprocessed."""

    pixels: torch.Tensor  # [M, 1, S, S]
    summaries: list[str]
    conversations: list[list[dict]]
    labels: list[dict]
    findings: list[list[Any]]
    token_labels: torch.Tensor | None = None  # [M, tokens, L] finding regions per token cell (grid given)


def split_seeds(seed: int) -> dict[str, int]:
    """Seeds of the three synthetic sets: stage 1, stage 2 and the held-out evaluation."""
    return {"stage1": seed, "stage2": seed + 1000, "eval": seed + 2000}


def make_split(n: int, size: int, seed: int, workers: int | None = None,
               grid: tuple[int, int] | None = None) -> SplitData:
    """Generate ``n`` synthetic cases (``data.synthetic.render_cases``, in ``workers`` processes)
    and preprocess them with the MedCLIP transform; with ``grid`` (the encoder's token grid) also
    the per-token targets of ``label_supervision.token_targets`` from the finding masks."""
    from ..data.images import preprocess
    from ..data.synthetic import render_cases
    from .label_supervision import token_targets

    cases = render_cases(n, size, seed, workers=workers)
    columns = laterality_columns()
    return SplitData(
        pixels=torch.stack([preprocess(c.image, size) for c in cases]),
        summaries=[c.summary for c in cases],
        conversations=[c.conversation for c in cases],
        labels=[dict(c.labels) for c in cases],
        findings=[list(c.findings) for c in cases],
        token_labels=None if grid is None else torch.stack(
            [token_targets(c.masks, c.findings, columns, grid) for c in cases]),
    )


def laterality_columns() -> list[tuple[str, str | None]]:
    """``(observation, side)`` of each column of :func:`laterality_labels` (side None: not split)."""
    from .grounding import concept_columns

    return concept_columns()


def laterality_labels(findings: list[list[Any]]) -> torch.Tensor:
    """Multi-hot ``[M, L]`` targets for the encoder's losses, with left/right split columns."""
    from .label_supervision import finding_columns

    columns = laterality_columns()
    out = torch.zeros(len(findings), len(columns))
    for i, case in enumerate(findings):
        for f in case:
            out[i, finding_columns(f, columns)] = 1.0
    return out


def llm_examples(conversations: list[list[dict]], seed: int, chains_per_case: int = 3) -> list[tuple[str, str]]:
    """Domain conversations: every single turn, plus multi-turn chains from the same case.

    A chain shows 1–3 earlier question/answer turns of one case before the last question, so the
    model learns that an answer must agree with what the conversation already established.
    """
    rng = random.Random(seed)
    examples = []
    for turns in conversations:
        examples += [xraygpt_text_example(t["question"], t["answer"]) for t in turns]
        for _ in range(chains_per_case if len(turns) > 1 else 0):
            chain = rng.sample(turns, min(len(turns), rng.randint(2, 4)))
            context = "".join(f"{END_SYM}Patient: {t['question']} {END_SYM}Doctor: {t['answer']} " for t in chain[:-1])
            prompt, target = xraygpt_text_example(chain[-1]["question"], chain[-1]["answer"])
            examples.append((context + prompt, target))
    return examples


def _stage(name: str, t: dict, prefix: str, seed: int, save_every: int = 50) -> StageConfig:
    return StageConfig(name=name, steps=t[f"{prefix}_steps"], batch_size=t[f"{prefix}_batch"],
                       init_lr=t[f"{prefix}_lr"], min_lr=t[f"{prefix}_min_lr"],
                       warmup_lr=t.get(f"{prefix}_warmup_lr", t[f"{prefix}_lr"] / 30),
                       warmup_steps=t[f"{prefix}_warmup"], weight_decay=0.05, seed=seed, save_every=save_every)


def run_walkthrough(out: str | Path, profile: str = "tiny", seed: int = 0, log: Log = print,
                    overrides: dict[str, Any] | None = None, progress: bool = True,
                    keep_work: bool = False, device: str | torch.device | None = None) -> dict[str, Any]:
    """Train (or resume) a complete run into ``out`` and return its ``metrics.json`` content.

    ``device``: where the models train (``xraygpt_lab.device.resolve_device``: CUDA when present,
    else the CPU; ``$XRAYGPT_DEVICE`` overrides). The run folder is the same either way.
    """
    from ..models.encoder import EncoderConfig, VisionEncoder
    from ..models.llm import load_llm, save_llm, tiny_llm, train_tokenizer
    from ..models.text_encoder import TextEncoder
    from ..models.xraygpt import XrayGPT
    from ..train.contrastive import pretrain_encoder
    from .align import AlignmentSet, align_stage
    from .concept_init import init_projection_from_concepts
    from .evaluation import evaluate_model
    from .feature_cache import FeatureCache
    from .grounding import CONCEPT_TOKENS, grounded_conversations, grounded_examples, mix
    from .llm_finetune import domain_finetune

    prof = get_profile(profile)
    dev = resolve_device(device)
    accelerator = make_accelerator(device=dev)
    if prof.name != "tiny":
        raise XrayGPTLabError(
            "the walkthrough trains from scratch and runs the tiny profile only; for the full profile "
            "load MedCLIP + Vicuna with models.encoder / models.llm.load_llm and call train.align.align_stage")
    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    t = {**prof.train, **(overrides or {})}
    if t.get("stage1_init", "random") not in STAGE1_INITS:
        raise ValueError(f"stage1_init is one of {STAGE1_INITS}, got {t['stage1_init']!r}")
    config = {"profile": prof.name, "seed": seed, "image_size": prof.image_size, "llm": dict(prof.llm),
              "train": t, "seeds": split_seeds(seed), "template": xraygpt_prompt("{instruction}"),
              "end_sym": END_SYM,
              # the tiny LLM's conversations carry no system prompt, so its chat uses none
              "chat_system": "", "image_blind": "projection output replaced by zeros"}
    config_path = out / "config.json"
    if config_path.is_file():
        old = json.loads(config_path.read_text())
        if {k: old.get(k) for k in ("profile", "seed", "train")} != {k: config[k] for k in ("profile", "seed", "train")}:
            raise XrayGPTLabError(f"{out} holds a run with other settings (profile/seed/steps); choose another --out")
    else:
        atomic_write_text(config_path, json.dumps(config, indent=2))
    timings_path = work / "timings.json"
    timings: dict[str, float] = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    history_path = work / "history.json"
    history: dict[str, Any] = json.loads(history_path.read_text()) if history_path.is_file() else {}

    def stage_done(name: str, seconds: float, extra: str = "") -> None:
        timings[name] = round(seconds, 1)
        log(f"[{name}] done in {seconds:.1f} s{extra}")
        atomic_write_text(history_path, json.dumps(history))
        atomic_write_text(timings_path, json.dumps(timings))

    torch.manual_seed(seed)
    seeds = split_seeds(seed)
    size = prof.image_size
    log(f"[device] {describe_device(dev)}")
    # 1. data ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    log(f"[data] synthetic sets: stage 1 ({t['n_stage1']}, seed {seeds['stage1']}), "
        f"stage 2 ({t['n_stage2']}, seed {seeds['stage2']}), eval ({t['n_eval']}, seed {seeds['eval']})")
    grid = EncoderConfig.tiny(size).grid  # token cells of the per-token targets
    s1 = make_split(t["n_stage1"], size, seeds["stage1"], grid=grid)
    s2 = make_split(t["n_stage2"], size, seeds["stage2"])
    ev = make_split(t["n_eval"], size, seeds["eval"], grid=grid if t.get("llm_spatial_slots") else None)
    stage_done("data", time.perf_counter() - t0)

    # 2. encoder (MedCLIP-style contrastive pretraining, then frozen) ------------------------
    t0 = time.perf_counter()
    if (out / "encoder" / "encoder.safetensors").is_file():
        encoder = VisionEncoder.from_pretrained(out / "encoder", device=dev)
        log("[encoder] found in run folder, skipped")
    else:
        log(f"[encoder] pretraining, {t['encoder_steps']} steps (MedCLIP loss × {t.get('encoder_contrastive_weight', 1.0)}"
            f" + token label loss × {t.get('encoder_label_weight', 0.0)}, per-token × {t.get('encoder_dense_weight', 0.0)})")
        torch.manual_seed(seed)
        encoder = VisionEncoder(EncoderConfig.tiny(size)).to(dev)
        # BPE training breaks ties in no fixed order, so keep the first tokenizer for a resume
        text_init = work / "text_encoder_init"
        if (text_init / "text_encoder.safetensors").is_file():
            text_encoder = TextEncoder.from_pretrained(text_init)
        else:
            text_encoder = TextEncoder.from_corpus(s1.summaries)
            text_encoder.save_pretrained(text_init)
        text_encoder = text_encoder.to(dev)
        h = pretrain_encoder(encoder, text_encoder, s1.pixels, s1.summaries, laterality_labels(s1.findings),
                             steps=t["encoder_steps"], batch_size=t["encoder_batch"], lr=t["encoder_lr"],
                             seed=seed, progress=progress,
                             contrastive_weight=t.get("encoder_contrastive_weight", 1.0),
                             label_weight=t.get("encoder_label_weight", 0.0), shift=t.get("encoder_shift", 0),
                             contrastive_every=t.get("encoder_contrastive_every", 1),
                             token_labels=s1.token_labels, dense_weight=t.get("encoder_dense_weight", 0.0),
                             bf16=t.get("encoder_bf16", False),
                             checkpoint=work / "encoder.ckpt.safetensors")
        history["encoder"] = [{"step": s + 1, "loss": round(v, 5)} for s, v in zip(h["step"], h["loss"])]
        history["encoder_bf16"] = h["bf16"]  # what encoder_bf16 ("auto") resolved to on this machine
        for part in ("loss_contrastive", "loss_labels"):
            for row, v in zip(history["encoder"], h[part]):
                row[part] = None if v is None else round(v, 5)
        text_encoder.save_pretrained(out / "text_encoder")
        if h.get("label_head") is not None:  # kept for diagnostics (what the tokens carry)
            (out / "encoder").mkdir(exist_ok=True)
            save_weights(out / "encoder" / LABEL_HEAD_FILE, dict(h["label_head"].state_dict()))
        encoder.save_pretrained(out / "encoder")  # last: its weights file marks the stage done
        stage_done("encoder", time.perf_counter() - t0, " (bf16 autocast)" if h["bf16"] else " (float32)")
    encoder = encoder.freeze()

    # 3. encoder features, once per image ---------------------------------------------------
    t0 = time.perf_counter()
    cache = FeatureCache(work / "features", encoder)
    f1, f2, fe = cache.features(s1.pixels), cache.features(s2.pixels), cache.features(ev.pixels)
    stage_done("features", time.perf_counter() - t0, f" ({cache.misses} encoded, {cache.hits} from cache)")

    # 4. LLM: tokenizer + domain fine-tuning -------------------------------------------------
    t0 = time.perf_counter()
    if (out / "llm" / "model.safetensors").is_file():
        llm, tokenizer = load_llm(out / "llm", device=dev)
        log("[llm] found in run folder, skipped")
    else:
        # conversations (RadVicuna-like) + grounded examples that teach the slot (train/grounding.py)
        k = t.get("llm_cases", len(s1.summaries))  # the LLM needs fewer cases than the encoder
        # spatial slots: slot k holds the concept whose region covers token cell k (grounding.slot_text)
        layouts = s1.token_labels[:k].tolist() if t.get("llm_spatial_slots") else None
        grounded = grounded_examples(s1.findings[:k], s1.summaries[:k], encoder.num_tokens, seed, layouts=layouts)
        if t.get("llm_grounded_chats", 0):  # follow-up questions answered from the slot too
            grounded += grounded_conversations(s1.findings[:k], s1.conversations[:k], encoder.num_tokens, seed + 1,
                                               per_case=t["llm_grounded_chats"], max_turns=t.get("llm_chat_turns", 3),
                                               yes_weight=t.get("llm_chat_yes_weight", 4.0), layouts=layouts)
        examples = mix(llm_examples(s1.conversations[:k], seed), grounded, t.get("llm_grounded_share", 0.0), seed)
        tok_dir = work / "tokenizer"
        if (tok_dir / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir)
        else:
            corpus = list(dict.fromkeys(p + a for p, a in examples)) + [xraygpt_prompt(q) for q in _instructions()]
            tokenizer = train_tokenizer(corpus, vocab_size=prof.llm["vocab_size"])
            tokenizer.add_tokens(list(CONCEPT_TOKENS), special_tokens=True)
            tokenizer.save_pretrained(tok_dir)
        llm = tiny_llm(tokenizer, seed=seed, **{k: v for k, v in prof.llm.items() if k != "vocab_size"}).to(dev)
        log(f"[llm] domain fine-tuning on {len(examples)} examples (conversations + grounded slots), {t['llm_steps']} steps")
        r = domain_finetune(llm, tokenizer, examples, _stage("llm", t, "llm", seed), work / "llm.ckpt.safetensors",
                            progress=progress, accelerator=accelerator, bf16=False)
        history["llm"] = r.history
        save_llm(llm, tokenizer, out / "llm")
        stage_done("llm", time.perf_counter() - t0)

    # 5./6. alignment stages: only the linear projection trains --------------------------------
    # (the tiny LLM stages train in float32 on every device, bf16=False: the recipe's numbers are
    # float32's, and at this size a GPU step is bound by kernel launches, not by arithmetic)
    torch.manual_seed(seed)
    model = XrayGPT(encoder, llm, tokenizer).to(dev)
    for name, feats, split, prefix, previous in (("stage1", f1, s1, "stage1", None),
                                                 ("stage2", f2, s2, "stage2", "stage1")):
        done_path = work / f"projection_{name}.safetensors"
        if done_path.is_file():
            model.projection.load_state_dict(load_weights(done_path)[0])
            log(f"[{name}] found, skipped")
            continue
        t0 = time.perf_counter()
        checkpoint = work / f"{name}.ckpt.safetensors"
        if previous is not None:
            model.projection.load_state_dict(load_weights(work / f"projection_{previous}.safetensors")[0])
        elif t.get("stage1_init") == "concepts" and not checkpoint.is_file():
            # tiny profile: start from the least-squares map onto the concept tokens (train/concept_init.py)
            r2 = init_projection_from_concepts(model.projection, model.llm.get_input_embeddings().weight,
                                               tokenizer, feats, split.token_labels)
            log(f"[{name}] start: least-squares fit of the image tokens to the concept tokens (R² {r2:.2f})")
        stage = _stage(name, t, prefix, seed)
        log(f"[{name}] aligning on {len(split.summaries)} image-summary pairs, {stage.steps} steps, "
            f"lr {stage.init_lr:g} -> {stage.min_lr:g}")
        r = align_stage(model, AlignmentSet(feats, split.summaries), stage, checkpoint,
                        progress=progress, accelerator=accelerator, bf16=False)
        history[name] = r.history
        save_weights(done_path, dict(model.projection.state_dict()))
        stage_done(name, time.perf_counter() - t0, f" (loss {r.history[0]['loss']:.3f} -> {r.history[-1]['loss']:.3f})")
    save_weights(out / "projection.safetensors", dict(model.projection.state_dict()))
    atomic_write_text(out / "history.json", json.dumps(history))

    # 7. evaluation on the held-out seed -----------------------------------------------------------
    t0 = time.perf_counter()
    log(f"[eval] {len(ev.summaries)} held-out images (seed {seeds['eval']})")
    metrics = evaluate_model(model, ev.summaries, features=fe, ground_truth=ev.labels,
                             max_new_tokens=t["max_new_tokens"], log=lambda m: log(f"[eval] {m}"))
    metrics["diagnostics"] = diagnostics(model, out, fe, ev, seed, t["max_new_tokens"],
                                         spatial=bool(t.get("llm_spatial_slots")))
    timings["eval"] = round(time.perf_counter() - t0, 1)
    metrics["timings_s"] = timings
    metrics["eval_seed"] = seeds["eval"]
    atomic_write_text(out / COMPLETE_MARKER, json.dumps(metrics, indent=2))
    log(f"[eval] ROUGE-L {metrics['rougeL']:.3f}  CE macro-F1 {metrics['ce_f1_macro']:.3f}  "
        f"image-blind CE macro-F1 {metrics['baselines']['image_blind']['ce_f1_macro']:.3f}")
    if not keep_work:
        shutil.rmtree(work / "features", ignore_errors=True)
    return metrics


LABEL_HEAD_FILE = "label_head.safetensors"


def diagnostics(model: Any, out: Path, features: torch.Tensor, split: SplitData, seed: int,
                max_new_tokens: int, spatial: bool = False) -> dict[str, Any]:
    """Where the gap to the quality bar sits, on the held-out split (ground-truth labels):

    * ``encoder_label_head`` — CE of the encoder's own token label head (``train.label_supervision``)
      read straight off the frozen tokens: what the tokens carry, an upper bound for a linear map;
    * ``oracle_concepts`` — the LLM given the *true* concept tokens in its image slot
      (``train.grounding.oracle_prompts``; laid out like the training slots when ``spatial``): what
      a perfect encoder + projection would reach.
    """
    from ..data.findings import RENDERED_OBSERVATIONS
    from ..eval.metrics import clinical_efficacy
    from .evaluation import score_reports
    from .grounding import oracle_prompts
    from .label_supervision import TokenLabelHead

    result: dict[str, Any] = {}
    head_path = out / "encoder" / LABEL_HEAD_FILE
    columns = laterality_columns()
    if head_path.is_file():
        head = TokenLabelHead(features.shape[-1], len(columns))
        head.load_state_dict(load_weights(head_path)[0])
        with torch.no_grad():
            positive = (head(features.float()) > 0).tolist()  # [M, L]
        predicted = []
        for row in positive:
            labels = {o: 0 for o in RENDERED_OBSERVATIONS}
            for (observation, _), on in zip(columns, row):
                labels[observation] = max(labels[observation], int(on))
            labels["No Finding"] = int(not any(row))
            predicted.append(labels)
        ce = clinical_efficacy(predicted, split.labels, RENDERED_OBSERVATIONS)
        result["encoder_label_head"] = {"ce_f1_macro": ce["macro_f1"], "per_observation": ce["per_observation"]}
    layouts = split.token_labels.tolist() if spatial and split.token_labels is not None else None
    prompts = oracle_prompts(split.findings, model.num_image_tokens, seed, layouts=layouts)
    reports: list[str] = []
    for i in range(0, len(prompts), 50):
        reports += model.generate(prompts[i:i + 50], max_new_tokens=max_new_tokens)
    scored = score_reports(reports, split.summaries, split.labels, n_boot=0)
    result["oracle_concepts"] = {"rougeL": scored["rougeL"], "ce_f1_macro": scored["ce_f1_macro"],
                                 "vs_ground_truth": scored["vs_ground_truth"]["ce_f1_macro"]}
    return result


def _instructions() -> tuple[str, ...]:
    from ..data.instructions import ALIGNMENT_INSTRUCTIONS

    return ALIGNMENT_INSTRUCTIONS
