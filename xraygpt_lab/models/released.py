"""Open the released XrayGPT: MiniGPT-4's vision path + llama_proj + the radiology Vicuna.

The XrayGPT people download (arXiv 2306.07971, code built on MiniGPT-4, Zhu et al. 2023) is

    EVA ViT-g (Fang et al. 2023; 1408-d, patch 14, 224 px, 39 blocks)  [B, 257, 1408]
    → ln_vision (LayerNorm, eps 1e-5)                                   [B, 257, 1408]
    → BLIP-2 Q-Former (Li et al. 2023; 32 queries, cross-attention in every 2nd layer) [B, 32, 768]
    → llama_proj = Linear(768, 4096)                                    [B, 32, 4096]
    → Vicuna-7B (a Hugging Face LLaMA folder), prompt ``###Patient: <Img><ImageHere></Img> … ###Doctor: ``

and ships as four things: ``eva_vit_g.pth`` (EVA's own names, ``blocks.N.*``; the LAVIS
``visual_encoder.`` prefix is accepted too), ``blip2_pretrained_flant5xxl.pth``
(``{"model": …}`` with ``Qformer.*``, ``query_tokens``, ``ln_vision.*`` and BLIP-2's own heads),
the XrayGPT / MiniGPT-4 checkpoint (``{"model": {"llama_proj.*"}}``) and the Vicuna folder.

We rebuild it from kept modules: transformers' ``Blip2VisionModel`` (its ``post_layernorm``
plays ``ln_vision``), ``Blip2QFormerModel``, ``nn.Linear`` and ``LlamaForCausalLM``
(``models.llm.load_llm``), wrapped so that the toolkit's :class:`~.xraygpt.XrayGPT` runs them
unchanged. The LAVIS → transformers key mapping (learnt from transformers'
``convert_blip_2_original_to_pytorch.py``):

================================================  ==================================================
LAVIS / EVA key                                   ours
================================================  ==================================================
``cls_token``, ``pos_embed``                      ``vision.embeddings.class_embedding``, ``…position_embedding``
``patch_embed.proj.*``                            ``vision.embeddings.patch_embedding.*``
``blocks.i.norm1/norm2.*``                        ``vision.encoder.layers.i.layer_norm1/layer_norm2.*``
``blocks.i.attn.qkv.weight``                      ``vision.encoder.layers.i.self_attn.qkv.weight``
``blocks.i.attn.q_bias`` + ``v_bias``             ``…self_attn.qkv.bias`` = ``[q_bias, 0, v_bias]`` (no key bias)
``blocks.i.attn.proj.*``, ``blocks.i.mlp.fc1/fc2.*``  ``…self_attn.projection.*``, ``…mlp.fc1/fc2.*``
``ln_vision.*``                                   ``vision.post_layernorm.*`` (eps set to LAVIS's 1e-5)
``Qformer.bert.embeddings.LayerNorm.*``           ``qformer.layernorm.*``
``Qformer.bert.encoder.layer.i.attention.self.*``  ``qformer.encoder.layer.i.attention.attention.*``
``….crossattention.self.*``                       ``….crossattention.attention.*``
``….(cross)attention.output.*``, ``intermediate_query.*``, ``output_query.*``  same names
``query_tokens``                                  ``encoder.query_tokens`` ``[1, 32, 768]``
``llama_proj.*``                                  ``XrayGPT.projection.*``
================================================  ==================================================

Everything else is *reported*, never silently dropped (:class:`UnusedGroup`): the last EVA
block (BLIP-2 reads the second-last layer, so the original builds 39 of the file's 40 blocks
and ``strict=False`` drops the 40th; a dump of a built model, holding ``ln_vision`` beside
``visual_encoder.*``, is already cut and all its blocks are used), the Q-Former's text
embeddings, text feed-forward and text head (MiniGPT-4 sets them to ``None``), BLIP-2's own
projection heads, and any key a later file supersedes (MiniGPT-4 loads the files in this order
with ``strict=False``, so the last wins).

Sizes (depth, width, heads, MLP size, query count, cross-attention frequency, patch and image
size) are read off the tensors, so reduced checkpoints in the same layout load too. Head counts
are not in any shape: EVA-g's 88-wide heads (1408 = 16 × 88) and BERT's 64-wide heads
(768 = 12 × 64) are assumed unless ``vision_heads`` / ``qformer_heads`` are given.
Files are read with ``torch.load(weights_only=True)`` only (or as safetensors, for a converted
copy); any problem is one
:class:`ReleasedLoadError` line naming the file and the key or shape.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..data.readers.images import PixelSpace
from ..data.readers.images import load_image
from ..device import resolve_device
from ..errors import XrayGPTLabError
from ..errors import ImageLoadError
from .conversation import XRAYGPT_SYSTEM
from .llm import load_llm
from .xraygpt import XrayGPT

#: The manifest ``xraygpt-lab release init`` writes into a run folder.
MANIFEST = "release.json"
MANIFEST_FORMAT = "xraygpt-lab release"
#: BLIP-2's eval image processor (LAVIS ``blip2_image_eval``): CLIP's mean / std, RGB.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
EVA_HEAD_DIM = 88  # EVA ViT-g: 1408 = 16 heads × 88
BERT_HEAD_DIM = 64  # BERT-base Q-Former: 768 = 12 heads × 64
EVA_LAYER_NORM_EPS = 1e-6  # EVA's blocks (partial(nn.LayerNorm, eps=1e-6))
LN_VISION_EPS = 1e-5  # ln_vision: LAVIS's LayerNorm at torch's default eps
QFORMER_LAYER_NORM_EPS = 1e-12  # BERT
#: An LLM above this many parameters is not loaded on a CPU (Vicuna-7B has 6.7e9).
CPU_PARAMETER_LIMIT = 3e9

ROLES: dict[str, str] = {
    "vit": "EVA ViT-g weights (eva_vit_g.pth)",
    "qformer": "BLIP-2 Q-Former weights (blip2_pretrained_flant5xxl.pth)",
    "checkpoint": "XrayGPT / MiniGPT-4 checkpoint (llama_proj)",
}


class ReleasedLoadError(XrayGPTLabError, ValueError):
    """A released file is missing, unreadable or does not fit the layout; one line names file and key."""


# --------------------------------------------------------------------------- sizes and reports


@dataclass(frozen=True)
class ReleasedSizes:
    """Sizes read off the tensors (the released model's values in the comments)."""

    image_size: int  # 224
    patch_size: int  # 14
    vision_width: int  # 1408
    vision_depth: int  # 39 blocks used
    vision_blocks_in_file: int  # 40 blocks stored
    vision_heads: int  # 16
    vision_mlp: int  # 6144
    qformer_width: int  # 768
    qformer_layers: int  # 12
    qformer_heads: int  # 12
    qformer_mlp: int  # 3072
    cross_attention_frequency: int  # 2
    num_query_tokens: int  # 32
    llm_width: int  # 4096 (llama_proj's output)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReleasedSizes":
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class UnusedGroup:
    """Keys of one file that the model does not use, grouped under one pattern, and why."""

    file: str
    pattern: str
    count: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: '{self.pattern}' ({self.count} key{'s' * (self.count != 1)}) unused: {self.reason}"


@dataclass
class ReleaseReport:
    """What :func:`inspect_release` found: the sizes, the converted weights and the unused keys."""

    sizes: ReleasedSizes
    unused: list[UnusedGroup]
    files: dict[str, Path]
    #: converted tensors per target: "vision", "qformer", "query_tokens", "projection"
    weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- reading files


def _one_line(err: BaseException) -> str:
    text = str(err)
    for pattern in (r"unsupported GLOBAL [^\n]*", r"Unsupported (?:global|operand)[^\n]*"):
        found = re.search(pattern, text, flags=re.IGNORECASE)
        if found:
            return found.group(0).strip().rstrip(".")
    line = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return line[:200]


def read_checkpoint(path: str | os.PathLike, role: str) -> tuple[dict[str, torch.Tensor], list[UnusedGroup]]:
    """A flat ``{key: tensor}`` from ``path`` (unwrapping LAVIS's ``{"model": …}``) and the
    top-level entries that are not weights. ``role``: one of :data:`ROLES`."""
    path = Path(path)
    if path.is_dir():
        raise ReleasedLoadError(f"{path}: is a folder, not a file (the {ROLES[role]})")
    if not path.is_file():
        raise ReleasedLoadError(f"{path}: not found (the {ROLES[role]})")
    if _is_safetensors(path):  # a converted copy: no pickle at all
        from ..errors import CorruptFileError
        from ..run_folder import load_weights

        try:
            return _tensor_dict(path, load_weights(path)[0]), []
        except CorruptFileError as err:
            raise ReleasedLoadError(str(err)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notices
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line
        if isinstance(err, pickle.UnpicklingError) and "Weights only" in str(err):
            raise ReleasedLoadError(f"{path}: refused by torch.load(weights_only=True), the pickle carries "
                                    f"code or objects other than tensors ({_one_line(err)})") from None
        raise ReleasedLoadError(f"{path}: cannot be read as a PyTorch checkpoint (truncated or not a "
                                f"checkpoint): {_one_line(err)}") from None
    unused: list[UnusedGroup] = []
    if isinstance(obj, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), dict):
                unused = [UnusedGroup(path.name, str(k), 1, f"top-level entry, not weights (only '{wrapper}' is read)")
                          for k in obj if k != wrapper]
                obj = obj[wrapper]
                break
    return _tensor_dict(path, obj), unused


def _tensor_dict(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    """``obj`` as ``{key: tensor}``; one line naming ``path`` when it is anything else."""
    if not isinstance(obj, dict) or not obj:
        raise ReleasedLoadError(f"{path}: expected a dict of tensors (or {{'model': …}}), got {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ReleasedLoadError(f"{path}: key '{key}' holds a {type(value).__name__}, not a tensor")
    return dict(obj)


def _is_safetensors(path: Path) -> bool:
    """True when ``path`` starts like a safetensors file: an 8-byte little-endian header length, then ``{``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as err:
        raise ReleasedLoadError(f"{path}: cannot be read ({err.strerror or err})") from None
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


# --------------------------------------------------------------------------- key conversion

_VIT_TOP = {
    "cls_token": "embeddings.class_embedding",
    "pos_embed": "embeddings.position_embedding",
    "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
    "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
}
_VIT_BLOCK = {
    "norm1.weight": "layer_norm1.weight",
    "norm1.bias": "layer_norm1.bias",
    "attn.qkv.weight": "self_attn.qkv.weight",
    "attn.q_bias": "self_attn.qkv.bias",  # joined with v_bias, zeros for k
    "attn.v_bias": "self_attn.qkv.bias",
    "attn.proj.weight": "self_attn.projection.weight",
    "attn.proj.bias": "self_attn.projection.bias",
    "norm2.weight": "layer_norm2.weight",
    "norm2.bias": "layer_norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_BERT_ATTENTION = ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm")
_QF_FFN = ("intermediate_query.dense", "output_query.dense", "output_query.LayerNorm")

#: Keys the original model does not use, by pattern: (regex, group label, reason).
_DROPPED: tuple[tuple[str, str, str], ...] = (
    (r"^Qformer\.cls\.", "Qformer.cls.*", "the Q-Former's text head, which MiniGPT-4 drops"),
    (r"^Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings|position_ids)",
     "Qformer.bert.embeddings.{}*", "the Q-Former's text embeddings, which MiniGPT-4 drops (it feeds queries only)"),
    (r"^Qformer\.bert\.encoder\.layer\.\d+\.(intermediate|output)\.",
     "Qformer.bert.encoder.layer.*.{}.*", "the Q-Former's text feed-forward, which MiniGPT-4 drops"),
    (r"^visual_encoder\.(norm|fc_norm|head)\.", "visual_encoder.{}.*",
     "EVA's final norm / classifier head, which BLIP-2's feature extractor does not use"),
    (r"^(t5_proj|t5_model|opt_proj|opt_model|vision_proj|text_proj|itm_head)\.", "{}.*",
     "BLIP-2's own heads (its LLM projection, contrastive and matching heads), not part of MiniGPT-4"),
    (r"^(temp)$", "{}", "BLIP-2's contrastive temperature, not part of MiniGPT-4"),
)


def _vit_expected_name(canonical: str, prefixed: bool) -> str:
    """The name a ``visual_encoder.*`` key has in the EVA file (with or without the LAVIS prefix)."""
    return canonical if prefixed else canonical[len("visual_encoder."):]


def _vit_block_count(keys: Iterable[str]) -> int | None:
    """``1 +`` the highest ViT block index among ``visual_encoder.blocks.N.*`` keys that name one of
    the layout's own tensors (a stray key adds no block; None: no blocks)."""
    block_keys = "|".join(re.escape(k) for k in _VIT_BLOCK)
    found = [int(m.group(1)) for k in keys
             if (m := re.fullmatch(rf"visual_encoder\.blocks\.(\d+)\.(?:{block_keys})", k))]
    return max(found) + 1 if found else None


def _infer_sizes(merged: dict[str, tuple[str, str, torch.Tensor]], names: dict[str, str], vit_prefixed: bool,
                 vision_heads: int | None, qformer_heads: int | None, vision_depth: int | None) -> ReleasedSizes:
    """Read every size off the tensors; a missing key names its file."""

    def need(key: str, role: str) -> torch.Tensor:
        if key not in merged:
            shown = _vit_expected_name(key, vit_prefixed) if key.startswith("visual_encoder.") else key
            raise ReleasedLoadError(f"{names[role]}: missing key '{shown}' (needed to read the model's sizes)")
        return merged[key][2]

    patch = need("visual_encoder.patch_embed.proj.weight", "vit")  # [D, 3, P, P]
    pos = need("visual_encoder.pos_embed", "vit")  # [1, 1 + grid², D]
    if patch.dim() != 4 or patch.shape[1] != 3 or patch.shape[2] != patch.shape[3]:
        raise ReleasedLoadError(f"{names['vit']}: 'patch_embed.proj.weight' has shape {tuple(patch.shape)}, "
                                "expected (width, 3, patch, patch)")
    width, patch_size = int(patch.shape[0]), int(patch.shape[2])
    grid = int(round((pos.shape[1] - 1) ** 0.5)) if pos.dim() == 3 else 0
    if pos.dim() != 3 or grid * grid != pos.shape[1] - 1:
        raise ReleasedLoadError(f"{names['vit']}: 'pos_embed' has shape {tuple(pos.shape)}, expected "
                                "(1, 1 + grid * grid, width)")
    # a block or layer counts when it holds one of the layout's own keys: a stray key cannot add one
    in_file = _vit_block_count(merged)
    if in_file is None:
        raise ReleasedLoadError(f"{names['vit']}: no 'blocks.N.*' keys: not EVA ViT weights")
    # BLIP-2 (Sec. 3.3) feeds the Q-Former the second-last layer: the original builds depth 39 of 40.
    depth = in_file - 1 if vision_depth is None else vision_depth
    if not 1 <= depth <= in_file:
        raise ReleasedLoadError(f"{names['vit']}: holds {in_file} blocks; cannot use {depth}")
    mlp = int(need("visual_encoder.blocks.0.mlp.fc1.weight", "vit").shape[0])  # [M, D]
    heads = vision_heads or (width // EVA_HEAD_DIM if width % EVA_HEAD_DIM == 0 else 0)
    if not heads or width % heads:
        given = f" nor of {vision_heads} heads" if vision_heads else ""
        raise ReleasedLoadError(f"{names['vit']}: width {width} is not a multiple of EVA-g's {EVA_HEAD_DIM}-wide "
                                f"heads{given}: give the head count (vision_heads, --vision-heads)")

    queries = need("query_tokens", "qformer")  # [1, Q, H]
    if queries.dim() != 3 or queries.shape[0] != 1:
        raise ReleasedLoadError(f"{names['qformer']}: 'query_tokens' has shape {tuple(queries.shape)}, "
                                "expected (1, queries, width)")
    hidden = int(queries.shape[2])
    layer_keys = "|".join(re.escape(f"{kind}.{part}.") for kind in ("attention", "crossattention")
                          for part in _BERT_ATTENTION) + "|" + "|".join(re.escape(f"{part}.") for part in _QF_FFN)
    layers = sorted({int(m.group(1)) for k in merged
                     if (m := re.match(rf"Qformer\.bert\.encoder\.layer\.(\d+)\.(?:{layer_keys})", k))})
    if not layers:
        raise ReleasedLoadError(f"{names['qformer']}: no 'Qformer.bert.encoder.layer.N.*' keys: not BLIP-2 weights")
    n_layers = layers[-1] + 1
    qf_mlp = int(need("Qformer.bert.encoder.layer.0.intermediate_query.dense.weight", "qformer").shape[0])
    cross_keys = "|".join(re.escape(f"{part}.") for part in _BERT_ATTENTION)
    cross = sorted({int(m.group(1)) for k in merged
                    if (m := re.match(rf"Qformer\.bert\.encoder\.layer\.(\d+)\.crossattention\.(?:{cross_keys})", k))})
    frequency = (cross[1] - cross[0]) if len(cross) > 1 else n_layers
    if not cross or cross != [i for i in range(n_layers) if i % frequency == 0]:
        raise ReleasedLoadError(f"{names['qformer']}: cross-attention in Q-Former layers {cross} of {n_layers}: "
                                "expected layers 0, f, 2f, … (every f-th layer)")
    q_heads = qformer_heads or (hidden // BERT_HEAD_DIM if hidden % BERT_HEAD_DIM == 0 else 0)
    if not q_heads or hidden % q_heads:
        given = f" nor of {qformer_heads} heads" if qformer_heads else ""
        raise ReleasedLoadError(f"{names['qformer']}: width {hidden} is not a multiple of BERT's {BERT_HEAD_DIM}-wide "
                                f"heads{given}: give the head count (qformer_heads, --qformer-heads)")
    proj = need("llama_proj.weight", "checkpoint")  # [d_llm, H]
    if proj.dim() != 2:
        raise ReleasedLoadError(f"{names['checkpoint']}: 'llama_proj.weight' has shape {tuple(proj.shape)}, "
                                "expected (llm width, Q-Former width)")
    return ReleasedSizes(image_size=grid * patch_size, patch_size=patch_size, vision_width=width, vision_depth=depth,
                         vision_blocks_in_file=in_file, vision_heads=heads, vision_mlp=mlp, qformer_width=hidden,
                         qformer_layers=n_layers, qformer_heads=q_heads, qformer_mlp=qf_mlp,
                         cross_attention_frequency=frequency, num_query_tokens=int(queries.shape[1]),
                         llm_width=int(proj.shape[0]))


def _required_keys(sizes: ReleasedSizes) -> dict[str, tuple[str, str]]:
    """Every LAVIS key the model needs → ``(target, our key)``."""
    required: dict[str, tuple[str, str]] = {f"visual_encoder.{k}": ("vision", v) for k, v in _VIT_TOP.items()}
    for i in range(sizes.vision_depth):
        for k, v in _VIT_BLOCK.items():
            required[f"visual_encoder.blocks.{i}.{k}"] = ("vision", f"encoder.layers.{i}.{v}")
    required["ln_vision.weight"] = ("vision", "post_layernorm.weight")
    required["ln_vision.bias"] = ("vision", "post_layernorm.bias")
    required["Qformer.bert.embeddings.LayerNorm.weight"] = ("qformer", "layernorm.weight")
    required["Qformer.bert.embeddings.LayerNorm.bias"] = ("qformer", "layernorm.bias")
    for i in range(sizes.qformer_layers):
        kinds = ["attention"] + (["crossattention"] if i % sizes.cross_attention_frequency == 0 else [])
        for kind in kinds:
            for part in _BERT_ATTENTION:
                ours = part.replace("self.", "attention.")
                for p in ("weight", "bias"):
                    required[f"Qformer.bert.encoder.layer.{i}.{kind}.{part}.{p}"] = (
                        "qformer", f"encoder.layer.{i}.{kind}.{ours}.{p}")
        for part in _QF_FFN:
            for p in ("weight", "bias"):
                required[f"Qformer.bert.encoder.layer.{i}.{part}.{p}"] = ("qformer", f"encoder.layer.{i}.{part}.{p}")
    required["query_tokens"] = ("query_tokens", "query_tokens")
    required["llama_proj.weight"] = ("projection", "weight")
    required["llama_proj.bias"] = ("projection", "bias")
    return required


def _unused_reason(canonical: str, sizes: ReleasedSizes) -> tuple[str, str] | None:
    """``(label template, reason)`` for a key the model does not need; ``None`` for an unknown key."""
    block = re.match(r"visual_encoder\.blocks\.(\d+)\.", canonical)
    if block and sizes.vision_depth <= int(block.group(1)) < sizes.vision_blocks_in_file:
        return ("visual_encoder.blocks.{}.*".format(block.group(1)),
                f"BLIP-2 reads the second-last layer: the original uses {sizes.vision_depth} of "
                f"{sizes.vision_blocks_in_file} blocks")
    for pattern, label, reason in _DROPPED:
        found = re.match(pattern, canonical)
        if found:
            return label.format(found.group(1)) if "{}" in label else label, reason
    return None


def _vision_config(sizes: ReleasedSizes):
    from transformers import Blip2VisionConfig

    return Blip2VisionConfig(hidden_size=sizes.vision_width, intermediate_size=sizes.vision_mlp,
                             num_hidden_layers=sizes.vision_depth, num_attention_heads=sizes.vision_heads,
                             image_size=sizes.image_size, patch_size=sizes.patch_size, hidden_act="gelu",
                             layer_norm_eps=EVA_LAYER_NORM_EPS, attention_dropout=0.0, qkv_bias=True)


def _qformer_config(sizes: ReleasedSizes):
    from transformers import Blip2QFormerConfig

    return Blip2QFormerConfig(hidden_size=sizes.qformer_width, num_hidden_layers=sizes.qformer_layers,
                              num_attention_heads=sizes.qformer_heads, intermediate_size=sizes.qformer_mlp,
                              hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                              layer_norm_eps=QFORMER_LAYER_NORM_EPS,
                              cross_attention_frequency=sizes.cross_attention_frequency,
                              encoder_hidden_size=sizes.vision_width, use_qformer_text_input=False)


def _build_modules(sizes: ReleasedSizes, meta: bool) -> tuple[nn.Module, nn.Module]:
    from transformers import Blip2QFormerModel, Blip2VisionModel

    with torch.device("meta") if meta else torch.device("cpu"):
        vision = Blip2VisionModel(_vision_config(sizes))
        qformer = Blip2QFormerModel(_qformer_config(sizes))
    vision.post_layernorm.eps = LN_VISION_EPS  # ln_vision, not EVA's 1e-6
    return vision, qformer


def _identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of an existing file (the same file under two names has one), else None."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino) if stat.st_ino else None  # 0: the file system gives no inode


def _shown_names(files: dict[str, Path]) -> dict[str, str]:
    """How each role's file is named in reports: its file name, or its whole path where two
    different files share a name."""
    names = [path.name for path in files.values()]
    return {role: path.name if names.count(path.name) == 1 or len({_identity(p) for p in files.values()
                                                                    if p.name == path.name}) == 1 else str(path)
            for role, path in files.items()}


def inspect_release(vit: str | os.PathLike, qformer: str | os.PathLike, checkpoint: str | os.PathLike, *,
                    vision_heads: int | None = None, qformer_heads: int | None = None,
                    vision_depth: int | None = None) -> ReleaseReport:
    """Read the three released weight files, convert the keys and check every tensor's shape.

    Returns the sizes, the converted weights and every unused key (grouped, with the reason).
    Raises :class:`ReleasedLoadError` (one line naming the file and the key or shape).
    """
    files = {"vit": Path(vit), "qformer": Path(qformer), "checkpoint": Path(checkpoint)}
    names = {role: str(path) for role, path in files.items()}
    merged: dict[str, tuple[str, str, torch.Tensor]] = {}  # canonical → (role, original key, tensor)
    unused_keys: list[tuple[str, str, str]] = []  # (role, original key or label, reason)
    unused: list[UnusedGroup] = []
    vit_prefixed = False
    built_depth: int | None = None  # ViT blocks in a dump of a built model (already cut to its depth)
    shown = _shown_names(files)
    read: dict[tuple[int, int], str] = {}  # (device, inode) of each file read → its role
    # MiniGPT-4 loads EVA, then BLIP-2 (strict=False), then its checkpoint (strict=False): the last wins.
    for role, path in files.items():
        identity = _identity(path)
        if identity is not None and identity in read:  # one file in two roles: its keys are read once
            continue
        if identity is not None:
            read[identity] = role
        state, top = read_checkpoint(path, role)
        unused.extend(top)
        if role == "vit":
            vit_prefixed = any(k.startswith("visual_encoder.") for k in state)
        if any(k.startswith("ln_vision.") for k in state):  # a built BLIP-2 / MiniGPT-4 model's dump
            built_depth = max(built_depth or 0, _vit_block_count(state) or 0) or None
        for key, tensor in state.items():
            # EVA's own file names its keys without LAVIS's prefix; a LAVIS dump (prefixed) may hold
            # the Q-Former too, whose keys keep their names
            canonical = key if role != "vit" or vit_prefixed else f"visual_encoder.{key}"
            if canonical in merged:
                old_role, old_key, _ = merged[canonical]
                unused_keys.append((old_role, old_key.split(".")[0] + ".*",
                                    f"superseded by the same key in {shown[role]} (loaded later, as MiniGPT-4 does)"))
            merged[canonical] = (role, key, tensor)
    llm_keys = [k for k in merged if k.startswith("llama_model.")]
    if llm_keys:
        role, key, _ = merged[llm_keys[0]]
        raise ReleasedLoadError(f"{names[role]}: holds LLM weights ('{key}', {len(llm_keys)} keys); the LLM is read "
                                "from its own folder: merge them into it first")
    sizes = _infer_sizes(merged, names, vit_prefixed, vision_heads, qformer_heads,
                         vision_depth if vision_depth is not None else built_depth)
    required = _required_keys(sizes)
    vision, qformer_model = _build_modules(sizes, meta=True)
    expected = {"vision": {k: tuple(v.shape) for k, v in vision.state_dict().items()},
                "qformer": {k: tuple(v.shape) for k, v in qformer_model.state_dict().items()},
                "query_tokens": {"query_tokens": (1, sizes.num_query_tokens, sizes.qformer_width)},
                "projection": {"weight": (sizes.llm_width, sizes.qformer_width), "bias": (sizes.llm_width,)}}
    role_of = {"vision": "vit", "qformer": "qformer", "query_tokens": "qformer", "projection": "checkpoint"}
    weights: dict[str, dict[str, torch.Tensor]] = {target: {} for target in expected}
    qv_bias: dict[str, dict[str, torch.Tensor]] = {}
    for canonical, (target, ours) in required.items():
        if canonical not in merged:
            role = "qformer" if canonical.startswith("ln_vision.") else role_of[target]
            shown = (_vit_expected_name(canonical, vit_prefixed) if canonical.startswith("visual_encoder.")
                     else canonical)
            raise ReleasedLoadError(f"{names[role]}: missing key '{shown}'")
        role, key, tensor = merged[canonical]
        want = expected[target][ours]
        if canonical.endswith(("attn.q_bias", "attn.v_bias")):
            want = (want[0] // 3,)
        if tuple(tensor.shape) != want:
            raise ReleasedLoadError(f"{names[role]}: '{key}' has shape {tuple(tensor.shape)}, expected {want}")
        if canonical.endswith(("attn.q_bias", "attn.v_bias")):
            qv_bias.setdefault(ours, {})[canonical[-6]] = tensor  # 'q' or 'v'
        else:
            weights[target][ours] = tensor
    for ours, parts in qv_bias.items():  # EVA has no key bias: qkv bias = [q_bias, 0, v_bias]
        weights["vision"][ours] = torch.cat([parts["q"], torch.zeros_like(parts["q"]), parts["v"]])
    missing = sorted(set(expected["vision"]) - set(weights["vision"])) + sorted(
        set(expected["qformer"]) - set(weights["qformer"]))
    if missing:  # a key the conversion table does not produce (a transformers layout change)
        raise ReleasedLoadError(f"transformers' BLIP-2 modules want '{missing[0]}', which no released key maps to")
    for canonical, (role, key, _) in merged.items():
        if canonical in required:
            continue
        found = _unused_reason(canonical, sizes)
        if found is None:
            parts = key.split(".")
            found = (".".join(parts[:2]) + ".*" if len(parts) > 2 else key,
                     "not part of MiniGPT-4's model (the original's strict=False load ignores it)")
        elif key != canonical:  # EVA's own names, without LAVIS's prefix
            found = (found[0].removeprefix("visual_encoder."), found[1])
        unused_keys.append((role, *found))
    groups: dict[tuple[str, str, str], int] = {}
    for role, label, reason in unused_keys:
        groups[(shown[role], label, reason)] = groups.get((shown[role], label, reason), 0) + 1
    unused.extend(UnusedGroup(f, label, n, reason) for (f, label, reason), n in groups.items())
    return ReleaseReport(sizes=sizes, unused=unused, files=files, weights=weights)


# --------------------------------------------------------------------------- the vision side


#: BLIP-2's eval processor: RGB, resized to the square without padding, CLIP's mean / std.
BLIP2_SPACE = PixelSpace("BLIP-2 RGB (CLIP mean / std)", CLIP_MEAN, CLIP_STD, "stretch", "CLIP mean colour")


class ReleasedVisionEncoder(nn.Module):
    """EVA ViT-g → ln_vision → BLIP-2 Q-Former over learned queries, with the toolkit's encoder interface.

    ``encode_tokens(pixel_values [B, 3, S, S]) -> [B, Q, H]`` (MiniGPT-4's ``encode_img`` up to
    ``llama_proj``); ``token_dim = H`` (768), ``num_tokens = Q`` (32). Hook points:
    ``hook_vision`` ``[B, 1 + P, D]`` (ln_vision output, what the Q-Former attends to) and
    ``hook_tokens`` ``[B, Q, H]``.
    """

    pixel_space = BLIP2_SPACE

    def __init__(self, vision: nn.Module, qformer: nn.Module, query_tokens: torch.Tensor, sizes: ReleasedSizes) -> None:
        super().__init__()
        self.vision = vision  # transformers Blip2VisionModel; post_layernorm = ln_vision
        self.qformer = qformer  # transformers Blip2QFormerModel (queries only)
        self.query_tokens = nn.Parameter(query_tokens)  # [1, Q, H]
        self.sizes = sizes
        self.hook_vision = nn.Identity()  # [B, 1 + P, D]
        self.hook_tokens = nn.Identity()  # [B, Q, H]

    @property
    def token_dim(self) -> int:
        return self.sizes.qformer_width

    @property
    def num_tokens(self) -> int:
        return self.sizes.num_query_tokens

    @property
    def image_size(self) -> int:
        return self.sizes.image_size

    @property
    def patch_grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of ViT patches (16 × 16 at 224 px, patch 14)."""
        side = self.sizes.image_size // self.sizes.patch_size
        return side, side

    def image_processor(self, image: Any) -> torch.Tensor:
        """A file, PIL image or grey ``[H, W]`` array as BLIP-2's eval processor gives it: ``[1, 3, S, S]``."""
        return blip2_eval_processor(image, size=self.sizes.image_size)

    def token_grid_layer(self) -> tuple[nn.Module, tuple[int, int], int]:
        """The last ViT block the Q-Former reads (after ``ln_vision``): ``hook_vision`` ``[B, 1 + P, D]``,
        the patch grid and the one [CLS] token before it. Grad-CAM hooks it (``interpret.hooks``)."""
        return self.hook_vision, self.patch_grid, 1

    def feature_layer(self, stride: int = 14) -> tuple[nn.Module, int]:
        """The ViT's one spatial feature map, its patch embedding ``[B, D, S/p, S/p]``, and its stride p.

        ``stride`` is accepted for the interface of ``models.encoder.VisionEncoder.feature_layer``; a
        ViT has no finer map, so every stride resolves to this layer (feature-level IG and the gate).
        """
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive whole number, got {stride!r}")
        return self.vision.embeddings.patch_embedding, self.sizes.patch_size

    def _check_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` as the BLIP-2 processor gives; ``[B, 1, S, S]`` from ``data.images.preprocess``
        is mapped back to grey RGB and renormalised with CLIP's mean / std (an approximation:
        that transform pads to square where BLIP-2's resizes)."""
        size = self.sizes.image_size
        shape = tuple(pixel_values.shape)
        if len(shape) != 4 or shape[-2:] != (size, size) or shape[1] not in (1, 3):
            raise ValueError(f"pixel_values must be [batch, 3, {size}, {size}] (from model.image_processor), "
                             f"got shape {list(pixel_values.shape)}")
        if pixel_values.shape[1] == 1:
            from ..data.readers.images import MEDCLIP_MEAN, MEDCLIP_STD

            grey = (pixel_values.float() * MEDCLIP_STD + MEDCLIP_MEAN).clamp(0.0, 1.0).expand(-1, 3, -1, -1)
            mean = torch.tensor(CLIP_MEAN, device=grey.device).view(1, 3, 1, 1)
            std = torch.tensor(CLIP_STD, device=grey.device).view(1, 3, 1, 1)
            pixel_values = (grey - mean) / std  # [B, 3, S, S]
        return pixel_values

    def encode_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Q-Former query outputs ``[B, Q, H]`` for ``pixel_values`` ``[B, 3, S, S]``."""
        pixel_values = self._check_pixels(pixel_values)
        weight = self.vision.embeddings.patch_embedding.weight
        pixel_values = pixel_values.to(weight.device, weight.dtype)
        image = self.hook_vision(self.vision(pixel_values=pixel_values).last_hidden_state)  # [B, 1 + P, D]
        queries = self.query_tokens.expand(image.shape[0], -1, -1)  # [B, Q, H]
        tokens = self.qformer(query_embeds=queries, encoder_hidden_states=image).last_hidden_state  # [B, Q, H]
        return self.hook_tokens(tokens)

    def freeze(self) -> "ReleasedVisionEncoder":
        """Freeze every parameter and switch to eval mode (frozen in XrayGPT, as in MiniGPT-4)."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()


def build_vision_encoder(report: ReleaseReport, dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu") -> ReleasedVisionEncoder:
    """The frozen vision side from :func:`inspect_release`'s converted weights.

    ``dtype`` applies to the ViT (bf16 on a GPU, as MiniGPT-4 runs it in half precision); the
    Q-Former and its queries stay float32 (MiniGPT-4; transformers keeps its Q-Former in fp32 too).
    """
    vision, qformer = _build_modules(report.sizes, meta=True)
    vision.load_state_dict(report.weights["vision"], strict=True, assign=True)
    qformer.load_state_dict(report.weights["qformer"], strict=True, assign=True)
    vision.post_layernorm.eps = LN_VISION_EPS
    encoder = ReleasedVisionEncoder(vision.to(device, dtype), qformer.to(device, torch.float32),
                                    report.weights["query_tokens"]["query_tokens"].to(device, torch.float32),
                                    report.sizes)
    return encoder.freeze()


# --------------------------------------------------------------------------- images


def blip2_eval_processor(image: Any, size: int = 224) -> torch.Tensor:
    """BLIP-2's eval processor (LAVIS ``Blip2ImageEvalProcessor``): RGB → resize ``size × size``
    (bicubic, Pillow's, as torchvision's ``Resize`` does on images) → ``[0, 1]`` → CLIP mean / std.

    ``image``: a path (PNG/JPEG through Pillow; DICOM and 16-bit files through
    ``data.images.load_image``, windowed grey), a ``PIL.Image`` or a grey ``[H, W]`` array in
    ``[0, 1]``. Returns ``[1, 3, size, size]`` float32.
    """
    from PIL import Image, UnidentifiedImageError


    def from_grey(array: np.ndarray) -> "Image.Image":
        return Image.fromarray(np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L").convert("RGB")

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            with Image.open(path) as opened:
                pil = opened.convert("RGB") if opened.mode not in ("I", "I;16", "I;16B", "F") else None
        except (UnidentifiedImageError, OSError):
            pil = None  # DICOM or a file Pillow cannot read: load_image says what is wrong
        except Exception as err:  # noqa: BLE001 - decompression bombs and the like
            raise ImageLoadError(f"{path}: {err}") from None
        image = pil if pil is not None else from_grey(load_image(path))
    elif isinstance(image, np.ndarray):
        if image.ndim != 2:
            raise ValueError(f"expected a grey [H, W] array, got shape {image.shape}")
        image = from_grey(image.astype(np.float32))
    elif isinstance(image, Image.Image):
        image = image.convert("RGB")
    else:
        raise TypeError(f"expected a path, a PIL image or a grey array, got {type(image).__name__}")
    resized = image.resize((size, size), Image.BICUBIC)
    tensor = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3, S, S]
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return ((tensor - mean) / std)[None].contiguous()  # [1, 3, S, S]


# --------------------------------------------------------------------------- the whole model


def _llm_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ReleasedLoadError(f"{folder}: missing config.json (a Hugging Face LLaMA/Vicuna checkpoint folder)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ReleasedLoadError(f"{path}: not readable JSON: {err}") from None


def llm_parameter_count(config: dict[str, Any]) -> int:
    """Parameters of a LLaMA from its ``config.json`` (embeddings, attention, SwiGLU MLP, head).

    A field the file leaves out takes transformers' default (``LlamaConfig``: 4096 wide, 32
    layers, …), as it does when the model is built, so a terse config cannot pass for a small model.
    """
    from transformers import LlamaConfig

    known = {k: v for k, v in config.items() if k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                                        "vocab_size", "num_attention_heads", "num_key_value_heads",
                                                        "tie_word_embeddings")}
    try:
        full = LlamaConfig(**known)
    except Exception as err:  # noqa: BLE001 - transformers validates with its own exception types
        raise ReleasedLoadError(f"config.json does not describe a LLaMA ({_one_line(err)})") from None
    h, layers = int(full.hidden_size), int(full.num_hidden_layers)
    mlp, vocab = int(full.intermediate_size), int(full.vocab_size)
    heads = max(1, int(full.num_attention_heads))
    kv = h * int(full.num_key_value_heads or heads) // heads
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * mlp + 2 * h
    head = 0 if full.tie_word_embeddings else vocab * h
    return vocab * h + layers * per_layer + h + head


def load_release(vit: str | os.PathLike, qformer: str | os.PathLike, checkpoint: str | os.PathLike,
                 llm: str | os.PathLike, *, device: str | torch.device | None = None,
                 vision_heads: int | None = None, qformer_heads: int | None = None,
                 vision_depth: int | None = None, log: Callable[[str], None] | None = None):
    """The released XrayGPT as the toolkit's :class:`~.xraygpt.XrayGPT` (eval mode).

    bf16 on CUDA (the ViT and the LLM; Q-Former and ``llama_proj`` in float32), float32 on the
    CPU. The model carries ``release_report`` (sizes and unused keys) and ``image_size``; its
    ``image_processor`` is :func:`blip2_eval_processor` at the model's image size. ``log`` receives
    one line per group of unused keys. Raises :class:`ReleasedLoadError` (one line).
    """

    device = resolve_device(device)
    llm_dir = Path(llm)
    if not llm_dir.is_dir():
        raise ReleasedLoadError(f"LLM folder {llm_dir} does not exist (the radiology Vicuna-7B in Hugging Face layout)")
    llm_config = _llm_config(llm_dir)
    report = inspect_release(vit, qformer, checkpoint, vision_heads=vision_heads, qformer_heads=qformer_heads,
                             vision_depth=vision_depth)
    if int(llm_config.get("hidden_size", -1)) != report.sizes.llm_width:
        raise ReleasedLoadError(f"{checkpoint}: 'llama_proj.weight' projects to {report.sizes.llm_width}, but the LLM "
                                f"in {llm_dir} is {llm_config.get('hidden_size')} wide")
    n_params = llm_parameter_count(llm_config)
    if device.type == "cpu" and n_params > CPU_PARAMETER_LIMIT:
        raise ReleasedLoadError(f"{llm_dir}: a {n_params / 1e9:.1f}B-parameter LLM needs a GPU (bf16, about "
                                f"{2 * n_params / 2**30:.0f} GiB); this machine would run it on the CPU "
                                "(use --device cuda on a machine with one)")
    for group in report.unused:
        if log is not None:
            log(str(group))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    encoder = build_vision_encoder(report, dtype=dtype, device=device)
    language, tokenizer = load_llm(llm_dir, dtype=dtype, device=str(device))
    model = XrayGPT(encoder, language, tokenizer)
    with torch.no_grad():
        model.projection.weight.copy_(report.weights["projection"]["weight"])
        model.projection.bias.copy_(report.weights["projection"]["bias"])
    model = model.to(device)
    report.weights = {}  # the modules hold the tensors now
    model.release_report = report
    model.image_size = report.sizes.image_size
    model.chat_system = XRAYGPT_SYSTEM
    return model.eval()


def sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path, checksum: bool) -> dict[str, Any]:
    """What a release manifest keeps of one file: its resolved path, size, modification time
    and (unless ``checksum`` is False) SHA-256."""
    stat = path.stat()
    entry: dict[str, Any] = {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if checksum:
        entry["sha256"] = sha256(path)
    return entry


def check_recorded_file(path: Path, entry: Any, manifest: Path) -> None:
    """Refuse a file that is not the one ``release init`` recorded in ``manifest``.

    The size must match. Where the modification time differs too, the SHA-256 is computed again
    and must match the recorded one (a manifest written with ``--no-checksums`` then refuses).
    """
    if not isinstance(entry, dict):
        raise ReleasedLoadError(f"{manifest}: not a release manifest (a file entry is {type(entry).__name__})")
    if not path.is_file():
        raise ReleasedLoadError(f"{path}: missing, but {manifest} lists it: restore it or run "
                                "`xraygpt-lab release init` again")
    stat = path.stat()
    if entry.get("bytes") is not None and stat.st_size != entry["bytes"]:
        raise ReleasedLoadError(f"{path}: {stat.st_size} bytes, but {manifest} recorded {entry['bytes']}: the file "
                                "changed since `xraygpt-lab release init`")
    if entry.get("mtime_ns") is None or stat.st_mtime_ns == entry["mtime_ns"]:
        return
    if entry.get("sha256") is None:
        raise ReleasedLoadError(f"{path}: modified since {manifest} was written (without checksums): run "
                                "`xraygpt-lab release init` again")
    if sha256(path) != entry["sha256"]:
        raise ReleasedLoadError(f"{path}: its SHA-256 differs from the one {manifest} recorded: another file "
                                "took its place since `xraygpt-lab release init`")


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The release manifest at ``path``, or None when it is not one (missing, a link, other JSON)."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None


def load_release_run(run_dir: str | os.PathLike, device: str | torch.device | None = None):
    """Load the release a run folder's ``release.json`` points at (written by ``xraygpt-lab release init``)."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        paths = {role: Path(files[role]["path"]) for role in ("vit", "qformer", "checkpoint", "llm")}
        sizes = manifest["sizes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ReleasedLoadError(f"{path}: not a release manifest ({type(err).__name__}: {err})") from None
    try:
        recorded = [(paths[role], files[role]) for role in ("vit", "qformer", "checkpoint")] + [
            (paths["llm"] / name, entry) for name, entry in files["llm"].get("files", {}).items()]
    except (AttributeError, TypeError) as err:
        raise ReleasedLoadError(f"{path}: not a release manifest ({type(err).__name__}: {err})") from None
    for file, entry in recorded:
        check_recorded_file(file, entry, path)
    model = load_release(paths["vit"], paths["qformer"], paths["checkpoint"], paths["llm"], device=device,
                         vision_heads=sizes.get("vision_heads"), qformer_heads=sizes.get("qformer_heads"),
                         vision_depth=sizes.get("vision_depth"))
    model.run_config = manifest
    return model


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "MANIFEST",
    "BLIP2_SPACE",
    "ReleaseReport",
    "ReleasedLoadError",
    "ReleasedSizes",
    "ReleasedVisionEncoder",
    "UnusedGroup",
    "blip2_eval_processor",
    "build_vision_encoder",
    "check_recorded_file",
    "file_record",
    "inspect_release",
    "llm_parameter_count",
    "load_release",
    "load_release_run",
    "read_checkpoint",
    "read_manifest",
    "sha256",
]
