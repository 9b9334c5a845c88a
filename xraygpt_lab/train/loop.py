"""One training loop for every stage (LLM domain fine-tuning, alignment stage 1 and 2).

Built on ``accelerate`` so that the same code runs on the CPU, on one GPU (bf16 autocast) or on
several with ``accelerate launch``. Batches come from ``make_batch(step, rng)``, a pure function
of the step (and the process rank), so resuming needs no data-loader state: a stage stopped at
step k and resumed from its checkpoint replays exactly the batches it would have seen.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..device import resolve_device
from .checkpoint import load_checkpoint, save_checkpoint
from .schedule import StageConfig, make_scheduler

Batch = dict[str, Any]
#: Gradient checkpointing is on by default on a GPU for LLMs of at least this many parameters: it
#: saves a 7B model's activation memory; a tiny model only pays the recomputation.
CHECKPOINTING_MIN_PARAMETERS = 1_000_000_000


@dataclass
class StageResult:
    """What :func:`train_stage` returns."""

    history: list[dict] = field(default_factory=list)  # one {"step", "loss", "lr"} per step
    steps_done: int = 0
    finished: bool = False
    seconds: float = 0.0  # training time, summed over the segments of a resumed stage
    resumed_from: int = 0  # the checkpoint's step this call started from (0: from the start)


def make_accelerator(device: str | torch.device | None = None):
    """An ``accelerate.Accelerator`` on the toolkit's device (:func:`xraygpt_lab.device.resolve_device`).

    Under ``accelerate launch`` each process takes its own GPU (or CPU process) from the launcher.
    Mixed precision is not the accelerator's business here: :func:`train_stage` turns on bf16
    autocast per stage (``bf16``), because accelerate fixes one precision per process and a
    notebook trains several stages in one process. In a single process a later call may switch
    between CPU and GPU (accelerate otherwise keeps the first device for the whole process).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    cpu = resolve_device(device).type == "cpu"
    if AcceleratorState._shared_state and PartialState().num_processes == 1 \
            and (AcceleratorState().device.type == "cpu") != cpu:
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=cpu)


def step_rng(seed: int, step: int, rank: int = 0) -> random.Random:
    """The random source for one step's batch: depends only on (seed, step, rank)."""
    return random.Random(f"{seed}:{step}:{rank}")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as in MiniGPT-4: no weight decay on biases and 1-d (norm) parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def fusable(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW (one kernel over all tensors, the same update as the per-tensor
    loop) takes ``params``: floating-point tensors on the CPU or a CUDA device. On the CPU it makes
    the tiny encoder's step about 6 % faster. Its moments must share their parameter's memory
    layout, which ``checkpoint.load_optimizer_state`` restores."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch's tensors on the training device (other values, e.g. prompt strings, as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_stage(model: nn.Module, stage: StageConfig, make_batch: Callable[[int, random.Random], Batch],
                checkpoint: str | Path | None = None, *, accelerator: Any = None,
                stop_after: int | None = None, progress: bool = True,
                gradient_checkpointing: bool | None = None, bf16: bool | None = None,
                after_step: Callable[[], None] | None = None,
                on_step: Callable[[str, dict], None] | None = None,
                extra: dict | None = None) -> StageResult:
    """Train ``model``'s trainable parameters for ``stage.steps`` optimiser steps.

    ``model(**make_batch(step, rng))`` must return an object with ``.loss``. When ``checkpoint``
    exists the stage resumes from it (weights, AdamW moments, schedule position, RNG, loss
    history, training time so far) and reaches the same weights as an uninterrupted run. ``stop_after`` ends this call
    after that many steps (simulating an interruption). Gradient checkpointing of the LLM is
    switched on by default on a GPU for LLMs of ``CHECKPOINTING_MIN_PARAMETERS`` or more (it saves
    the 7B model's activation memory). ``bf16``: bfloat16 autocast of the forward pass (default:
    on a GPU; the optimiser and the trainable weights stay float32, as in MiniGPT-4's AMP).
    When the model's output carries ``parts`` (a dict of named loss parts, floats or None), each
    history row records them. ``after_step`` runs after every optimiser step (e.g. a clamp);
    ``on_step(stage name, history row)`` after each row is recorded (e.g. a live loss plot,
    ``widgets.live.LiveCurves``). ``extra``: JSON-serialisable entries saved with each checkpoint
    (``train.checkpoint.checkpoint_extra`` reads them back, e.g. the precision a stage chose).
    """
    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    accelerator = accelerator or make_accelerator()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"stage {stage.name!r}: the model has no trainable parameters")
    optimizer = torch.optim.AdamW(parameter_groups(model, stage.weight_decay), lr=stage.init_lr,
                                  betas=(0.9, 0.999), fused=fusable(params))
    scheduler = make_scheduler(optimizer, stage)
    step, history, before = 0, [], 0.0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.is_file():
        step, history, _, before = load_checkpoint(checkpoint, model, optimizer, scheduler)
    first = step
    if step >= stage.steps:
        return StageResult(history=history, steps_done=step, finished=True, seconds=before, resumed_from=first)

    llm = getattr(model, "llm", model)
    if gradient_checkpointing is None:  # on a GPU, for LLMs big enough for activations to matter (7B)
        gradient_checkpointing = accelerator.device.type == "cuda" and \
            sum(p.numel() for p in llm.parameters()) >= CHECKPOINTING_MIN_PARAMETERS
    if gradient_checkpointing and hasattr(llm, "gradient_checkpointing_enable"):
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    if bf16 is None:
        bf16 = accelerator.device.type == "cuda"
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(wrapped)
    wrapped.train()
    end = stage.steps if stop_after is None else min(stage.steps, step + stop_after)
    bar = tqdm(total=stage.steps, initial=step, desc=stage.name, disable=not progress or not accelerator.is_main_process,
               leave=False, dynamic_ncols=True)
    try:
        while step < end:
            batch = _to_device(make_batch(step, step_rng(stage.seed, step, accelerator.process_index)),
                               accelerator.device)
            with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16):
                output = wrapped(**batch)
            loss = output.loss
            accelerator.backward(loss)
            if stage.grad_clip is not None:
                accelerator.clip_grad_norm_(params, stage.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
            step += 1
            value = float(accelerator.reduce(loss.detach(), reduction="mean"))
            history.append({"step": step, "loss": round(value, 5), "lr": lr, **getattr(output, "parts", {})})
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
            if on_step is not None and accelerator.is_main_process:
                on_step(stage.name, history[-1])
            if checkpoint is not None and (step % stage.save_every == 0 or step == end):
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save_checkpoint(checkpoint, raw, optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                                    scheduler, step, history, extra=extra,
                                    seconds=before + time.perf_counter() - start_time)
    finally:
        bar.close()
        raw.eval()
        if gradient_checkpointing and hasattr(llm, "gradient_checkpointing_disable"):
            llm.gradient_checkpointing_disable()
    return StageResult(history=history, steps_done=step, finished=step >= stage.steps,
                       seconds=before + time.perf_counter() - start_time, resumed_from=first)
