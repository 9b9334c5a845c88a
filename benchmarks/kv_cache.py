"""Benchmark: report generation with / without the KV cache at 128 new tokens (goal: >= 5x).

Both paths are ``XrayGPT.generate`` on the same spliced prompt (one image, XrayGPT template,
greedy): ``use_cache=True`` is Hugging Face ``generate`` (keys and values of past positions
kept, one new position per step); ``use_cache=False`` re-reads the whole sequence at every step.

Exactly ``new_tokens`` are generated on both paths, so the two times cover the same work:

* a forward hook on the LLM's output layer (``lm_head``) sets the end-of-sequence logit to
  ``-inf``, so neither path can stop on ``</s>``;
* the stop string is a 32-character random string the model never writes (instead of ``###``);
* a counting streamer receives every generated token; the benchmark fails if a path produced
  another number of tokens than ``new_tokens``.

The model has the tiny profile's sizes (``config.TINY_LLM``, ``EncoderConfig.tiny``) with random
weights unless ``run_dir`` names a trained run: speed depends on the sizes, not on the weights.
Each path runs ``repeats`` times after one warm-up; the fastest run counts (least disturbed by
other users of a shared machine). Torch runs on one thread by default (``threads``; see
:func:`torch_threads`). The saving grows with the model: recomputing a ~170-token sequence is
cheap for a 1 M-parameter LLM, whose per-token cost is mostly Python and kernel-launch overhead;
pass ``llm_sizes`` to measure a larger one.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path
from typing import Any

GOAL = 5.0
#: Stop string that no model here writes (greedy decoding never reproduces 32 random letters).
NEVER_STOP = "qZx7Wv2KpL9mRt4YbN8cJ3hF6dS1gTq0"


class TokenCounter:
    """A ``generate`` streamer that only records the token ids it receives."""

    def __init__(self) -> None:
        self.tokens: list[int] = []

    def put(self, value: Any) -> None:
        self.tokens.extend(int(t) for t in value.flatten().tolist())

    def end(self) -> None:
        pass


def _load_feature_cache_benchmark():
    """The sibling ``feature_cache.py`` (loaded by path: benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("_bench_feature_cache", Path(__file__).with_name("feature_cache.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_feature_cache = _load_feature_cache_benchmark()
#: ``torch_threads(n)``: set torch's thread count for a block, then restore (shared with feature_cache)
torch_threads = _feature_cache.torch_threads


def build_model(image_size: int = 128, llm_sizes: dict | None = None, encoder_sizes: dict | None = None,
                seed: int = 0):
    """The feature-cache benchmark's random tiny ``XrayGPT``, in eval mode (same arguments)."""
    return _feature_cache.build_model(image_size, llm_sizes, encoder_sizes, seed).eval()


def _timed_generation(model, features, use_cache: bool, new_tokens: int) -> tuple[float, list[int]]:
    counter = TokenCounter()
    start = time.perf_counter()
    model.describe(features=features, max_new_tokens=new_tokens, use_cache=use_cache, streamer=counter,
                   stop_string=NEVER_STOP)
    return time.perf_counter() - start, counter.tokens




def run(new_tokens: int = 128, repeats: int = 2, image_size: int = 128, llm_sizes: dict | None = None,
        encoder_sizes: dict | None = None, run_dir: str | None = None, threads: int | None = 1) -> dict:
    """Time greedy generation of exactly ``new_tokens`` tokens with and without the KV cache."""
    with torch_threads(threads):
        return _measure(new_tokens, repeats, image_size, llm_sizes, encoder_sizes, run_dir)


def _measure(new_tokens: int, repeats: int, image_size: int, llm_sizes: dict | None,
             encoder_sizes: dict | None, run_dir: str | None) -> dict:
    import torch

    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.data.synthetic.world import render_case

    if new_tokens < 1 or repeats < 1:
        raise ValueError(f"new_tokens and repeats must be >= 1, got {new_tokens}, {repeats}")
    if run_dir is not None:
        from xraygpt_lab.runs import load_run

        model = load_run(run_dir, device="cpu")
        image_size = model.image_size
    else:
        model = build_model(image_size, llm_sizes, encoder_sizes)
    eos = model.tokenizer.eos_token_id

    def ban_eos(_module, _inputs, logits):  # [B, T, vocab]
        logits = logits.clone()
        logits[..., eos] = float("-inf")
        return logits

    pixels = preprocess(render_case(12345, image_size).image, image_size)[None]  # [1, 1, S, S]
    features = model.encode_image(pixels)  # [1, N, d]: the encoder is not part of the comparison
    prompt_tokens = model.prompt_wrap(model.embed_image(features=features),
                                      [model_prompt()]).inputs_embeds.shape[1]
    if prompt_tokens + new_tokens > model.context_length:
        raise ValueError(f"prompt ({prompt_tokens}) + {new_tokens} new tokens exceed the context "
                         f"({model.context_length})")
    handle = model.llm.get_output_embeddings().register_forward_hook(ban_eos)
    try:
        timings: dict[bool, list[float]] = {True: [], False: []}
        tokens: dict[bool, list[int]] = {}
        for use_cache in (True, False):
            _timed_generation(model, features, use_cache, min(new_tokens, 8))  # warm-up
            for _ in range(repeats):
                seconds, tokens[use_cache] = _timed_generation(model, features, use_cache, new_tokens)
                timings[use_cache].append(seconds)
                if len(tokens[use_cache]) != new_tokens:
                    raise RuntimeError(f"use_cache={use_cache} generated {len(tokens[use_cache])} tokens, "
                                       f"expected exactly {new_tokens}")
    finally:
        handle.remove()
    cached, uncached = min(timings[True]), min(timings[False])
    return {
        "benchmark": "kv_cache", "kv_cache_speedup": round(uncached / cached, 2),
        "new_tokens": new_tokens, "prompt_tokens": int(prompt_tokens), "repeats": repeats,
        "cached_s": round(cached, 3), "uncached_s": round(uncached, 3),
        "cached_tokens_per_s": round(new_tokens / cached, 1),
        "uncached_tokens_per_s": round(new_tokens / uncached, 1),
        "same_tokens": tokens[True] == tokens[False],  # greedy: the cache must not change the text
        "model": run_dir or f"random weights, llm {llm_sizes or 'tiny profile'}, image {image_size}",
        "forced_length": "EOS logit set to -inf on lm_head + unreachable stop string; tokens counted",
        "torch_threads": torch.get_num_threads(), "goal": f">= {GOAL}x",
        "meets_goal": uncached / cached >= GOAL, "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def model_prompt() -> str:
    """The prompt ``describe`` sends (XrayGPT's first alignment instruction)."""
    from xraygpt_lab.models.conversation import xraygpt_prompt

    return xraygpt_prompt("Describe the given chest x-ray image in detail.")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--run", default=None, help="a trained run folder (default: random tiny-size weights)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see torch_threads)")
    a = ap.parse_args()
    r = run(a.new_tokens, a.repeats, run_dir=a.run, threads=a.threads)
    print(f"kv_cache: {r['new_tokens']} new tokens after a {r['prompt_tokens']}-token prompt: "
          f"cached {r['cached_s']} s ({r['cached_tokens_per_s']} tok/s), uncached {r['uncached_s']} s "
          f"({r['uncached_tokens_per_s']} tok/s): {r['kv_cache_speedup']}x (goal >= {GOAL}x: "
          f"{'OK' if r['meets_goal'] else 'MISSED'}); same tokens: {r['same_tokens']}; {r['torch_threads']} threads; load {r['load_avg_1m']}")
