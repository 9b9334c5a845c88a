"""Solution for notebook 03: the labels of one XrayGPT training example."""
from __future__ import annotations

IGNORE_INDEX = -100


def xraygpt_labels(tokenizer, prompt: str, target: str, num_image_tokens: int,
                   max_target_tokens: int = 160) -> list[int]:
    """-100 on BOS, prompt and image; the target + '###' token ids (cut at max_target_tokens)."""
    before, after = prompt.split("<ImageHere>")

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    n_ignored = 1 + len(ids(before)) + num_image_tokens + len(ids(after))  # BOS + prompt + image
    target_ids = ids(target + "###")[:max_target_tokens]
    return [IGNORE_INDEX] * n_ignored + target_ids
