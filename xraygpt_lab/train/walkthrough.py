"""The whole XrayGPT recipe on the synthetic world, stage by stage, resumable.

    synthetic data → encoder pretraining (MedCLIP loss) → LLM domain fine-tuning (MedVicuna /
    RadVicuna step) → alignment stage 1 ("MIMIC-like") → stage 2 ("OpenI-like") → evaluation

The tiny profile's stand-ins, stated plainly: stage 1 trains on one synthetic set (seed ``S``,
playing MIMIC-CXR's many summaries), stage 2 on a smaller second synthetic set drawn with another
seed (``S + 1000``, playing OpenI; same report generator, other phantoms and phrasings), and the
evaluation uses a third seed (``S + 2000``) that no stage saw. The LLM's domain conversations are
the synthetic conversations of the stage-1 set (single turns, plus multi-turn chains in which
earlier answers must stay consistent with later ones).

Each stage is one function taking the :class:`~xraygpt_lab.recipe.Recipe` and the
:class:`RunFolder` (:func:`prepare_data`, :func:`train_encoder`, :func:`encode_features`,
:func:`train_llm`, :func:`align_stage1`, :func:`align_stage2`, :func:`evaluate_run`);
:func:`run_walkthrough` calls them in order. Resuming: every finished stage leaves its output in
the run folder and is skipped next time; a stage interrupted midway continues from its last
checkpoint in the run folder's ``work/``.
"""
from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import leftovers
from ..config import get_profile
from ..data.findings import RENDERED_OBSERVATIONS
from ..data.readers.images import preprocess
from ..data.synthetic.world import WORLD_VERSION, render_cases
from ..data.text.instructions import ALIGNMENT_INSTRUCTIONS
from ..device import describe_device, resolve_device
from ..errors import CorruptFileError, RecipeError, XrayGPTLabError, one_line
from ..eval.metrics import clinical_efficacy
from ..models.conversation import END_SYM, xraygpt_prompt, xraygpt_text_example
from ..models.encoder import VisionEncoder
from ..models.encoder import EncoderConfig
from ..models.llm import load_llm, save_llm, tiny_llm
from ..models.llm import train_tokenizer
from ..models.text_encoder import TextEncoder
from ..models.xraygpt import XrayGPT
from ..recipe import AlignStage, Recipe, recipe_of_run, run_config_entries
from ..run_folder import (COMPLETE_MARKER, WORK_FOLDER, load_state, load_weights, read_header, read_json,
                          save_weights, write_json)
from .align import AlignmentSet, align_stage, yes_no_turns
from .checkpoint import checkpoint_progress
from .concept_init import init_projection_from_concepts
from .contrastive import pretrain_encoder
from .evaluation import evaluate_model
from .evaluation import score_reports
from .feature_cache import FeatureCache
from .grounding import GRADED, concept_columns
from .grounding import grounded_conversations, grounded_examples, mix
from .grounding import concept_tokens
from .grounding import oracle_prompts
from .label_supervision import grade_targets, token_targets
from .label_supervision import finding_columns
from .label_supervision import TokenLabelHead
from .llm_finetune import domain_finetune
from .loop import make_accelerator
from .schedule import stage_config

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


def with_lung_lesion(split: SplitData) -> torch.Tensor:
    """``[N]`` bool: which cases of ``split`` show a lung lesion (drawn more often where a stage's
    ``lesion_repeats`` says so)."""
    return torch.tensor([any(f.observation == "Lung Lesion" for f in case) for case in split.findings])


def laterality_columns() -> list[tuple[str, str | None]]:
    """``(observation, side)`` of each column of :func:`laterality_labels` (side None: not split)."""

    return concept_columns()


def graded_labels(findings: list[list[Any]]) -> torch.Tensor:
    """Ordinal grades ``[M, L]`` over the columns of :func:`laterality_labels` (−1: no graded finding
    there; ``label_supervision.grade_targets``) for the encoder's grade head."""

    columns = laterality_columns()
    return torch.stack([grade_targets(case, columns, GRADED) for case in findings]) if findings \
        else torch.zeros(0, len(columns))


def laterality_labels(findings: list[list[Any]]) -> torch.Tensor:
    """Multi-hot ``[M, L]`` targets for the encoder's losses, with left/right split columns."""

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


#: Steps between the checkpoints of an interrupted stage (in the run folder's ``work/``).
SAVE_EVERY = 50
LABEL_HEAD_FILE = "label_head.safetensors"


@dataclass
class Splits:
    """The three synthetic sets of a run."""

    stage1: SplitData
    stage2: SplitData
    eval: SplitData


@dataclass
class RunFolder:
    """A run folder being trained: where stages write, how they report, where the models train."""

    out: Path
    seed: int
    log: Log
    progress: bool
    device: torch.device
    accelerator: Any
    save_every: int = SAVE_EVERY  # steps between the checkpoints of a stage
    on_step: Callable[[str, dict], None] | None = None  # called with (stage, history row) after each step
    timings: dict[str, float] = field(default_factory=dict)  # work/timings.json
    history: dict[str, Any] = field(default_factory=dict)  # work/history.json, then history.json
    repaired: list[str] = field(default_factory=list)  # unreadable files discarded in this call

    @property
    def work(self) -> Path:
        """The run folder's ``work/``: checkpoints and intermediate files of unfinished stages."""
        return self.out / WORK_FOLDER

    def stage_done(self, name: str, seconds: float, extra: str = "") -> None:
        """Log a finished stage and write the timings and loss curves so far. ``seconds`` counts
        every segment of a resumed stage (:meth:`resume_point` returns the earlier ones')."""
        self.timings[name] = round(seconds, 1)
        self.log(f"[{name}] done in {seconds:.1f} s{extra}")
        self.save_books()

    def save_books(self) -> None:
        """Write ``work/history.json`` and ``work/timings.json``."""
        write_json(self.work / "history.json", self.history, indent=None)
        write_json(self.work / "timings.json", self.timings, indent=None)

    def resume_point(self, stage: str, checkpoint: Path, steps: int) -> float:
        """Before ``stage`` trains from ``checkpoint``: log ``resuming <stage> from step N`` (and
        record N in the history's ``resumed``) and return the training seconds the checkpoint
        records; an unreadable checkpoint is discarded and the stage starts over (0 s)."""
        if not checkpoint.is_file():
            return 0.0
        try:
            step, seconds = checkpoint_progress(checkpoint)
        except CorruptFileError as exc:
            self.discard(stage, exc, f"discarded it, training {stage} from step 0")
            return 0.0
        self.log(f"resuming {stage} from step {step} of {steps}")
        self.history.setdefault("resumed", {}).setdefault(stage, []).append(step)
        self.save_books()
        return seconds

    def discard(self, stage: str, error: CorruptFileError, then: str, remove: bool = True) -> None:
        """Remove a file of this run that cannot be read (``error.path``; ``remove=False``: the
        caller has replaced it), say which and why, and what happens ``then``."""
        path = error.path
        if remove and path.is_dir():
            shutil.rmtree(path)
        elif remove:
            path.unlink(missing_ok=True)
        self.repaired.append(str(path))
        self.log(f"[{stage}] {error}; {then}")


def walkthrough_recipe(profile: str = "tiny", overrides: Mapping[str, Any] | None = None,
                       recipe: Recipe | None = None) -> Recipe:
    """``recipe`` (default: the profile's) with the flat-named ``overrides`` applied; refused unless
    it trains from scratch (data, encoder and LLM stages stated) at an image size the tiny encoder takes."""
    recipe = (recipe or get_profile(profile).recipe).override(overrides or {})
    if not recipe.trains_from_scratch:
        raise XrayGPTLabError(
            "the walkthrough trains from scratch and runs the tiny profile only; for the full profile "
            "load MedCLIP + Vicuna with models.encoder / models.llm.load_llm and call train.align.align_stage")
    _check_image_size(recipe)
    return recipe


def _check_image_size(recipe: Recipe) -> None:
    """Encode one image with the tiny encoder built on the meta device (no memory, no random draws),
    so that an image size the encoder cannot take is refused before anything is written."""

    size = recipe.image_size
    try:
        with torch.device("meta"), torch.no_grad():
            VisionEncoder(encoder_config(recipe)).encode_tokens(torch.zeros(1, 1, size, size))
    except (ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecipeError(f"image_size {size} does not fit the tiny encoder ({reason})") from None


def run_config(recipe: Recipe, profile: str, seed: int) -> dict[str, Any]:
    """The content of a run's ``config.json``."""
    return {"profile": profile, "seed": seed, "world": WORLD_VERSION, **run_config_entries(recipe),
            "seeds": split_seeds(seed),
            "template": xraygpt_prompt("{instruction}"), "end_sym": END_SYM,
            # the tiny LLM's conversations carry no system prompt, so its chat uses none
            "chat_system": "", "image_blind": "projection output replaced by zeros"}


def open_run(out: Path, recipe: Recipe, profile: str, seed: int, log: Log, progress: bool,
             device: str | torch.device | None, save_every: int = SAVE_EVERY,
             on_step: Callable[[str, dict], None] | None = None) -> RunFolder:
    """Resolve the device, then create ``out`` with its ``config.json``, or check that the run
    already there has the same profile, seed and recipe (an older config.json is migrated).
    Temp files of interrupted writes are removed; unreadable ``work/`` books (timings, history)
    are discarded with a message."""
    dev = resolve_device(device)
    accelerator = make_accelerator(device=dev)
    run = RunFolder(out, seed, log, progress, dev, accelerator, save_every=save_every, on_step=on_step)
    config_path = out / "config.json"
    if out.exists() and not out.is_dir():
        raise XrayGPTLabError(f"{out} is a file, not a run folder; choose another --out")
    if not config_path.is_file() and any(p.name != WORK_FOLDER for p in out.glob("*")):
        raise XrayGPTLabError(f"{out} holds other files and no run (no config.json); choose a new or empty --out")
    if config_path.is_file():
        try:
            old = read_json(config_path)
            same = (old.get("profile"), old.get("seed"), recipe_of_run(old)) == (profile, seed, recipe)
            if same and old.get("world", 1) != WORLD_VERSION:
                raise XrayGPTLabError(f"{out} holds a run trained on an older synthetic world "
                                      f"(version {old.get('world', 1)}, now {WORLD_VERSION}); choose another --out")
        except (CorruptFileError, RecipeError) as exc:
            raise XrayGPTLabError(f"{out} holds a run whose settings do not read as a recipe ({exc}); "
                                  "choose another --out") from None
        if not same:
            raise XrayGPTLabError(f"{out} holds a run with other settings (profile/seed/steps); choose another --out")
        for path in leftovers(out):  # temp files of this run's writes that a kill cut off
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    else:
        write_json(config_path, run_config(recipe, profile, seed))
    run.work.mkdir(parents=True, exist_ok=True)
    for name, book in (("timings.json", run.timings), ("history.json", run.history)):
        if (run.work / name).is_file():
            try:
                book.update(read_json(run.work / name))
            except CorruptFileError as exc:
                run.discard("resume", exc, "discarded it (the times or loss curves of stages finished before are lost)")
    return run


def encoder_config(recipe: Recipe) -> Any:
    """The tiny encoder's ``EncoderConfig`` at the recipe's image size."""

    return EncoderConfig.tiny(recipe.image_size)


def prepare_data(recipe: Recipe, run: RunFolder) -> Splits:
    """Stage 1, data: the three synthetic sets (rendered anew on every call; it takes seconds)."""
    t0 = time.perf_counter()
    seeds, sizes, size = split_seeds(run.seed), recipe.data, recipe.image_size
    run.log(f"[data] synthetic sets: stage 1 ({sizes.n_stage1}, seed {seeds['stage1']}), "
            f"stage 2 ({sizes.n_stage2}, seed {seeds['stage2']}), eval ({sizes.n_eval}, seed {seeds['eval']})")
    grid = encoder_config(recipe).grid  # token cells of the per-token targets
    splits = Splits(make_split(sizes.n_stage1, size, seeds["stage1"], grid=grid),
                    make_split(sizes.n_stage2, size, seeds["stage2"]),
                    make_split(sizes.n_eval, size, seeds["eval"], grid=grid if recipe.llm.spatial_slots else None))
    run.stage_done("data", time.perf_counter() - t0)
    return splits


def train_encoder(recipe: Recipe, run: RunFolder, split: SplitData) -> Any:
    """Stage 2, encoder: MedCLIP-style pretraining on ``split`` (skipped when the run folder has
    one); returns it frozen."""

    t0 = time.perf_counter()
    folder = run.out / "encoder"
    encoder = _reuse(run, "encoder", folder / "encoder.safetensors", lambda: _finished_encoder(folder, run.device))
    if encoder is not None:
        run.log("[encoder] found in run folder, skipped")
        return encoder.freeze()
    e = recipe.encoder
    run.log(f"[encoder] pretraining, {e.steps} steps (MedCLIP loss × {e.contrastive_weight}"
            f" + token label loss × {e.label_weight}, per-token × {e.dense_weight}"
            + (f"; films with a lung lesion × {1 + e.lesion_repeats}" if e.lesion_repeats else "")
            + (f"; sizes and severities × {e.grade_weight}" if e.grade_weight else "") + ")")
    torch.manual_seed(run.seed)
    encoder = VisionEncoder(encoder_config(recipe)).to(run.device)
    text_encoder = _text_encoder(run, split.summaries).to(run.device)
    checkpoint = run.work / "encoder.ckpt.safetensors"
    before = run.resume_point("encoder", checkpoint, e.steps)
    lesion = with_lung_lesion(split)  # [N]
    h = pretrain_encoder(encoder, text_encoder, split.pixels, split.summaries, laterality_labels(split.findings),
                         steps=e.steps, batch_size=e.batch, lr=e.lr, seed=run.seed, progress=run.progress,
                         contrastive_weight=e.contrastive_weight, label_weight=e.label_weight, shift=e.shift,
                         contrastive_every=e.contrastive_every, token_labels=split.token_labels,
                         dense_weight=e.dense_weight, bf16=e.bf16, checkpoint=checkpoint, save_every=run.save_every,
                         on_step=run.on_step, repeats=1 + e.lesion_repeats * lesion.long(),
                         grades=graded_labels(split.findings) if e.grade_weight else None, grade_weight=e.grade_weight)
    run.history["encoder"] = [{"step": s + 1, "loss": round(v, 5)} for s, v in zip(h["step"], h["loss"])]
    run.history["encoder_bf16"] = h["bf16"]  # what encoder_bf16 ("auto") resolved to on this machine
    for part in ("loss_contrastive", "loss_labels") + (("loss_grades",) if e.grade_weight else ()):
        for row, v in zip(run.history["encoder"], h[part]):
            row[part] = None if v is None else round(v, 5)
    text_encoder.save_pretrained(run.out / "text_encoder")
    if h.get("label_head") is not None:  # kept for diagnostics (what the tokens carry)
        save_weights(folder / LABEL_HEAD_FILE, dict(h["label_head"].state_dict()))
    encoder.save_pretrained(folder)  # last: its weights file (written after its config) marks the stage done
    run.stage_done("encoder", before + time.perf_counter() - t0, " (bf16 autocast)" if h["bf16"] else " (float32)")
    return encoder.freeze()


def _finished_encoder(folder: Path, device: torch.device) -> Any:
    """The encoder stage's output; its label head (kept for the diagnostics) is checked too."""

    if (folder / LABEL_HEAD_FILE).is_file():
        read_header(folder / LABEL_HEAD_FILE)
    return VisionEncoder.from_pretrained(folder, device=device)


def _text_encoder(run: RunFolder, summaries: list[str]) -> Any:
    """The MedCLIP text side; BPE training breaks ties in no fixed order, so a resume keeps the first."""

    text_init = run.work / "text_encoder_init"
    kept = _reuse(run, "encoder", text_init / "text_encoder.safetensors", lambda: TextEncoder.from_pretrained(text_init),
                  made_from_it=("encoder.ckpt.safetensors", *ALIGNMENT_FILES))
    if kept is not None:
        return kept
    text_encoder = TextEncoder.from_corpus(summaries)
    text_encoder.save_pretrained(text_init)
    return text_encoder


def encode_features(run: RunFolder, encoder: Any, splits: Splits) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 3, features: the frozen encoder's tokens of every image of the stage-1, stage-2 and
    evaluation sets, encoded once (the run folder's ``work/features``)."""

    t0 = time.perf_counter()
    cache = FeatureCache(run.work / "features", encoder)
    features = tuple(cache.features(s.pixels) for s in (splits.stage1, splits.stage2, splits.eval))
    for error in cache.unreadable:  # already replaced by the cache
        run.discard("features", error, "encoded that image again in its place", remove=False)
    run.stage_done("features", time.perf_counter() - t0, f" ({cache.misses} encoded, {cache.hits} from cache)")
    return features


def llm_training_examples(recipe: Recipe, split: SplitData, n_slots: int, seed: int) -> list[tuple[str, str]]:
    """The LLM's examples: conversations (RadVicuna-like) mixed with grounded examples that teach
    the image slot (``train.grounding``), from the first ``recipe.llm.cases`` cases of ``split``."""

    m, k = recipe.llm, recipe.llm.cases  # the LLM needs fewer cases than the encoder
    # spatial slots: slot k holds the concept whose region covers token cell k (grounding.slot_text)
    layouts = split.token_labels[:k].tolist() if m.spatial_slots else None
    grounded = grounded_examples(split.findings[:k], split.summaries[:k], n_slots, seed, layouts=layouts,
                                 graded=m.graded_concepts)
    if m.grounded_chats:  # follow-up questions answered from the slot too
        grounded += grounded_conversations(split.findings[:k], split.conversations[:k], n_slots, seed + 1,
                                           per_case=m.grounded_chats, max_turns=m.chat_turns,
                                           yes_weight=m.chat_yes_weight, layouts=layouts, graded=m.graded_concepts)
    return mix(llm_examples(split.conversations[:k], seed), grounded, m.grounded_share, seed)


def train_llm(recipe: Recipe, run: RunFolder, split: SplitData, n_slots: int) -> tuple[Any, Any]:
    """Stage 4, LLM: tokenizer + domain fine-tuning (skipped when the run folder has the LLM);
    returns ``(llm, tokenizer)``."""

    t0 = time.perf_counter()
    found = _reuse(run, "llm", run.out / "llm" / "model.safetensors", lambda: load_llm(run.out / "llm", device=run.device))
    if found is not None:
        run.log("[llm] found in run folder, skipped")
        return found
    examples = llm_training_examples(recipe, split, n_slots, run.seed)
    tokenizer = _tokenizer(recipe, run, examples)
    checkpoint = run.work / "llm.ckpt.safetensors"
    before = run.resume_point("llm", checkpoint, recipe.llm.steps)
    llm = tiny_llm(tokenizer, seed=run.seed, arch=recipe.llm_arch).to(run.device)
    run.log(f"[llm] domain fine-tuning on {len(examples)} examples (conversations + grounded slots), "
            f"{recipe.llm.steps} steps")
    # float32 on every device (bf16=False): the recipe's numbers are float32's, and at this size a
    # GPU step is bound by kernel launches, not by arithmetic
    r = domain_finetune(llm, tokenizer, examples, stage_config(recipe.llm, "llm", run.seed, run.save_every),
                        checkpoint, progress=run.progress, accelerator=run.accelerator, bf16=False,
                        on_step=run.on_step)
    run.history["llm"] = r.history
    save_llm(llm, tokenizer, run.out / "llm")
    run.stage_done("llm", before + time.perf_counter() - t0)
    return llm, tokenizer


def _tokenizer(recipe: Recipe, run: RunFolder, examples: list[tuple[str, str]]) -> Any:
    """The tiny BPE tokenizer (+ the concept tokens), trained once and kept in the run folder's ``work/``."""

    tok_dir = run.work / "tokenizer"
    kept = _reuse(run, "llm", tok_dir / "tokenizer.json", lambda: _kept_tokenizer(tok_dir),
                  made_from_it=("llm.ckpt.safetensors", *ALIGNMENT_FILES))
    if kept is not None:
        return kept
    corpus = list(dict.fromkeys(p + a for p, a in examples)) + [xraygpt_prompt(q) for q in _instructions()]
    tokenizer = train_tokenizer(corpus, vocab_size=recipe.llm_arch.vocab_size)
    tokenizer.add_tokens(list(concept_tokens(recipe.llm.graded_concepts)), special_tokens=True)
    tokenizer.save_pretrained(tok_dir)
    return tokenizer


def _kept_tokenizer(folder: Path) -> Any:
    """The tokenizer an earlier call trained and kept in ``folder``; ``CorruptFileError`` if unreadable."""
    from transformers import PreTrainedTokenizerFast

    read_json(folder / "tokenizer.json")
    try:
        return PreTrainedTokenizerFast.from_pretrained(folder)
    except Exception as exc:  # tokenizers raises assorted types for a malformed file
        raise CorruptFileError(folder / "tokenizer.json", f"cannot be read as a tokenizer ({one_line(exc)})") from None


#: Alignment files in the run folder's ``work/``: made from the encoder's features and the LLM, so discarded
#: with an input that has to be remade differently (a tokenizer, the text encoder's start).
ALIGNMENT_FILES: tuple[str, ...] = ("stage1.ckpt.safetensors", "projection_stage1.safetensors",
                                    "stage2.ckpt.safetensors", "projection_stage2.safetensors")


def _reuse(run: RunFolder, stage: str, marker: Path, load: Callable[[], Any],
           made_from_it: tuple[str, ...] = ()) -> Any:
    """What an earlier call left at ``marker`` (a finished stage's output, or an input kept for a
    resume), loaded; None when there is none. An unreadable one is discarded with a message naming
    the file, with ``marker`` and the run folder's ``work/`` files ``made_from_it``, and ``stage`` redoes them."""
    if not marker.is_file():
        return None
    try:
        return load()
    except CorruptFileError as exc:
        made = [run.work / name for name in made_from_it if (run.work / name).is_file()]
        also = f" with {', '.join(p.name for p in made)} (made from it)" if made else ""
        run.discard(stage, exc, f"discarded it{also}; redoing {stage}")
        for path in (marker, *made):
            path.unlink(missing_ok=True)
        return None


def align_stage1(recipe: Recipe, run: RunFolder, model: Any, features: torch.Tensor, split: SplitData) -> None:
    """Stage 5, alignment stage 1 ("MIMIC-like"): only the projection trains; it starts from
    ``recipe.stage1.init`` (the concept fit of ``train.concept_init``, or at random)."""

    def concept_start() -> None:
        r2 = init_projection_from_concepts(model.projection, model.llm.get_input_embeddings().weight,
                                           model.tokenizer, features, split.token_labels,
                                           graded_findings=split.findings if recipe.llm.graded_concepts else None)
        run.log(f"[stage1] start: least-squares fit of the image tokens to the concept tokens (R² {r2:.2f})")

    if not _skip_alignment(run, model, "stage1"):
        _align(recipe.stage1, "stage1", run, model, features, split,
               start=concept_start if recipe.stage1.init == "concepts" else None)


def align_stage2(recipe: Recipe, run: RunFolder, model: Any, features: torch.Tensor, split: SplitData) -> None:
    """Stage 6, alignment stage 2 ("OpenI-like"): continues from stage 1's projection."""
    if _skip_alignment(run, model, "stage2"):
        return
    load_state(model.projection, run.work / "projection_stage1.safetensors", against="the model's projection")
    _align(recipe.stage2, "stage2", run, model, features, split)


def _skip_alignment(run: RunFolder, model: Any, name: str) -> bool:
    """Load a finished alignment stage's projection; False when the stage has yet to run (or its
    output was unreadable and is discarded)."""
    done_path = run.work / f"projection_{name}.safetensors"
    if _reuse(run, name, done_path, lambda: load_state(model.projection, done_path, "the model's projection")) is None:
        return False
    run.log(f"[{name}] found, skipped")
    return True


def _align(stage: AlignStage, name: str, run: RunFolder, model: Any, features: torch.Tensor, split: SplitData,
           start: Callable[[], None] | None = None) -> None:
    """Train the projection for ``stage`` (resuming its checkpoint; else ``start()`` first sets
    where it begins) and keep the result in the run folder's ``work/``."""

    t0 = time.perf_counter()
    checkpoint = run.work / f"{name}.ckpt.safetensors"
    before = run.resume_point(name, checkpoint, stage.steps)
    if start is not None and not checkpoint.is_file():
        start()
    config = stage_config(stage, name, run.seed, run.save_every)
    asked = f", {stage.yes_no_share:.0%} of examples a yes/no question" if stage.yes_no_share else ""
    if stage.lesion_repeats:
        asked += f", images with a lung lesion drawn × {1 + stage.lesion_repeats}"
    draw_weights = (1.0 + stage.lesion_repeats * with_lung_lesion(split).float()).tolist() if stage.lesion_repeats else None
    run.log(f"[{name}] aligning on {len(split.summaries)} image-summary pairs{asked}, {config.steps} steps, "
            f"lr {config.init_lr:g} -> {config.min_lr:g}")
    data = AlignmentSet(features, split.summaries,
                        questions=yes_no_turns(split.conversations) if stage.yes_no_share else None)
    # float32 like the LLM stage (bf16=False)
    r = align_stage(model, data, config, checkpoint, yes_no_share=stage.yes_no_share, draw_weights=draw_weights,
                    progress=run.progress, accelerator=run.accelerator, bf16=False, on_step=run.on_step)
    run.history[name] = r.history
    save_weights(run.work / f"projection_{name}.safetensors", dict(model.projection.state_dict()))
    run.stage_done(name, before + time.perf_counter() - t0,
                   f" (loss {r.history[0]['loss']:.3f} -> {r.history[-1]['loss']:.3f})")


def evaluate_run(recipe: Recipe, run: RunFolder, model: Any, features: torch.Tensor,
                 split: SplitData) -> dict[str, Any]:
    """Stage 7, evaluation on the held-out seed; writes ``metrics.json`` (the run is complete)."""

    t0 = time.perf_counter()
    eval_seed = split_seeds(run.seed)["eval"]
    run.log(f"[eval] {len(split.summaries)} held-out images (seed {eval_seed})")
    metrics = evaluate_model(model, split.summaries, features=features, ground_truth=split.labels,
                             max_new_tokens=recipe.max_new_tokens, log=lambda m: run.log(f"[eval] {m}"))
    metrics["diagnostics"] = diagnostics(model, run.out, features, split, run.seed, recipe.max_new_tokens,
                                         spatial=recipe.llm.spatial_slots, graded=recipe.llm.graded_concepts)
    run.timings["eval"] = round(time.perf_counter() - t0, 1)
    metrics["timings_s"] = run.timings  # each stage's time, summed over its resumed segments
    metrics["resumed"] = run.history.get("resumed", {})  # stage -> the steps it resumed from
    metrics["repaired"] = run.repaired  # unreadable files this call discarded and remade
    metrics["eval_seed"] = eval_seed
    write_json(run.out / COMPLETE_MARKER, metrics)
    run.log(f"[eval] ROUGE-L {metrics['rougeL']:.3f}  CE macro-F1 {metrics['ce_f1_macro']:.3f}  "
            f"image-blind CE macro-F1 {metrics['baselines']['image_blind']['ce_f1_macro']:.3f}")
    return metrics


def run_walkthrough(out: str | Path, profile: str = "tiny", seed: int = 0, log: Log = print,
                    overrides: Mapping[str, Any] | None = None, progress: bool = True,
                    keep_work: bool = False, device: str | torch.device | None = None,
                    recipe: Recipe | None = None, save_every: int = SAVE_EVERY,
                    on_step: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a complete run into ``out`` and return its ``metrics.json`` content.

    ``recipe`` (default: ``profile``'s) with the flat-named ``overrides`` (``walkthrough --set``)
    applied; ``profile`` is also written to ``config.json``. ``device``: where the models train
    (``xraygpt_lab.device.resolve_device``: CUDA when present, else the CPU; ``$XRAYGPT_DEVICE``
    overrides). The run folder is the same either way. ``save_every``: steps between a stage's
    checkpoints (how much an interruption can lose; the weights do not depend on it).
    ``on_step(stage, history row)`` runs after every training step of every stage (a live loss
    plot in a notebook: ``widgets.live.LiveCurves``).

    A rerun resumes: finished stages are skipped, an interrupted one continues from its checkpoint
    (``resuming <stage> from step N``), and a file left unreadable (a checkpoint, a cached feature,
    a stage's output) is named, discarded and remade. Callers that may run concurrently on one
    folder hold ``run_folder.run_lock`` around this call (the command line and ``runs.ensure_tiny_run`` do).
    """

    recipe = walkthrough_recipe(profile, overrides, recipe)
    if save_every < 1:
        raise XrayGPTLabError(f"save_every takes an integer >= 1, got {save_every!r}")
    run = open_run(Path(out), recipe, profile, seed, log, progress, device, save_every, on_step)
    torch.manual_seed(seed)
    log(f"[device] {describe_device(run.device)}")
    splits = prepare_data(recipe, run)
    encoder = train_encoder(recipe, run, splits.stage1)
    f1, f2, fe = encode_features(run, encoder, splits)
    llm, tokenizer = train_llm(recipe, run, splits.stage1, encoder.num_tokens)
    torch.manual_seed(seed)
    model = XrayGPT(encoder, llm, tokenizer).to(run.device)
    align_stage1(recipe, run, model, f1, splits.stage1)
    align_stage2(recipe, run, model, f2, splits.stage2)
    save_weights(run.out / "projection.safetensors", dict(model.projection.state_dict()))
    write_json(run.out / "history.json", run.history, indent=None)
    metrics = evaluate_run(recipe, run, model, fe, splits.eval)
    if not keep_work:
        shutil.rmtree(run.work / "features", ignore_errors=True)
    return metrics




def diagnostics(model: Any, out: Path, features: torch.Tensor, split: SplitData, seed: int,
                max_new_tokens: int, spatial: bool = False, graded: bool = False) -> dict[str, Any]:
    """Where the gap to the quality bar sits, on the held-out split (ground-truth labels):

    * ``encoder_label_head`` — CE of the encoder's own token label head (``train.label_supervision``)
      read straight off the frozen tokens: what the tokens carry, an upper bound for a linear map;
    * ``oracle_concepts`` — the LLM given the *true* concept tokens in its image slot
      (``train.grounding.oracle_prompts``; laid out like the training slots when ``spatial``): what
      a perfect encoder + projection would reach, and whether the LLM alone repeats or contradicts
      itself (its repetition and contradiction rates); ``graded``: the concepts carry the grade, as
      in the LLM's training.
    """

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
    prompts = oracle_prompts(split.findings, model.num_image_tokens, seed, layouts=layouts, graded=graded)
    reports: list[str] = []
    for i in range(0, len(prompts), 50):
        reports += model.generate(prompts[i:i + 50], max_new_tokens=max_new_tokens)
    scored = score_reports(reports, split.summaries, split.labels, n_boot=0)
    result["oracle_concepts"] = {"rougeL": scored["rougeL"], "ce_f1_macro": scored["ce_f1_macro"],
                                 "vs_ground_truth": scored["vs_ground_truth"]["ce_f1_macro"],
                                 "repetition_rate": scored["repetition_rate"],
                                 "contradiction_rate": scored["contradiction_rate"],
                                 "side_agreement": scored.get("side_agreement"),
                                 "grade_agreement": scored.get("grade_agreement")}
    return result


def _instructions() -> tuple[str, ...]:

    return ALIGNMENT_INSTRUCTIONS
