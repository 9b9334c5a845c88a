"""Whether a stage trains under bf16 autocast: ``True``, ``False`` or ``"auto"``.

``"auto"`` on a GPU follows ``torch.cuda.is_bf16_supported()``. On a CPU, native bf16 (oneDNN's
check: AVX-512 BF16 or AMX) is necessary but not enough: on a 2-core AMD EPYC with AVX-512 BF16
the tiny encoder's step took about 25 % less time under autocast, on a 2-core Intel Xeon with
AVX-512 BF16 but no usable AMX about 20 % more (158-193 against 133-137 ms a step, measured
alternately), on a 2-core Xeon whose AMX works about 15 % less (118 against 138 ms). So where the CPU has native bf16, ``"auto"`` times the stage's own forward and
backward pass both ways and takes bf16 only where it is clearly faster (:data:`BF16_MARGIN`).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

#: bf16 must take at most this share of float32's time: near a tie float32 wins (no rounding).
BF16_MARGIN = 0.95


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bf16 natively (CUDA: ``is_bf16_supported``; CPU: oneDNN's check)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # oneDNN's own check: AVX-512 BF16 or AMX on this CPU
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_is_faster(run_step: Callable[[], None], device: str | torch.device = "cpu", trials: int = 3) -> bool:
    """Time ``run_step`` (one forward and backward pass) under bf16 autocast and in float32.

    One warm-up call each, then ``trials`` calls each, alternated so that a machine slowing down
    affects both; compares the medians. The torch random state is restored afterwards, so the
    probe leaves a seeded training unchanged.
    """
    device_type = torch.device(device).type
    rng = torch.get_rng_state()
    seconds: dict[bool, list[float]] = {True: [], False: []}
    try:
        for trial in range(trials + 1):
            for bf16 in (True, False):
                start = time.perf_counter()
                with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                    run_step()
                if device_type == "cuda":
                    torch.cuda.synchronize()
                if trial:  # the first round warms up both paths
                    seconds[bf16].append(time.perf_counter() - start)
    finally:
        torch.set_rng_state(rng)
    return statistics.median(seconds[True]) <= BF16_MARGIN * statistics.median(seconds[False])


def resolve_bf16(bf16: bool | str, device: str | torch.device = "cpu",
                 probe: Callable[[], None] | None = None) -> bool:
    """``True`` / ``False`` as given; ``"auto"``: bf16 where ``device`` computes it natively and,
    on a CPU given a ``probe`` (one training step's forward and backward), where it is also faster."""
    if isinstance(bf16, bool):
        return bf16
    if bf16 != "auto":
        raise ValueError(f"bf16 must be True, False or 'auto', got {bf16!r}")
    if not native_bf16(device):
        return False
    if torch.device(device).type == "cuda" or probe is None:
        return True
    return bf16_is_faster(probe, device)
