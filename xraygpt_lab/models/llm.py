"""The language model: a LLaMA-family causal LM and its tokenizer.

XrayGPT (arXiv 2306.07971, Sec. 3) uses Vicuna-7B v1, first fine-tuned on medical doctor–patient
conversations ("MedVicuna") and then on radiology conversations ("RadVicuna"). Two ways in:

* ``full``: :func:`load_llm` reads any LLaMA-family checkpoint (Vicuna, LLaMA-2, MedVicuna …)
  from a local folder (``config.json`` + weights + tokenizer), bf16 on a GPU; domain fine-tuning
  goes through LoRA (:func:`add_lora`, ``peft``).
* ``tiny``: :func:`train_tokenizer` trains a byte-level BPE on the report corpus with
  ``tokenizers`` and wraps it as a ``PreTrainedTokenizerFast``; :func:`tiny_llm` builds a
  ``LlamaForCausalLM`` at toy size (same RMSNorm/RoPE/SwiGLU code as the 7B model) that is fully
  fine-tuned from scratch.

Special tokens: ``<Img>``, ``</Img>``, ``<ImageHere>`` and ``###`` are atomic added tokens in the
tiny tokenizer, so the template reads as a few tokens. The 7B tokenizer splits them into pieces,
which is fine: the image placeholder is removed before tokenising (``XrayGPT.prompt_wrap``) and
generation stops on the string ``###``, not on a token id.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_folder
from ..config import TINY_LLM
from ..errors import CorruptFileError, RunFolderError, one_line
from ..run_folder import check_shapes, read_header, read_json
from ..recipe import TinyLLMArch
from .conversation import END_SYM, IMAGE_END, IMAGE_PLACEHOLDER, IMAGE_START

#: Control tokens of the tiny tokenizer (LLaMA's own three first, then padding and the template's).
BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
TEMPLATE_TOKENS: tuple[str, ...] = (IMAGE_START, IMAGE_END, IMAGE_PLACEHOLDER, END_SYM)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    Byte-level (GPT-2 style) so that any input string can be encoded; a LLaMA-style ``<s>`` is
    prepended when ``add_special_tokens=True``. Returns a ``PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + special tokens), got {vocab_size}")
    specials = [UNK, BOS, EOS, PAD, *TEMPLATE_TOKENS]
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(texts)
    if not texts:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=list(TEMPLATE_TOKENS),
        clean_up_tokenization_spaces=False,
    )


def tiny_llm(tokenizer, seed: int = 0, arch: TinyLLMArch = TINY_LLM, **sizes: Any):
    """A randomly initialised ``LlamaForCausalLM`` at toy size, matched to ``tokenizer``.

    ``arch`` gives the sizes (default: the tiny profile's, ``config.TINY_LLM``); ``sizes`` override
    single ones. ``vocab_size`` is always ``len(tokenizer)`` (``arch.vocab_size`` is the BPE's target).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {**asdict(arch), **sizes}
    cfg.pop("vocab_size", None)
    heads = cfg["num_attention_heads"]
    if cfg["hidden_size"] % heads:
        raise ValueError(f"hidden_size {cfg['hidden_size']} is not divisible by {heads} attention heads")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=heads,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **cfg,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def load_llm(folder: str | os.PathLike, dtype: torch.dtype | str | None = None, device: str | None = None):
    """Load a causal LM and its tokenizer from a local folder (no network).

    Any LLaMA-family checkpoint in Hugging Face layout works (Vicuna-7B: pass
    ``dtype=torch.bfloat16``, ``device="cuda"``). Returns ``(model, tokenizer)``; the model is
    in eval mode. Raises ``RunFolderError`` naming what is missing and ``CorruptFileError`` naming
    an unreadable file (:func:`check_llm_folder`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
    folder = Path(folder)
    tokenizer_file = check_llm_folder(folder)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # tokenizers / sentencepiece raise assorted types for a malformed file
        raise CorruptFileError(tokenizer_file, f"cannot be read as a tokenizer ({one_line(exc)})") from None
    if tokenizer.pad_token is None:  # LLaMA ships without one; XrayGPT reuses <unk>/eos
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
    except pickle.UnpicklingError:  # transformers reads *.bin with torch.load(weights_only=True)
        bins = sorted(folder.glob("*.bin"))
        raise CorruptFileError(bins[0] if len(bins) == 1 else folder,
                               "refused: the pickle carries code or objects other than tensors (read with "
                               "torch.load(weights_only=True)); convert the weights to safetensors") from None
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        raise CorruptFileError(folder, f"the model cannot be loaded ({one_line(exc)})") from None
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def check_llm_folder(folder: Path) -> Path:
    """Check a Hugging Face LLM folder before loading it; returns its tokenizer file.

    Every JSON file must hold an object, every safetensors file must be whole, and together they
    must hold a tensor of the right size for each weight the config describes (checked on an
    empty ``meta``-device model, so a 7B model costs nothing). One-line errors name the file.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if not folder.is_dir():
        raise RunFolderError(f"LLM folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise RunFolderError(f"{folder}: missing config.json (a Hugging Face LLaMA/Vicuna checkpoint folder)")
    shards = sorted(folder.glob("*.safetensors"))
    if not shards and not list(folder.glob("*.bin")):
        raise RunFolderError(f"{folder}: missing model weights (model.safetensors or *.safetensors shards)")
    tokenizer_file = next((folder / n for n in ("tokenizer.json", "tokenizer.model") if (folder / n).is_file()), None)
    if tokenizer_file is None:
        raise RunFolderError(f"{folder}: missing tokenizer.json (or tokenizer.model)")
    for path in sorted(folder.glob("*.json")):
        read_json(path)
    # a sharded save: every shard its index names must be there
    for index in (folder / "model.safetensors.index.json", folder / "pytorch_model.bin.index.json"):
        if not index.is_file():
            continue
        weight_map = read_json(index).get("weight_map")
        listed = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        absent = [name for name in listed if not (folder / str(name)).is_file()]
        if absent:
            raise RunFolderError(f"{folder}: missing {absent[0]}" + (f" and {len(absent) - 1} more" if len(absent) > 1
                                                                     else "")
                                 + f" of the {len(listed)} shards {index.name} lists")
    found = {name: shape for shard in shards for name, shape in read_header(shard)[0].items()}
    if shards:
        try:
            with torch.device("meta"):
                empty = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
        except (OSError, TypeError, ValueError, KeyError) as exc:
            raise CorruptFileError(folder / "config.json", f"does not describe a model ({one_line(exc)})") from None
        expected = {k: tuple(v.shape) for k, v in empty.state_dict().items()}
        tied = tuple(getattr(empty, "all_tied_weights_keys", None) or ())
        check_shapes(shards[0] if len(shards) == 1 else folder, expected, "config.json", found=found,
                     may_lack=tied, may_add=True)  # extra tensors (old rotary buffers) are ignored on load
    return tokenizer_file


def save_llm(model, tokenizer, folder: str | os.PathLike) -> Path:
    """Write model (safetensors) and tokenizer to ``folder``, replacing it atomically.

    Everything is written into a temporary sibling folder first, which then takes the place of
    ``folder`` (``atomic.atomic_folder``: fsynced, with the umask's permissions), so an
    interrupted save never leaves a half-written model. A ``peft`` model is merged first so that
    the folder loads with :func:`load_llm`.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar on the CLI's stderr
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return atomic_folder(folder, write)


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients for every parameter of ``module`` (XrayGPT freezes the LLM)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def add_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.05,
             target_modules: tuple[str, ...] = ("q_proj", "v_proj")):
    """Wrap ``model`` with LoRA adapters (Hu et al. 2021) for domain fine-tuning a 7B LLM.

    Defaults follow the common LLaMA recipe (rank 8 on the query and value projections).
    Only the adapters are trainable; :func:`save_llm` merges them back into the weights.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
