"""Alignment of a tiny XrayGPT, in one process or data-parallel under ``accelerate launch``.

Everything is built from ``--seed`` (tokenizer, LLM, encoder, projection, cached features), so
every process holds the same model and data. The main process writes a JSON summary: the loss
history, the final projection (values and SHA-256), each rank's projection checksum and the
example indices each rank drew at each step (recorded from the features that actually went
through the model, gathered with ``accelerate``).

Two CPU processes (gloo)::

    XRAYGPT_DEVICE=cpu OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 \\
        --num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port 29517 \\
        tests/multiprocess_align.py --out mp.json --checkpoint ckpt/stage.safetensors

``--multi_gpu`` is what starts N workers (through torchrun); on a machine without a GPU, or with
``XRAYGPT_DEVICE=cpu``, the workers are CPU processes on the gloo backend. ``--cpu`` alone starts
ONE process unless an MPI hostfile is given. ``--global-batch`` trains one process on the
concatenation of the batches that ranks 0 .. ``--world``-1 would draw (the same global batch);
``--stop-after K`` ends the run after K steps, and the same command resumes from the checkpoint.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

import torch

from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.llm import tiny_llm, train_tokenizer
from xraygpt_lab.models.xraygpt import XrayGPT
from xraygpt_lab.train.align import AlignmentSet, align_stage, alignment_batches
from xraygpt_lab.atomic import atomic_write_text
from xraygpt_lab.train.loop import make_accelerator, step_rng, train_stage
from xraygpt_lab.train.schedule import StageConfig

REPORTS = [
    "There is a small left pleural effusion. The heart size is normal.",
    "The heart is enlarged. No pleural effusion or pneumothorax.",
    "Lungs are clear. No acute cardiopulmonary process.",
    "There is a right pneumothorax. No effusion.",
    "Mild cardiomegaly with a small right pleural effusion and basilar atelectasis.",
    "No focal consolidation.",
]
IMAGES = 12  # cached "images": random encoder tokens, one target summary each
#: Targets are cut at this many tokens (all six summaries are longer), so every example carries the
#: same number of labelled tokens: the mean of the ranks' mean losses (DDP) is then the same
#: objective as one process's token-weighted mean over the global batch. 160 (XrayGPT's) keeps
#: the summaries whole, and the two objectives differ slightly.
TARGET_TOKENS = 8


def build(seed: int, max_target_tokens: int = TARGET_TOKENS) -> tuple[XrayGPT, AlignmentSet]:
    """A tiny XrayGPT and its alignment set, a deterministic function of ``seed``."""
    tokenizer = train_tokenizer(REPORTS * 10 + ["###Patient: <Img><ImageHere></Img> Describe. ###Doctor: "],
                                vocab_size=320)
    llm = tiny_llm(tokenizer, seed=seed, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, max_position_embeddings=256)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = VisionEncoder(EncoderConfig(image_size=32, patch_size=8, embed_dim=16, depths=[1, 1],
                                              num_heads=[2, 2], window_size=2, projection_dim=16))
        # the projection's initial values come from ``seed`` too
        model = XrayGPT(encoder, llm, tokenizer, max_target_tokens=max_target_tokens)
    features = torch.randn(IMAGES, 4, model.projection.in_features,
                           generator=torch.Generator().manual_seed(seed + 1))
    return model, AlignmentSet(features, [REPORTS[i % len(REPORTS)] for i in range(IMAGES)])


def stage_config(steps: int, batch_size: int, seed: int, save_every: int) -> StageConfig:
    """A short stage with a rate high enough for the projection to move visibly in a few steps."""
    return StageConfig(name="mp-align", steps=steps, batch_size=batch_size, init_lr=3e-3, min_lr=1e-3,
                       warmup_lr=1e-4, warmup_steps=2, seed=seed, save_every=save_every)


def global_batches(data: AlignmentSet, batch_size: int, seed: int, world: int):
    """``make_batch`` for one process: ranks 0 .. world-1's batches of each step, concatenated."""
    per_rank = alignment_batches(data, batch_size)

    def make_batch(step: int, rng: random.Random) -> dict[str, Any]:
        parts = [per_rank(step, step_rng(seed, step, r)) for r in range(world)]
        return {"prompts": [p for b in parts for p in b["prompts"]],
                "targets": [t for b in parts for t in b["targets"]],
                "features": torch.cat([b["features"] for b in parts])}
    return make_batch


def record_draws(model: XrayGPT, data: AlignmentSet) -> list[list[int]]:
    """Record, per forward pass, which rows of ``data.features`` went through the projection."""
    draws: list[list[int]] = []
    table = data.features.flatten(1)  # [M, N*d]

    def hook(module, inputs, output) -> None:
        rows = inputs[0].detach().cpu().flatten(1)  # [B, N*d]
        match = (rows[:, None, :] == table[None]).all(-1)  # [B, M]
        if not bool(match.any(-1).all()):
            raise RuntimeError("a batch row matches no cached image")
        draws.append(match.float().argmax(-1).tolist())

    model.hook_image_features.register_forward_hook(hook)
    return draws


def projection_summary(model: XrayGPT) -> dict[str, Any]:
    """The projection's values and a SHA-256 of its float32 bytes."""
    weight = model.projection.weight.detach().cpu().float().contiguous()
    bias = model.projection.bias.detach().cpu().float().contiguous()
    digest = hashlib.sha256(weight.numpy().tobytes() + bias.numpy().tobytes()).hexdigest()
    return {"sha256": digest, "weight": weight.tolist(), "bias": bias.tolist()}


def run(out: str | Path, checkpoint: str | Path | None = None, *, steps: int = 8, batch_size: int = 3,
        seed: int = 0, save_every: int = 2, stop_after: int | None = None, global_batch: bool = False,
        world: int = 2, max_target_tokens: int = TARGET_TOKENS) -> dict[str, Any] | None:
    """Train, then (main process) write and return the summary; other ranks return ``None``."""
    from accelerate.utils import gather_object

    accelerator = make_accelerator()
    model, data = build(seed, max_target_tokens)
    stage = stage_config(steps, batch_size, seed, save_every)
    draws = record_draws(model, data)
    if global_batch:
        if accelerator.num_processes > 1:
            raise SystemExit("--global-batch runs in a single process")
        result = train_stage(model, stage, global_batches(data, batch_size, seed, world), checkpoint,
                             accelerator=accelerator, stop_after=stop_after, progress=False)
    else:
        result = align_stage(model, data, stage, checkpoint, accelerator=accelerator,
                             stop_after=stop_after, progress=False)
    first = result.steps_done - len(draws)  # > 0 after a resume
    vocab = json.dumps(model.tokenizer.get_vocab(), sort_keys=True).encode()
    mine = {"rank": accelerator.process_index, "tokenizer": hashlib.sha256(vocab).hexdigest(),
            "projection_sha256": projection_summary(model)["sha256"],
            "draws": {str(first + k + 1): d for k, d in enumerate(draws)}}  # step numbers as in history
    ranks = gather_object([mine])
    summary = None
    if accelerator.is_main_process:
        summary = {"num_processes": accelerator.num_processes, "global_batch": global_batch,
                   "distributed_type": str(accelerator.distributed_type), "steps_done": result.steps_done,
                   "finished": result.finished, "history": result.history,
                   "projection": projection_summary(model), "ranks": sorted(ranks, key=lambda r: r["rank"])}
        atomic_write_text(out, json.dumps(summary, indent=1))
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        accelerator.end_training()  # tear the process group down cleanly
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON summary (written by the main process)")
    parser.add_argument("--checkpoint", help="stage checkpoint; resumed from when it exists")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=3, help="per process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=2)
    parser.add_argument("--stop-after", type=int, help="end after this many steps (an interruption)")
    parser.add_argument("--global-batch", action="store_true",
                        help="one process on the concatenated batches of ranks 0 .. --world-1")
    parser.add_argument("--world", type=int, default=2, help="ranks whose batches --global-batch concatenates")
    parser.add_argument("--max-target-tokens", type=int, default=TARGET_TOKENS,
                        help="cut targets here (160 keeps them whole; unequal lengths weight DDP's mean differently)")
    args = parser.parse_args(argv)
    summary = run(args.out, args.checkpoint, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                  save_every=args.save_every, stop_after=args.stop_after, global_batch=args.global_batch,
                  world=args.world, max_target_tokens=args.max_target_tokens)
    if summary is not None:
        losses = " ".join(f"{h['loss']:.4f}" for h in summary["history"])
        print(f"{summary['num_processes']} process(es), {summary['steps_done']} steps, loss {losses}, "
              f"projection {summary['projection']['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
