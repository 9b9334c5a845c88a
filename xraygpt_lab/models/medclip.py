"""Load MedCLIP's released weights into our own modules, failing loudly on any mismatch.

MedCLIP (repository RyanWangZf/MedCLIP, ``MedCLIPModel``) releases one ``pytorch_model.bin``:

* ``vision_model.model.*``              — ``SwinModel`` (``microsoft/swin-tiny-patch4-window7-224``)
* ``vision_model.projection_head.weight`` — ``[512, 768]``, no bias
* ``text_model.model.*``                — ``BertModel`` (``emilyalsentzer/Bio_ClinicalBERT``)
* ``text_model.projection_head.weight``   — ``[512, 768]``, no bias
* ``logit_scale``                       — scalar

It was written with transformers 4.x, whose Swin names differ from 5.x (``attention.self.query``
→ ``attention.q_proj``, ``intermediate.dense`` → ``mlp.fc1`` …) and stored Swin's
``relative_position_index`` buffers; we rename the former and check the latter against the
index our window size implies. Newer BERTs no longer store
``text_model.model.embeddings.position_ids`` (reported to MedCLIP's tracker as #37): that one key is tolerated.
Anything else missing, unexpected or of the wrong shape raises ``MedCLIPLoadError`` listing the keys
(nanoGPT's ``from_pretrained`` habit: our module, real weights, loud failure).

The file is a pickle, so it is read with ``torch.load(weights_only=True)`` only.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import XrayGPTLabError
from .encoder import EncoderConfig, VisionEncoder
from .text_encoder import TextEncoder, TextEncoderConfig

#: CLIP/MedCLIP initial temperature: logit_scale = log(1 / 0.07).
LOGIT_SCALE_INIT: float = math.log(1 / 0.07)
#: MedCLIP clamps logit_scale to [0, 4.6052] (= ln 100), i.e. at most 100× the cosine.
LOGIT_SCALE_MAX: float = 4.6052


class LogitScale(nn.Module):
    """Learnable log-temperature; ``forward()`` returns ``exp(clamp(s, 0, 4.6052))``."""

    def __init__(self, init: float = LOGIT_SCALE_INIT) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(init)))

    def clamp_(self) -> None:
        """Clamp the stored value in place, as MedCLIP does at every forward."""
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, LOGIT_SCALE_MAX)

    def forward(self) -> torch.Tensor:
        return self.logit_scale.clamp(0.0, LOGIT_SCALE_MAX).exp()  # scalar


WEIGHTS_NAME = "pytorch_model.bin"
VISION_PREFIX = "vision_model.model."
VISION_PROJECTION = "vision_model.projection_head.weight"
TEXT_PREFIX = "text_model.model."
TEXT_PROJECTION = "text_model.projection_head.weight"
LOGIT_SCALE = "logit_scale"
#: The one stray key newer transformers leave over (reported to MedCLIP's tracker as #37).
TOLERATED_KEYS: frozenset[str] = frozenset({"text_model.model.embeddings.position_ids"})

#: transformers 4.x Swin names → 5.x names (order matters: ``attention.output.dense`` before ``output.dense``).
_SWIN_RENAMES: tuple[tuple[str, str], ...] = (
    (r"\.attention\.self\.query\.", ".attention.q_proj."),
    (r"\.attention\.self\.key\.", ".attention.k_proj."),
    (r"\.attention\.self\.value\.", ".attention.v_proj."),
    (r"\.attention\.self\.relative_position_bias_table$", ".attention.relative_position_bias.relative_position_bias_table"),
    (r"\.attention\.self\.relative_position_index$", ".attention.relative_position_bias.relative_position_index"),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
)


class MedCLIPLoadError(XrayGPTLabError, ValueError):
    """A MedCLIP checkpoint does not fit the model; the message lists the offending keys."""


class MedCLIPModel(nn.Module):
    """The pair of encoders plus the shared temperature: ``logits = exp(s) · img @ txtᵀ``."""

    def __init__(self, vision: VisionEncoder, text: TextEncoder, logit_scale: LogitScale | None = None) -> None:
        super().__init__()
        if vision.config.projection_dim != text.config.projection_dim:
            raise ValueError(
                f"vision projects to {vision.config.projection_dim} but text to {text.config.projection_dim}"
            )
        self.vision = vision
        self.text = text
        self.logit_scale = logit_scale or LogitScale()

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """``logits_per_image`` ``[B_img, B_txt]``."""
        image = self.vision(pixel_values).embedding  # [B_img, p]
        text = self.text(input_ids, attention_mask)  # [B_txt, p]
        return self.logit_scale() * image @ text.T


# --------------------------------------------------------------------------- key layouts


def legacy_swin_key(key: str) -> str:
    """Our (transformers 5.x) Swin key → the 4.x name MedCLIP's file uses (inverse of the renames)."""
    inverse = (
        (".attention.q_proj.", ".attention.self.query."),
        (".attention.k_proj.", ".attention.self.key."),
        (".attention.v_proj.", ".attention.self.value."),
        (".attention.relative_position_bias.relative_position_bias_table", ".attention.self.relative_position_bias_table"),
        (".attention.o_proj.", ".attention.output.dense."),
        (".mlp.fc1.", ".intermediate.dense."),
        (".mlp.fc2.", ".output.dense."),
    )
    for new, old in inverse:
        key = key.replace(new, old)
    return key


def modern_swin_key(key: str) -> str:
    """A 4.x Swin key → our 5.x key (identity for keys already in 5.x form)."""
    for pattern, replacement in _SWIN_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def medclip_state_dict(model: MedCLIPModel, legacy: bool = True) -> dict[str, torch.Tensor]:
    """Our model's weights under MedCLIP's key names (``legacy``: transformers 4.x Swin names plus
    the ``relative_position_index`` buffers, exactly as the released file stores them)."""
    state: dict[str, torch.Tensor] = {}
    for key, value in model.vision.backbone.state_dict().items():
        state[VISION_PREFIX + (legacy_swin_key(key) if legacy else key)] = value
    if legacy:
        for name, module in model.vision.backbone.named_modules():
            if hasattr(module, "relative_position_bias_table") and hasattr(module, "relative_position_index"):
                rows = module.window_area
                block = name.rsplit(".relative_position_bias", 1)[0]
                state[f"{VISION_PREFIX}{block}.self.relative_position_index"] = module.relative_position_index.view(
                    rows, rows
                )
    state[VISION_PROJECTION] = model.vision.projection.weight
    for key, value in model.text.bert.state_dict().items():
        state[TEXT_PREFIX + key] = value
    state[TEXT_PROJECTION] = model.text.projection.weight
    state[LOGIT_SCALE] = model.logit_scale.logit_scale.detach().clone()
    return {k: v.detach().clone() for k, v in state.items()}


def bert_config_from_state_dict(
    state: dict[str, torch.Tensor], projection_dim: int = 512, prefix: str = TEXT_PREFIX
) -> TextEncoderConfig:
    """Infer BERT sizes from the tensors (vocab, width, layers, MLP width, positions).

    The head count is not stored in any shape; BERT's convention of 64-wide heads is assumed
    (Bio_ClinicalBERT: 768 = 12 × 64). Pass ``text_config`` to ``load_medclip`` otherwise.
    """
    try:
        vocab, hidden = state[prefix + "embeddings.word_embeddings.weight"].shape
        positions = state[prefix + "embeddings.position_embeddings.weight"].shape[0]
        intermediate = state[prefix + "encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as err:
        raise MedCLIPLoadError(f"cannot infer the text model's size: key {err} is missing") from None
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layer\.(\d+)\.", k)))
    return TextEncoderConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=max(1, hidden // 64),
        intermediate_size=intermediate,
        max_position_embeddings=positions,
        projection_dim=projection_dim,
        masked_mean=False,
        lowercase=False,
    )


# --------------------------------------------------------------------------- loading


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MedCLIPLoadError(f"{path}: not found — point at MedCLIP's folder holding {WEIGHTS_NAME}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle refusing non-tensor objects, truncated files, …
        raise MedCLIPLoadError(f"{path}: cannot be read with torch.load(weights_only=True): {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MedCLIPLoadError(f"{path}: expected a flat state dict of tensors")
    return state


def _assign(
    module: nn.Module, wanted: dict[str, torch.Tensor], source: str, problems: list[str]
) -> dict[str, torch.Tensor]:
    """Match ``wanted`` against ``module.state_dict()``; record problems; return the good tensors."""
    own = module.state_dict()
    missing = sorted(set(own) - set(wanted))
    unexpected = sorted(set(wanted) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(wanted[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(wanted)
        if wanted[k].shape != own[k].shape
    )
    if missing:
        problems.append(f"missing {source} keys: {missing}")
    if unexpected:
        problems.append(f"unexpected {source} keys: {unexpected}")
    if shapes:
        problems.append(f"shape mismatches in {source}: {shapes}")
    return {k: v for k, v in wanted.items() if k in own and v.shape == own[k].shape}


def load_medclip(
    folder: str | os.PathLike,
    *,
    text_folder: str | os.PathLike | None = None,
    encoder_config: EncoderConfig | None = None,
    text_config: TextEncoderConfig | None = None,
    device: str | torch.device = "cpu",
) -> MedCLIPModel:
    """Build MedCLIP from ``folder/pytorch_model.bin`` (or a path to that file).

    ``encoder_config`` defaults to ``EncoderConfig.full()`` (swin-tiny, 224 px, 768 → 512).
    ``text_folder``: a Bio_ClinicalBERT folder supplying the tokenizer and BERT config; without it
    the BERT sizes come from ``text_config`` or are read off the tensors, and the text encoder has a
    tokenizer only if ``folder`` itself holds one (``vocab.txt`` / ``tokenizer.json``).
    Raises ``MedCLIPLoadError`` listing every missing, unexpected or mis-shaped key.
    """
    path = Path(folder)
    file = path if path.is_file() else path / WEIGHTS_NAME
    state = _load_file(file)
    encoder_config = encoder_config or EncoderConfig.full()
    if VISION_PROJECTION in state:
        encoder_config = EncoderConfig.from_dict({**encoder_config.to_dict(), "projection_dim": state[VISION_PROJECTION].shape[0]})

    vision = VisionEncoder(encoder_config)
    if text_folder is not None:
        text = TextEncoder.from_bert_folder(text_folder, projection_dim=encoder_config.projection_dim)
    else:
        text_config = text_config or bert_config_from_state_dict(state, encoder_config.projection_dim)
        tokenizer = None
        if (path / "vocab.txt").is_file() or (path / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        text = TextEncoder(text_config, tokenizer)
    model = MedCLIPModel(vision, text)

    problems: list[str] = []
    known = {k for k in state if k.startswith((VISION_PREFIX, TEXT_PREFIX))} | {
        VISION_PROJECTION,
        TEXT_PROJECTION,
        LOGIT_SCALE,
    }
    stray = sorted(set(state) - known)
    if stray:
        problems.append(f"unexpected top-level keys: {stray}")

    # Vision: rename 4.x keys, check and drop the relative_position_index buffers.
    vision_state: dict[str, torch.Tensor] = {}
    own_buffers = dict(vision.backbone.named_buffers())
    for key, value in state.items():
        if not key.startswith(VISION_PREFIX):
            continue
        name = modern_swin_key(key[len(VISION_PREFIX) :])
        if name.endswith("relative_position_index"):
            expected = own_buffers.get(name)
            if expected is None or value.numel() != expected.numel() or not torch.equal(value.reshape(-1), expected):
                problems.append(f"{key} does not match the window size {encoder_config.window_size} of the config")
            continue
        vision_state[name] = value
    good = _assign(vision.backbone, vision_state, "vision_model.model", problems)
    # Text: BERT names are the same in 4.x and 5.x.
    text_state = {
        k[len(TEXT_PREFIX) :]: v for k, v in state.items() if k.startswith(TEXT_PREFIX) and k not in TOLERATED_KEYS
    }
    good_text = _assign(text.bert, text_state, "text_model.model", problems)
    heads = {VISION_PROJECTION: vision.projection, TEXT_PROJECTION: text.projection}
    for key, layer in heads.items():
        if key not in state:
            problems.append(f"missing key {key}")
        elif state[key].shape != layer.weight.shape:
            problems.append(f"{key}: file {tuple(state[key].shape)} vs model {tuple(layer.weight.shape)}")
    if LOGIT_SCALE not in state:
        problems.append(f"missing key {LOGIT_SCALE}")
    if problems:
        raise MedCLIPLoadError(f"{file} does not fit MedCLIP's layout:\n  " + "\n  ".join(problems))

    vision.backbone.load_state_dict(good, strict=True)
    text.bert.load_state_dict(good_text, strict=True)
    with torch.no_grad():
        vision.projection.weight.copy_(state[VISION_PROJECTION])
        text.projection.weight.copy_(state[TEXT_PROJECTION])
        model.logit_scale.logit_scale.copy_(state[LOGIT_SCALE].reshape(()))
    return model.to(device).eval()


def load_medclip_vision(folder: str | os.PathLike, **kwargs) -> VisionEncoder:
    """Just the (frozen) vision encoder from a MedCLIP checkpoint — what XrayGPT uses."""
    return load_medclip(folder, **kwargs).vision.freeze()


__all__ = [
    "MedCLIPLoadError",
    "MedCLIPModel",
    "bert_config_from_state_dict",
    "legacy_swin_key",
    "load_medclip",
    "load_medclip_vision",
    "medclip_state_dict",
    "modern_swin_key",
]
