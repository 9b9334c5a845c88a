"""Exercise for notebook 08 (full scale): the compute of one training step, frozen weights included.

A dense transformer of ``N`` parameters costs about ``2N`` FLOPs per token forward (one multiply
and one add per weight) and ``4N`` backward: ``2N`` for the gradients of the activations and
``2N`` for the gradients of the weights (Kaplan et al. 2020, Sec. 2.1: ``C ≈ 6N`` per token).
A **frozen** block still passes gradients back to the layers below it when something below is
trained — XrayGPT's projection sits under the whole LLM — so it skips only the weight gradients:
``4N`` per token. A frozen block with nothing trainable below it needs no backward at all:
``2N``. The student writes

    step_flops(frozen_params, trainable_params, tokens, backward_through_frozen) -> FLOPs
"""
from __future__ import annotations

from collections.abc import Callable

from .checking import Case, CheckResult, Mistake, run_check


def step_flops(frozen_params: float, trainable_params: float, tokens: float, backward_through_frozen: bool) -> float:
    """Reference: ``tokens · (6 · trainable + (4 if gradients pass through the frozen part else 2) · frozen)``."""
    frozen_cost = 4.0 if backward_through_frozen else 2.0
    return float(tokens * (6.0 * trainable_params + frozen_cost * frozen_params))


def _cases() -> list[Case]:
    return [
        Case("XrayGPT stage 1: a frozen 6.74 B LLM above a 4.2 M projection, 3 × 242 tokens",
             (6.74e9, 4.2e6, 3 * 242, True)),
        Case("the same LLM fully trained (nothing frozen), 1 sample of 512 tokens", (0.0, 6.74e9, 512, True)),
        Case("a frozen encoder below everything trainable: forward only", (28e6, 1e6, 1000, False)),
        Case("LoRA on a frozen 7 B model (adapters everywhere, 4 M trainable)", (6.74e9, 4.0e6, 2048, True)),
    ]


def _relative(got, expected) -> str | None:
    try:
        got = float(got)
    except (TypeError, ValueError):
        return f"expected a number of FLOPs, got {type(got).__name__}"
    if abs(got - expected) <= 1e-6 * max(abs(expected), 1.0):
        return None
    return f"got {got:.4g} FLOPs, expected {expected:.4g} ({got / expected:.2f} × the reference)" if expected else \
        f"got {got:.4g}, expected 0"


def check_step_flops(answer: Callable[..., float], *, strict: bool = False) -> CheckResult:
    """Check ``answer(frozen_params, trainable_params, tokens, backward_through_frozen)`` against :func:`step_flops`."""
    mistakes = [
        Mistake("a frozen block skips only its weight gradients: when gradients must pass through it to a "
                "trainable layer below, it costs 4N per token (forward 2N + activation gradients 2N), not 6N",
                lambda f, t, n, b: n * 6.0 * (f + t)),
        Mistake("gradients that reach the projection must travel back through the frozen LLM: 4N per token, "
                "not the forward's 2N", lambda f, t, n, b: n * (6.0 * t + 2.0 * f)),
        Mistake("a trainable layer costs 6N per token: forward 2N, activation gradients 2N, weight gradients 2N",
                lambda f, t, n, b: n * (2.0 * t + (4.0 if b else 2.0) * f)),
        Mistake("count per token: multiply by the number of tokens", lambda f, t, n, b: 6.0 * t + (4.0 if b else 2.0) * f),
    ]
    return run_check("FLOPs of one training step with frozen weights", answer, step_flops, _cases(), mistakes,
                     compare=_relative, strict=strict,
                     hint="per token: 6 × trainable + (4 if backward_through_frozen else 2) × frozen; "
                          "then × tokens")


__all__ = ["check_step_flops", "step_flops"]
