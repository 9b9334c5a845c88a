"""The training recipe: every number of a run, typed, validated, stated once.

A :class:`Recipe` holds the synthetic data sizes (:class:`DataSizes`), the encoder pretraining
(:class:`EncoderStage`), the tiny LLM's architecture (:class:`TinyLLMArch`) and its domain
fine-tuning (:class:`LLMStage`), XrayGPT's two alignment stages (:class:`AlignStage1`,
:class:`AlignStage`) and the report length. The recipes themselves (``tiny``, ``--long``, ``full``)
are values in :mod:`xraygpt_lab.config`.

Every setting also has a flat name, its section's prefix and the field (``encoder_steps``,
``stage1_init``, ``llm_arch_hidden_size``; ``n_stage1``, ``image_size``): the keys of
``walkthrough --set`` (:func:`parse_setting`, :meth:`Recipe.override`) and of the ``"train"`` entry
that run folders wrote before the recipe had a version (:func:`recipe_of_run` reads both formats).
Bad values are refused with a one-line :class:`~xraygpt_lab.errors.RecipeError` naming the setting.
No torch here: the command line parses settings before anything heavy is imported.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from .errors import RecipeError

#: Where stage 1's projection starts: ``train.concept_init``'s fit, or XrayGPT's random start.
STAGE1_INITS: tuple[str, ...] = ("concepts", "random")
#: ``encoder_bf16``: always, never, or where the device computes bf16 natively and, on a CPU, a
#: timed step is faster with it (``train.precision``).
BF16_CHOICES: tuple[bool | str, ...] = (True, False, "auto")


@dataclass(frozen=True)
class _Spec:
    """What one setting accepts: ``kind`` is count (integer), number (finite float), flag or choice."""

    kind: str
    low: float = 0.0
    high: float = math.inf
    open_low: bool = False
    choices: tuple[Any, ...] = ()

    def check(self, key: str, value: Any) -> Any:
        """``value`` as the setting stores it (an int is a valid float); ``RecipeError`` naming ``key``."""
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "count":
            if not number or not isinstance(value, int) or value < self.low:
                raise RecipeError(f"{key} takes an integer >= {self.low:g}, got {value!r}")
            return value
        if self.kind == "number":
            if not number or not math.isfinite(value) or not self._in_range(value):
                raise RecipeError(f"{key} takes a finite number {self._range()}, got {value!r}")
            return float(value)
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise RecipeError(f"{key} takes true or false, got {value!r}")
            return value
        if not any(type(value) is type(c) and value == c for c in self.choices):  # 1 is not True
            raise RecipeError(f"{key} takes one of {', '.join(map(json.dumps, self.choices))}, got {value!r}")
        return value

    def _in_range(self, value: float) -> bool:
        return (value > self.low if self.open_low else value >= self.low) and value <= self.high

    def _range(self) -> str:
        if self.high < math.inf:
            return f"between {self.low:g} and {self.high:g}"
        return f"{'>' if self.open_low else '>='} {self.low:g}"


def _count(low: int = 1) -> Any:
    return field(metadata={"spec": _Spec("count", low=low)})


def _number(low: float = 0.0, high: float = math.inf, open_low: bool = False) -> Any:
    return field(metadata={"spec": _Spec("number", low=low, high=high, open_low=open_low)})


def _rate() -> Any:
    """A learning rate: finite and > 0."""
    return _number(open_low=True)


def _flag() -> Any:
    return field(metadata={"spec": _Spec("flag")})


def _choice(choices: tuple[Any, ...]) -> Any:
    return field(metadata={"spec": _Spec("choice", choices=choices)})


@dataclass(frozen=True)
class DataSizes:
    """Synthetic cases per split; each split has its own seed (``train.walkthrough.split_seeds``)."""

    n_stage1: int = _count()  # "MIMIC-like" set: encoder, LLM and alignment stage 1
    n_stage2: int = _count()  # "OpenI-like" set: alignment stage 2
    n_eval: int = _count()  # held-out set


@dataclass(frozen=True)
class EncoderStage:
    """MedCLIP-style encoder pretraining (``train.contrastive.pretrain_encoder``)."""

    steps: int = _count()
    batch: int = _count()
    lr: float = _rate()
    contrastive_weight: float = _number()  # MedCLIP loss
    contrastive_every: int = _count()  # the contrastive loss every k-th step
    label_weight: float = _number()  # pooled token label loss (train.label_supervision)
    dense_weight: float = _number()  # per-token targets from the finding masks
    shift: int = _count(0)  # random shifts of up to ± shift pixels
    bf16: bool | str = _choice(BF16_CHOICES)  # autocast: True, False or "auto" (where native and faster)
    lesion_repeats: int = _count(0)  # films with a lung lesion appear 1 + this many times an epoch
    grade_weight: float = _number()  # a second token head reads each finding's size or severity (0: none)


@dataclass(frozen=True)
class TinyLLMArch:
    """Sizes of the from-scratch LLaMA (``models.llm.tiny_llm``); ``vocab_size`` is the BPE's target."""

    vocab_size: int = _count(300)  # 256 bytes + the special tokens, at least
    hidden_size: int = _count()
    intermediate_size: int = _count()
    num_hidden_layers: int = _count()
    num_attention_heads: int = _count()
    max_position_embeddings: int = _count()


@dataclass(frozen=True)
class LLMStage:
    """LLM domain fine-tuning (MedVicuna / RadVicuna's step; ``train.llm_finetune``, ``train.grounding``)."""

    steps: int = _count()
    batch: int = _count()
    lr: float = _rate()
    min_lr: float = _number()
    warmup: int = _count(0)
    weight_decay: float = _number()
    grounded_share: float = _number(0.0, 1.0)  # share of grounded examples (concept tokens in the slot)
    cases: int = _count()  # stage-1 cases whose conversations the LLM learns from
    grounded_chats: int = _count(0)  # grounded chats per case (0: none)
    chat_turns: int = _count()  # turns of a grounded chat, at most
    chat_yes_weight: float = _number(open_low=True)  # "Yes" weight over a per-question yes/no balance
    spatial_slots: bool = _flag()  # slot k holds the concept covering token cell k
    graded_concepts: bool = _flag()  # concepts of graded findings carry the grade (<edema_severe>)

    @property
    def warmup_lr(self) -> float:
        """The rate the warm-up starts from: ``lr / 30``."""
        return self.lr / 30


@dataclass(frozen=True)
class AlignStage:
    """One alignment stage: only the projection trains, with MiniGPT-4's ``linear_warmup_cosine_lr``."""

    steps: int = _count()
    batch: int = _count()
    lr: float = _rate()
    min_lr: float = _number()
    warmup_lr: float = _number()
    warmup: int = _count(0)
    weight_decay: float = _number()
    # share of examples that ask one of the image's yes/no questions instead of its summary
    # (``train.align.alignment_batches``); XrayGPT's stages: 0
    yes_no_share: float = _number(0.0, 1.0)
    lesion_repeats: int = _count(0)  # images with a lung lesion drawn 1 + this many times as often


@dataclass(frozen=True)
class AlignStage1(AlignStage):
    """Alignment stage 1, which also chooses where the projection starts (:data:`STAGE1_INITS`)."""

    init: str = _choice(STAGE1_INITS)


def _section(prefix: str, cls: type, optional: bool = False) -> Any:
    return field(metadata={"section": (prefix, cls, optional)})


@dataclass(frozen=True)
class Recipe:
    """Everything a run is trained with. ``data``, ``encoder``, ``llm_arch`` and ``llm`` are None for
    a recipe that starts from pretrained models (``full``); the walkthrough needs all four."""

    version: ClassVar[int] = 1  # config.json's "recipe_version"

    image_size: int = _count()  # side of the square radiograph: encoder, preprocessing, synthetic data
    data: DataSizes | None = _section("", DataSizes, optional=True)
    encoder: EncoderStage | None = _section("encoder_", EncoderStage, optional=True)
    llm_arch: TinyLLMArch | None = _section("llm_arch_", TinyLLMArch, optional=True)
    llm: LLMStage | None = _section("llm_", LLMStage, optional=True)
    stage1: AlignStage1 = _section("stage1_", AlignStage1)
    stage2: AlignStage = _section("stage2_", AlignStage)
    max_new_tokens: int = _count()  # report length at evaluation

    def __post_init__(self) -> None:
        for f in fields(self):
            if "spec" in f.metadata:
                f.metadata["spec"].check(f.name, getattr(self, f.name))
                continue
            prefix, cls, optional = f.metadata["section"]
            section = getattr(self, f.name)
            if section is None and optional:
                continue
            if type(section) is not cls:
                raise RecipeError(f"recipe entry {f.name} must be of type {cls.__name__}, got {type(section).__name__}")
            for g in fields(section):
                g.metadata["spec"].check(prefix + g.name, getattr(section, g.name))
        for name in ("llm", "stage1", "stage2"):
            stage = getattr(self, name)
            if stage is not None and stage.min_lr > stage.lr:
                raise RecipeError(f"{name}_min_lr must be <= {name}_lr, got {stage.min_lr:g} > {stage.lr:g}")
        arch = self.llm_arch
        if arch is not None and arch.hidden_size % arch.num_attention_heads:
            raise RecipeError(f"llm_arch_hidden_size {arch.hidden_size} is not divisible by "
                              f"llm_arch_num_attention_heads {arch.num_attention_heads}")

    @property
    def trains_from_scratch(self) -> bool:
        """True when the recipe states the data, encoder and LLM stages (the walkthrough's)."""
        return None not in (self.data, self.encoder, self.llm_arch, self.llm)

    def flat(self) -> dict[str, Any]:
        """Every setting under its flat name (sections that are None left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if "spec" in f.metadata:
                out[f.name] = value
            elif value is not None:
                out.update({f.metadata["section"][0] + k: v for k, v in asdict(value).items()})
        return out

    def override(self, settings: Mapping[str, Any]) -> Recipe:
        """A copy with flat-named ``settings`` replaced, each checked (``RecipeError`` names the key)."""
        top: dict[str, Any] = {}
        changes: dict[str, dict[str, Any]] = {}
        for key, value in settings.items():
            section, name, spec = _setting(key)
            if section is None:
                top[name] = spec.check(key, value)
            elif getattr(self, section) is None:
                raise RecipeError(f"{key}: this recipe has no {section} section (it starts from pretrained models)")
            else:
                changes.setdefault(section, {})[name] = spec.check(key, value)
        top.update({section: replace(getattr(self, section), **c) for section, c in changes.items()})
        return replace(self, **top)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data for config.json (:meth:`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        """The recipe :meth:`to_dict` wrote; unknown or missing entries are refused."""
        _expect_keys("recipe", data, [f.name for f in fields(cls)])
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            value = data[f.name]
            if "spec" in f.metadata:
                kwargs[f.name] = f.metadata["spec"].check(f.name, value)
                continue
            prefix, section_cls, optional = f.metadata["section"]
            if value is None and optional:
                kwargs[f.name] = None
                continue
            names = [g.name for g in fields(section_cls)]
            if isinstance(value, Mapping):  # settings added after a run was written read as before
                value = {**{k: v for k, v in _ADDED_LATER.items() if k in names}, **value}
            _expect_keys(f"recipe entry {f.name}", value, names)
            kwargs[f.name] = section_cls(**{g.name: g.metadata["spec"].check(prefix + g.name, value[g.name])
                                            for g in fields(section_cls)})
        return cls(**kwargs)


#: Settings added to a section after ``recipe_version`` 1, with the value that a run written
#: before them was trained with.
_ADDED_LATER: dict[str, Any] = {"yes_no_share": 0.0, "lesion_repeats": 0, "graded_concepts": False, "grade_weight": 0.0}


def _expect_keys(where: str, data: Any, expected: list[str]) -> None:
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where} must be an object, got {data!r}")
    unknown = [k for k in data if k not in expected]
    missing = [k for k in expected if k not in data]
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(expected)}")
    if missing:
        raise RecipeError(f"{where}: missing key {missing[0]!r}")


def _settings_table() -> dict[str, tuple[str | None, str, _Spec]]:
    """Flat name -> (section or None for a top-level field, field name, spec)."""
    table: dict[str, tuple[str | None, str, _Spec]] = {}
    for f in fields(Recipe):
        if "spec" in f.metadata:
            entries = [(f.name, None, f.name, f.metadata["spec"])]
        else:
            prefix, cls, _ = f.metadata["section"]
            entries = [(prefix + g.name, f.name, g.name, g.metadata["spec"]) for g in fields(cls)]
        for key, section, name, spec in entries:
            if key in table:
                raise RuntimeError(f"two recipe fields share the flat name {key!r}")
            table[key] = (section, name, spec)
    return table


#: Every flat setting name, in recipe order (``walkthrough --set`` takes these).
SETTINGS: dict[str, tuple[str | None, str, _Spec]] = _settings_table()


def _setting(key: str) -> tuple[str | None, str, _Spec]:
    try:
        return SETTINGS[key]
    except KeyError:
        raise RecipeError(f"unknown training setting {key!r}; choose from {', '.join(SETTINGS)}") from None


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (a JSON value: numbers, true/false; else a bare string) -> ``(key, value)``,
    checked on its own (:meth:`Recipe.override` then checks it against the other settings)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, _setting(key)[2].check(key, value)


#: The weight decay the walkthrough used before the recipe stated it (a fixed 0.05 for every stage).
_LEGACY_WEIGHT_DECAY = 0.05


def _legacy_key(key: str) -> bool:
    """Whether an unversioned config.json's ``"train"`` held ``key`` (image and LLM sizes were
    entries of their own, the weight decay was fixed)."""
    return not (key == "image_size" or key.startswith("llm_arch_") or key.endswith("_weight_decay")
                or any(key.endswith(f"_{added}") for added in _ADDED_LATER))


def _from_legacy(config: Mapping[str, Any]) -> Recipe:
    """The recipe of a config.json written before ``recipe_version``: flat ``"train"``,
    ``"image_size"`` and ``"llm"`` (the tiny LLM's sizes)."""
    train, image_size, llm = config.get("train"), config.get("image_size"), config.get("llm")
    if not isinstance(train, Mapping) or image_size is None or not isinstance(llm, Mapping):
        raise RecipeError("config.json of an older format needs 'train', 'image_size' and 'llm' entries")
    expected = [k for k in SETTINGS if _legacy_key(k)]
    missing = [k for k in expected if k not in train]
    unknown = [k for k in train if k not in expected]
    if missing or unknown:
        raise RecipeError(f"config.json's older 'train' entry does not map onto a recipe "
                          f"(missing: {', '.join(missing) or '-'}; unknown: {', '.join(unknown) or '-'})")
    nested: dict[str, Any] = {"image_size": image_size, "llm_arch": dict(llm)}
    for key, value in train.items():
        section, name, _ = SETTINGS[key]
        if section is None:
            nested[name] = value
        else:
            nested.setdefault(section, {})[name] = value
    for section in ("llm", "stage1", "stage2"):
        nested[section]["weight_decay"] = _LEGACY_WEIGHT_DECAY
    return Recipe.from_dict(nested)


def recipe_of_run(config: Any) -> Recipe:
    """The recipe a run was trained with, from its config.json content (either format).

    ``RecipeError`` when it holds another recipe version or an older entry that does not map
    onto a recipe (a key missing, unknown or out of range).
    """
    if not isinstance(config, Mapping):
        raise RecipeError("config.json must hold an object")
    if "recipe_version" in config:
        if config["recipe_version"] != Recipe.version:
            raise RecipeError(f"config.json has recipe_version {config['recipe_version']!r}; "
                              f"this xraygpt_lab reads version {Recipe.version}")
        return Recipe.from_dict(config.get("recipe"))
    if "train" in config:
        return _from_legacy(config)
    raise RecipeError("config.json holds no recipe (no 'recipe_version' and no older 'train' entry)")


def run_config_entries(recipe: Recipe) -> dict[str, Any]:
    """The entries of config.json that store ``recipe``."""
    return {"recipe_version": Recipe.version, "recipe": recipe.to_dict()}


__all__ = ["AlignStage", "AlignStage1", "BF16_CHOICES", "DataSizes", "EncoderStage", "LLMStage",
           "Recipe", "RecipeError", "SETTINGS", "STAGE1_INITS", "TinyLLMArch", "parse_setting",
           "recipe_of_run", "run_config_entries"]
