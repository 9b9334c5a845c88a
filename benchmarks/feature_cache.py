"""Benchmark: one alignment epoch with cached encoder features vs encoding every image (goal <= 0.3).

XrayGPT trains only the linear projection (arXiv 2306.07971, Sec. 3), so the frozen encoder's
output for an image never changes: ``train.feature_cache`` computes it once and keeps it on disk.
Both epochs below run the same loop over the same images, batches, prompts and targets (the
walkthrough's stage-1 batch size, a fresh AdamW on the projection); they differ only in where
the encoder tokens come from:

* **uncached** — ``model(prompts, targets, pixel_values=batch)``: the Swin encoder runs on
  every batch;
* **cached** — the epoch starts by reading every image's tokens from a warm ``FeatureCache``
  (hash of the image, one safetensors file per image, as the walkthrough does), then
  ``model(prompts, targets, features=batch)``.

``feature_cache_ratio`` = cached epoch time / uncached epoch time. Filling the cache (the first
epoch's extra cost) is reported beside it as ``cache_fill_s``. Each kind of epoch runs
``repeats`` times, alternating, and the fastest counts; torch runs on one thread by default
(``threads``; see :func:`torch_threads`). Sizes are the tiny profile's, with random
weights (time does not depend on the weights). The cache saves the encoder's forward pass only:
the gradient still flows back through the frozen LLM to the projection, so the ratio can only
be small where the encoder costs much more than the LLM's forward + backward.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import tempfile
import time
from collections.abc import Iterator

GOAL = 0.3


def build_model(image_size: int = 128, llm_sizes: dict | None = None, encoder_sizes: dict | None = None,
                seed: int = 0):
    """A randomly initialised ``XrayGPT`` at the tiny profile's sizes (or ``llm_sizes`` /
    ``encoder_sizes``, keyword arguments of ``LlamaConfig`` / ``EncoderConfig``)."""
    from dataclasses import asdict

    import torch

    from xraygpt_lab.config import TINY_RECIPE
    from xraygpt_lab.data.text.instructions import ALIGNMENT_INSTRUCTIONS
    from xraygpt_lab.data.synthetic.world import generate_cases
    from xraygpt_lab.models.conversation import xraygpt_prompt
    from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
    from xraygpt_lab.models.llm import tiny_llm, train_tokenizer
    from xraygpt_lab.models.xraygpt import XrayGPT

    sizes = dict(asdict(TINY_RECIPE.llm_arch) if llm_sizes is None else llm_sizes)
    corpus = [c.summary for c in generate_cases(200, 32, seed=seed + 97)]
    corpus += [xraygpt_prompt(q) for q in ALIGNMENT_INSTRUCTIONS]
    tokenizer = train_tokenizer(corpus, vocab_size=sizes.pop("vocab_size", 1024))
    llm = tiny_llm(tokenizer, seed=seed, **sizes)
    torch.manual_seed(seed)
    config = EncoderConfig(image_size=image_size, **encoder_sizes) if encoder_sizes else EncoderConfig.tiny(image_size)
    encoder = VisionEncoder(config)
    return XrayGPT(encoder, llm, tokenizer)


def _epoch(model, batches: list[dict], optimizer) -> float:
    """One pass of projection training over ``batches``; returns the mean loss."""
    model.train()
    losses = []
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return sum(losses) / len(losses)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)`` (unchanged when None), then restore.

    On a shared, oversubscribed machine two OpenMP threads wait for each other at every small
    kernel (a single-token attention call can take milliseconds instead of microseconds);
    ``threads=1`` measures the work rather than that contention.
    """
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run(n_images: int = 128, batch_size: int | None = None, image_size: int = 128,
        llm_sizes: dict | None = None, encoder_sizes: dict | None = None, repeats: int = 2,
        seed: int = 0, threads: int | None = 1) -> dict:
    """Time uncached and cached alignment epochs over ``n_images`` synthetic images.

    Each kind runs ``repeats`` times, alternating; the fastest epoch of each kind counts.
    """
    with torch_threads(threads):
        return _measure(n_images, batch_size, image_size, llm_sizes, encoder_sizes, repeats, seed)


def _measure(n_images: int, batch_size: int | None, image_size: int, llm_sizes: dict | None,
             encoder_sizes: dict | None, repeats: int, seed: int) -> dict:
    import torch

    from xraygpt_lab.config import TINY_RECIPE
    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.data.text.instructions import ALIGNMENT_INSTRUCTIONS
    from xraygpt_lab.data.synthetic.world import generate_cases
    from xraygpt_lab.models.conversation import xraygpt_prompt
    from xraygpt_lab.train.feature_cache import FeatureCache

    batch_size = batch_size or TINY_RECIPE.stage1.batch
    if n_images < 1 or batch_size < 1 or repeats < 1:
        raise ValueError(f"n_images, batch_size and repeats must be >= 1, got {n_images}, {batch_size}, {repeats}")
    cases = list(generate_cases(n_images, image_size, seed=seed + 4242))
    pixels = torch.stack([preprocess(c.image, image_size) for c in cases])  # [M, 1, S, S]
    rng = random.Random(seed)
    plan = [(list(range(i, min(i + batch_size, n_images))),
             [xraygpt_prompt(rng.choice(ALIGNMENT_INSTRUCTIONS)) for _ in range(i, min(i + batch_size, n_images))])
            for i in range(0, n_images, batch_size)]
    targets = [c.summary for c in cases]

    def batches(source: str, tensor: torch.Tensor) -> list[dict]:
        return [{"prompts": prompts, "targets": [targets[i] for i in idx], source: tensor[idx]}
                for idx, prompts in plan]

    model = build_model(image_size, llm_sizes, encoder_sizes, seed)
    initial = {k: v.clone() for k, v in model.projection.state_dict().items()}

    def fresh_optimizer():
        model.projection.load_state_dict(initial)  # both epochs start from the same weights
        return torch.optim.AdamW(model.projection.parameters(), lr=1e-3, weight_decay=0.05)

    # warm-up (allocator, kernels), not timed
    _epoch(model, batches("pixel_values", pixels)[:1], fresh_optimizer())
    uncached_times, cached_times, read_times = [], [], []
    with tempfile.TemporaryDirectory() as root:
        cache = FeatureCache(root, model.encoder)
        start = time.perf_counter()
        cache.features(pixels)  # fill: encodes every image once
        fill_s = time.perf_counter() - start
        for _ in range(repeats):  # alternate, so that a burst of load elsewhere hits both
            start = time.perf_counter()
            uncached_loss = _epoch(model, batches("pixel_values", pixels), fresh_optimizer())
            uncached_times.append(time.perf_counter() - start)

            start = time.perf_counter()
            features = cache.features(pixels)  # [M, N, d] read back from disk
            read_times.append(time.perf_counter() - start)
            cached_loss = _epoch(model, batches("features", features), fresh_optimizer())
            cached_times.append(time.perf_counter() - start)
        hits, misses = cache.hits, cache.misses
    uncached_s, cached_s, read_s = min(uncached_times), min(cached_times), min(read_times)
    ratio = cached_s / uncached_s
    return {
        "benchmark": "feature_cache", "feature_cache_ratio": round(ratio, 3),
        "n_images": n_images, "batch_size": batch_size, "batches": len(plan), "image_size": image_size,
        "repeats": repeats,
        "uncached_epoch_s": round(uncached_s, 2), "cached_epoch_s": round(cached_s, 2),
        "cache_read_s": round(read_s, 2), "cache_fill_s": round(fill_s, 2),
        "cache_hits": hits, "cache_misses": misses,
        # same weights, batches and order: the two epochs must compute the same losses
        "loss_uncached": round(uncached_loss, 5), "loss_cached": round(cached_loss, 5),
        "goal": f"<= {GOAL}", "meets_goal": ratio <= GOAL, "torch_threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see torch_threads)")
    a = ap.parse_args()
    r = run(a.n, a.batch_size, repeats=a.repeats, threads=a.threads)
    print(f"feature_cache: {r['n_images']} images, {r['batches']} batches of {r['batch_size']}: uncached epoch "
          f"{r['uncached_epoch_s']} s, cached {r['cached_epoch_s']} s (of which reading the cache "
          f"{r['cache_read_s']} s; filling it once {r['cache_fill_s']} s): ratio {r['feature_cache_ratio']} "
          f"(goal <= {GOAL}: {'OK' if r['meets_goal'] else 'MISSED'}); losses {r['loss_uncached']} / "
          f"{r['loss_cached']}; {r['torch_threads']} threads; load {r['load_avg_1m']}")
