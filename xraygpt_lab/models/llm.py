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
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import TINY_LLM
from ..errors import RunFolderError
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
    in eval mode. Raises ``RunFolderError`` naming what is missing.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"LLM folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise RunFolderError(f"{folder}: missing config.json (a Hugging Face LLaMA/Vicuna checkpoint folder)")
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
    if not weights:
        raise RunFolderError(f"{folder}: missing model weights (model.safetensors or *.safetensors shards)")
    if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        raise RunFolderError(f"{folder}: missing tokenizer.json (or tokenizer.model)")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token is None:  # LLaMA ships without one; XrayGPT reuses <unk>/eos
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def save_llm(model, tokenizer, folder: str | os.PathLike) -> Path:
    """Write model (safetensors) and tokenizer to ``folder``, replacing it atomically.

    Everything is written into a temporary sibling folder first, which then takes the place of
    ``folder`` with ``os.replace``, so an interrupted save never leaves a half-written model.
    A ``peft`` model is merged first so that the folder loads with :func:`load_llm`.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


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
