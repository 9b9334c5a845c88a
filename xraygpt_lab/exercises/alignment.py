"""Exercise for notebook 03 (linear alignment): the loss mask of one training example.

XrayGPT (arXiv 2306.07971, Sec. 3; ``models.xraygpt.XrayGPT.prompt_wrap``) trains on

    <s>###Patient: <Img>[N image embeddings]</Img> {instruction} ###Doctor: {target}###

and computes the loss on ``{target}###`` only: the labels are ``-100`` (PyTorch's ignore index)
on BOS, on every prompt token and on the N image positions, and the target is cut at
``max_target_tokens`` (160, XrayGPT's ``max_txt_len``) *after* appending ``###``. Labels are
not shifted: Hugging Face's causal LM loss shifts them itself. The student writes

    xraygpt_labels(tokenizer, prompt, target, num_image_tokens, max_target_tokens=160) -> list[int]

returning one label per position of the spliced sequence (no padding).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from ..data.text.instructions import ALIGNMENT_INSTRUCTIONS
from ..models.conversation import END_SYM, IMAGE_PLACEHOLDER, MAX_TARGET_TOKENS, xraygpt_prompt
from ..models.llm import tiny_llm, train_tokenizer
from ..models.xraygpt import XrayGPT
from .checking import Case, CheckResult, Mistake, run_check

IGNORE_INDEX = -100  # nn.CrossEntropyLoss's default ignore_index


class _TokensOnly(nn.Module):
    """A stand-in encoder: ``prompt_wrap`` needs only ``token_dim`` (no image is encoded)."""

    token_dim = 4
    num_tokens = 0


@lru_cache(maxsize=1)
def _tiny_model() -> Any:
    """A 1-layer tiny XrayGPT (random weights) whose tokenizer knows the template tokens."""

    corpus = list(ALIGNMENT_INSTRUCTIONS) + [
        "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
        "Moderate left pleural effusion with adjacent atelectasis. Mild cardiomegaly.",
    ] * 3
    tokenizer = train_tokenizer(corpus, vocab_size=300, min_frequency=1)
    llm = tiny_llm(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    return XrayGPT(_TokensOnly(), llm, tokenizer)


def tiny_tokenizer() -> Any:
    """The tokenizer the checker uses (byte-level BPE with ``<s>``, ``<Img>``, ``###`` … as tokens)."""
    return _tiny_model().tokenizer


def xraygpt_labels(tokenizer: Any, prompt: str, target: str, num_image_tokens: int,
                   max_target_tokens: int = MAX_TARGET_TOKENS) -> list[int]:
    """Reference: the labels row ``XrayGPT.prompt_wrap`` builds for one example."""
    model = _tiny_model()
    if tokenizer is not model.tokenizer:
        raise ValueError("the reference runs with tiny_tokenizer() only")
    model.max_target_tokens = max_target_tokens
    try:
        image = torch.zeros(1, num_image_tokens, model.llm.config.hidden_size)  # [1, N, d_llm]
        wrapped = model.prompt_wrap(image, [prompt], [target])
    finally:
        model.max_target_tokens = MAX_TARGET_TOKENS
    return [int(v) for v in wrapped.labels[0]]


def _cases() -> list[Case]:
    tok = tiny_tokenizer()
    return [
        Case("a short answer, 4 image tokens", (tok, xraygpt_prompt("Describe the given chest x-ray image in detail."),
                                                 "The lungs are clear.", 4)),
        Case("the tiny profile's 16 image tokens", (tok, xraygpt_prompt("What are the key findings in this chest x-ray image?"),
                                                     "Mild cardiomegaly. No pleural effusion.", 16)),
        Case("a target longer than max_target_tokens=12 (cut after adding ###)",
             (tok, xraygpt_prompt("Write a short radiology report for this chest x-ray."),
              "Moderate left pleural effusion with adjacent atelectasis. The heart is normal in size.", 9),
             {"max_target_tokens": 12}),
        Case("an empty answer (only ### is learnt)", (tok, xraygpt_prompt("Is this chest x-ray normal or abnormal overall?"), "", 2)),
    ]


def check_xraygpt_labels(answer: Callable[..., list[int]], *, strict: bool = False) -> CheckResult:
    """Check ``answer(tokenizer, prompt, target, num_image_tokens, max_target_tokens=160)``."""

    def ids(tok, text):
        return tok(text, add_special_tokens=False)["input_ids"] if text else []

    def parts(tok, prompt, target, n, cut, end=True, bos=True, truncate_first=False):
        before, after = prompt.split(IMAGE_PLACEHOLDER)
        head = ([tok.bos_token_id] if bos else []) + ids(tok, before)
        if truncate_first:
            tail = ids(tok, target)[:cut] + ids(tok, END_SYM)
        else:
            tail = ids(tok, target + (END_SYM if end else ""))[:cut]
        return head, ids(tok, after), tail, n

    def build(mask_prompt=True, mask_image=True, image=True, **kw):
        def labels(tok, prompt, target, n, max_target_tokens=MAX_TARGET_TOKENS):
            head, after, tail, n = parts(tok, prompt, target, n, max_target_tokens, **kw)
            n = n if image else 0
            image_labels = [IGNORE_INDEX] * n if mask_image else [tok.pad_token_id] * n
            if mask_prompt:
                return [IGNORE_INDEX] * len(head) + image_labels + [IGNORE_INDEX] * len(after) + tail
            return head + image_labels + after + tail
        return labels

    def shifted(tok, prompt, target, n, max_target_tokens=MAX_TARGET_TOKENS):
        row = xraygpt_labels(tok, prompt, target, n, max_target_tokens)
        return row[1:] + [IGNORE_INDEX]

    mistakes = [
        Mistake("the prompt tokens carry labels: every position before the answer (BOS, prompt, image) "
                "must be -100 so the model is not trained to write the question", build(mask_prompt=False)),
        Mistake("the image positions need -100 too (they are embeddings, not tokens to predict)",
                build(mask_image=False)),
        Mistake("you forgot the N image positions: the spliced sequence has N image embeddings between "
                "<Img> and </Img>, each with label -100", build(image=False)),
        Mistake("append the end symbol '###' to the target before tokenising: the model must learn to stop",
                build(end=False)),
        Mistake("the sequence starts with BOS (<s>), which also gets -100", build(bos=False)),
        Mistake("cut the target at max_target_tokens *after* appending '###' (XrayGPT tokenises target + "
                "end_sym, then truncates)", build(truncate_first=True)),
        Mistake("the target was not cut at max_target_tokens (XrayGPT's max_txt_len)",
                lambda tok, p, t, n, max_target_tokens=MAX_TARGET_TOKENS: build()(tok, p, t, n, 10**6)),
        Mistake("do not shift the labels: Hugging Face's causal LM loss shifts them by one itself", shifted),
    ]
    return run_check("labels for prompt + image + target", answer, xraygpt_labels, _cases(), mistakes,
                     strict=strict, hint="[-100] * (1 + len(ids(before)) + N + len(ids(after))) + "
                                         "ids(target + '###')[:max_target_tokens]")


__all__ = ["IGNORE_INDEX", "check_xraygpt_labels", "tiny_tokenizer", "xraygpt_labels"]
