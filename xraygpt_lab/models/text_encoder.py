"""MedCLIP's text side: a BERT encoder whose pooled states are projected next to the image.

MedCLIP (repository RyanWangZf/MedCLIP, ``MedCLIPTextModel``) encodes a report with
``emilyalsentzer/Bio_ClinicalBERT`` (max length 77), averages hidden states 1, 2 and the last,
takes the mean over tokens and projects with ``Linear(768, 512, bias=False)``; the result is L2
normalised before the contrastive logits.

* ``full``: a Bio_ClinicalBERT-layout ``BertModel`` and its tokenizer from a local folder
  (``TextEncoder.from_bert_folder``).
* ``tiny``: a 2-layer ``BertModel`` of width 64 with a WordPiece tokenizer trained by
  ``tokenizers`` on the report corpus (``train_wordpiece_tokenizer``).

One deliberate difference: MedCLIP averages over every position, padding included, so a report's
embedding changes with the batch's padding length. ``TextEncoderConfig.masked_mean=True`` (our
default) averages over real tokens only; set it to ``False`` to reproduce MedCLIP bit for bit.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from ..errors import CorruptFileError, RunFolderError, one_line
from ..run_folder import load_model_folder, save_model_folder

CONFIG_FILE = "text_encoder_config.json"
WEIGHTS_FILE = "text_encoder.safetensors"
TOKENIZER_FILE = "text_tokenizer.json"

#: BERT special tokens, in the order WordPiece training puts them at ids 0..4.
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class TextEncoderConfig:
    """Sizes of the BERT text encoder and its projection."""

    vocab_size: int = 1000
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    max_length: int = 77  # MedCLIP's tokenizer max_length
    max_position_embeddings: int = 128
    projection_dim: int = 128
    masked_mean: bool = True
    lowercase: bool = True

    @classmethod
    def tiny(cls) -> "TextEncoderConfig":
        return cls()

    @classmethod
    def full(cls) -> "TextEncoderConfig":
        """Bio_ClinicalBERT (bert-base-cased layout: 12 × 768, vocab 28996) + ``Linear(768, 512)``."""
        return cls(
            vocab_size=28996,
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            intermediate_size=3072,
            max_position_embeddings=512,
            projection_dim=512,
            masked_mean=False,
            lowercase=False,
        )

    def to_bert_config(self) -> BertConfig:
        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TextEncoderConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TextEncoderConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 1000, lowercase: bool = True
) -> PreTrainedTokenizerFast:
    """Train a BERT-style WordPiece tokenizer on ``texts`` with the ``tokenizers`` library.

    Post-processing adds ``[CLS] … [SEP]`` like BERT; ids 0–4 are ``SPECIAL_TOKENS``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    texts = list(texts)
    if not texts:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return _wrap(tokenizer)


def _read_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """The WordPiece tokenizer saved by :meth:`TextEncoder.save_pretrained`; ``CorruptFileError`` if unreadable."""
    from tokenizers import Tokenizer

    try:
        return _wrap(Tokenizer.from_file(str(path)))
    except Exception as exc:  # tokenizers raises its own Exception for a malformed file
        raise CorruptFileError(path, f"cannot be read as a tokenizer ({one_line(exc)})") from None


def _wrap(tokenizer: Any) -> PreTrainedTokenizerFast:
    """Wrap a raw ``tokenizers.Tokenizer`` as a transformers tokenizer with BERT's special tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


class TextEncoder(nn.Module):
    """BERT → mean of hidden states (1, 2, last) over tokens → ``Linear(h, p, bias=False)`` → L2 norm."""

    def __init__(self, config: TextEncoderConfig, tokenizer: Any | None = None, bert: BertModel | None = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        # The pooler is unused (MedCLIP pools hidden states itself) but kept so the layout matches
        # MedCLIP's checkpoint (`text_model.model.pooler.dense.*`) and Bio_ClinicalBERT folders.
        self.bert = bert if bert is not None else BertModel(config.to_bert_config(), add_pooling_layer=True)
        self.projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        if tokenizer is not None and len(tokenizer) > self.bert.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the BERT vocabulary holds {self.bert.config.vocab_size}"
            )

    @classmethod
    def from_corpus(cls, texts: Sequence[str], config: TextEncoderConfig | None = None) -> "TextEncoder":
        """Tiny profile: train a WordPiece tokenizer on ``texts`` and build a fresh BERT for it."""
        config = config or TextEncoderConfig.tiny()
        tokenizer = train_wordpiece_tokenizer(texts, vocab_size=config.vocab_size, lowercase=config.lowercase)
        config = TextEncoderConfig.from_dict({**config.to_dict(), "vocab_size": len(tokenizer)})
        return cls(config, tokenizer)

    @classmethod
    def from_bert_folder(cls, folder: str | os.PathLike, projection_dim: int = 512, masked_mean: bool = False) -> "TextEncoder":
        """Full profile: a Bio_ClinicalBERT-layout folder (``config.json``, weights, ``vocab.txt``).

        The projection starts random unless MedCLIP weights are loaded on top (``load_medclip``).
        """
        from transformers import AutoTokenizer

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise RunFolderError(f"{folder}: no config.json — expected a Bio_ClinicalBERT-style BERT folder")
        bert = BertModel.from_pretrained(str(folder), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        bc = bert.config
        config = TextEncoderConfig(
            vocab_size=bc.vocab_size,
            hidden_size=bc.hidden_size,
            num_layers=bc.num_hidden_layers,
            num_heads=bc.num_attention_heads,
            intermediate_size=bc.intermediate_size,
            max_position_embeddings=bc.max_position_embeddings,
            projection_dim=projection_dim,
            masked_mean=masked_mean,
            lowercase=bool(getattr(tokenizer, "do_lower_case", False)),
        )
        return cls(config, tokenizer, bert=bert)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` ``[B, T]`` with ``T ≤ max_length`` (77, MedCLIP)."""
        if self.tokenizer is None:
            raise ValueError("this TextEncoder has no tokenizer; build it with from_corpus or from_bert_folder")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a sequence of strings")
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-length text embeddings ``[B, p]`` from token ids ``[B, T]``."""
        device = self.projection.weight.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        states = out.hidden_states  # (embeddings, layer 1, …, layer L), each [B, T, h]
        mixed = (states[1] + states[2] + states[-1]) / 3  # [B, T, h] MedCLIP: layers 1, 2 and last
        if self.config.masked_mean:
            mask = attention_mask.unsqueeze(-1).to(mixed.dtype)  # [B, T, 1]
            pooled = (mixed * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # [B, h]
        else:
            pooled = mixed.mean(1)  # [B, h]
        return nn.functional.normalize(self.projection(pooled), dim=-1)  # [B, p]

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Tokenize and encode: ``[B, p]`` unit vectors."""
        return self.forward(**self.tokenize(texts))

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write config and tokenizer JSON, then the weights (safetensors, last: they mark the folder
        complete) into ``folder``, each atomically."""
        texts = {} if self.tokenizer is None else {TOKENIZER_FILE: self.tokenizer.backend_tokenizer.to_str()}
        return save_model_folder(folder, self.config.to_dict(), self.state_dict(), CONFIG_FILE, WEIGHTS_FILE, texts)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> "TextEncoder":
        """Load what ``save_pretrained`` wrote (one-line ``RunFolderError`` naming a missing or bad file)."""
        folder = Path(folder)

        def build(config: dict[str, Any]) -> TextEncoder:
            tokenizer = _read_tokenizer(folder / TOKENIZER_FILE) if (folder / TOKENIZER_FILE).is_file() else None
            return cls(TextEncoderConfig.from_dict(config), tokenizer)

        model = load_model_folder(folder, CONFIG_FILE, WEIGHTS_FILE, build, "TextEncoder.save_pretrained")
        return model.to(device)
