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


def text_batch(tokenizer: Any, prompts: Sequence[str], targets: Sequence[str],
               max_target_tokens: int = MAX_TARGET_TOKENS) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and labels (-100 on BOS and prompt), right-padded.

    ``targets`` must already end with the end symbol (see ``xraygpt_text_example``).
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
    rows, labels = [], []
    for prompt, target in zip(prompts, targets):
        prompt_ids = [bos] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"][:max_target_tokens]
        rows.append(prompt_ids + target_ids)
        labels.append([IGNORE_INDEX] * len(prompt_ids) + target_ids)
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)  # [B, T]
    label_ids = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(rows), length), dtype=torch.long)  # [B, T]
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)] = torch.tensor(r)
        label_ids[i, : len(r)] = torch.tensor(lab)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_ids}


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
    """``make_batch(step, rng)`` drawing ``batch_size`` examples uniformly with replacement."""
    def make_batch(step: int, rng: random.Random) -> dict[str, torch.Tensor]:
        picks = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        batch = text_batch(tokenizer, [p for p, _ in picks], [t for _, t in picks])
        return {k: v.to(device) for k, v in batch.items()}
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
