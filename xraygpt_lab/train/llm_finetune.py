"""Domain fine-tuning of the LLM on text conversations (the MedVicuna / RadVicuna step).

XrayGPT (arXiv 2306.07971, Sec. 3.1) fine-tunes Vicuna on ~100k doctor–patient conversations
and then on ~30k radiology conversations before alignment, so the frozen LLM already speaks the
domain. Here every example is one turn in the XrayGPT template without an image,

    <s>###Patient: {question} ###Doctor: {answer}###

with the loss on ``{answer}###`` only — the same mask rule as ``XrayGPT.prompt_wrap``. The tiny
profile fine-tunes every weight; a 7B model goes through LoRA (``models.llm.add_lora``).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.conversation import END_SYM, MAX_TARGET_TOKENS, xraygpt_text_example
from .loop import StageResult, train_stage
from .schedule import StageConfig

IGNORE_INDEX = -100


def _tokenized(tokenizer: Any, prompts: Sequence[str], targets: Sequence[str],
               max_target_tokens: int) -> tuple[list[list[int]], list[list[int]]]:
    """Each example's token ids (BOS + prompt + target) and labels (-100 on BOS and prompt)."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    bos = tokenizer.bos_token_id
    rows, labels = [], []
    for prompt, target in zip(prompts, targets):
        prompt_ids = [bos] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"][:max_target_tokens]
        rows.append(prompt_ids + target_ids)
        labels.append([IGNORE_INDEX] * len(prompt_ids) + target_ids)
    return rows, labels


def text_batch(tokenizer: Any, prompts: Sequence[str], targets: Sequence[str],
               max_target_tokens: int = MAX_TARGET_TOKENS) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and labels (-100 on BOS and prompt), right-padded.

    ``targets`` must already end with the end symbol (see ``xraygpt_text_example``).
    """
    rows, labels = _tokenized(tokenizer, prompts, targets, max_target_tokens)
    pad = tokenizer.pad_token_id
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)  # [B, T]
    label_ids = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(rows), length), dtype=torch.long)  # [B, T]
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)] = torch.tensor(r)
        label_ids[i, : len(r)] = torch.tensor(lab)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_ids}


def packed_text_batch(tokenizer: Any, prompts: Sequence[str], targets: Sequence[str],
                      max_target_tokens: int = MAX_TARGET_TOKENS) -> dict[str, Any]:
    """The examples of :func:`text_batch`, packed several to a row: the same loss, fewer tokens.

    Rows are as long as the longest example; the examples fill them first-fit, longest first.
    ``position_ids`` restart at 0 with every example, which is how transformers' attention masks
    find packed sequences (``masking_utils.find_packed_sequence_indices``: without a cache and a
    2-D mask, each example attends only to itself), so every example's logits equal those of a
    batch of its own. Each example begins with BOS, whose label is -100, so no example learns to
    predict the next one, and the loss averages over the same target tokens as ``text_batch``'s.
    In the tiny LLM stage 42 % of a padded batch is padding; packed, a step takes about 27 % less
    time.
    """
    rows, labels = _tokenized(tokenizer, prompts, targets, max_target_tokens)
    length = max(len(r) for r in rows)
    packs: list[list[int]] = []  # example indices per row
    room: list[int] = []  # free tokens per row
    for i in sorted(range(len(rows)), key=lambda i: -len(rows[i])):
        row = next((k for k, free in enumerate(room) if free >= len(rows[i])), None)
        if row is None:
            packs.append([])
            room.append(length)
            row = len(packs) - 1
        packs[row].append(i)
        room[row] -= len(rows[i])
    input_ids = torch.full((len(packs), length), tokenizer.pad_token_id, dtype=torch.long)  # [R, T]
    label_ids = torch.full((len(packs), length), IGNORE_INDEX, dtype=torch.long)  # [R, T]
    position_ids = torch.zeros((len(packs), length), dtype=torch.long)  # [R, T]
    for k, members in enumerate(packs):
        start = 0
        for i in members:
            end = start + len(rows[i])
            input_ids[k, start:end] = torch.tensor(rows[i])
            label_ids[k, start:end] = torch.tensor(labels[i])
            position_ids[k, start:end] = torch.arange(len(rows[i]))
            start = end
        position_ids[k, start:] = torch.arange(length - start)  # the padding: one more sequence, unlabelled
    return {"input_ids": input_ids, "labels": label_ids, "position_ids": position_ids, "use_cache": False}


def conversation_examples(conversations: Sequence[Sequence[dict]]) -> list[tuple[str, str]]:
    """``(prompt, target)`` pairs from conversations given as ``[{"question", "answer"}, …]``."""
    examples = []
    for turns in conversations:
        for turn in turns:
            question, answer = turn.get("question"), turn.get("answer")
            if not question or not answer:
                raise ValueError(f"a conversation turn needs a question and an answer, got {turn!r}")
            examples.append(xraygpt_text_example(question, answer))
    if not examples:
        raise ValueError("no conversation turns to fine-tune on")
    return examples


def conversation_batches(tokenizer: Any, examples: Sequence[tuple[str, str]], batch_size: int,
                         device: torch.device | str = "cpu"):
    """``make_batch(step, rng)`` drawing ``batch_size`` examples uniformly with replacement,
    packed several to a row (:func:`packed_text_batch`)."""
    def make_batch(step: int, rng: random.Random) -> dict[str, Any]:
        picks = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        batch = packed_text_batch(tokenizer, [p for p, _ in picks], [t for _, t in picks])
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return make_batch


def domain_finetune(llm: nn.Module, tokenizer: Any, examples: Sequence[tuple[str, str]], stage: StageConfig,
                    checkpoint: str | Path | None = None, **train_kwargs: Any) -> StageResult:
    """Fine-tune ``llm`` (all weights, or its LoRA adapters if wrapped) on text conversations."""
    for _, target in examples[:1]:
        if not target.endswith(END_SYM):
            raise ValueError(f"targets must end with {END_SYM!r}; build them with xraygpt_text_example")
    device = next(llm.parameters()).device
    return train_stage(llm, stage, conversation_batches(tokenizer, examples, stage.batch_size, device),
                       checkpoint, **train_kwargs)
