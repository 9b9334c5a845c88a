"""Exercise for notebook 07 (evaluation): clinical-efficacy F1 from label dicts.

Clinical efficacy (Chen et al. 2020, R2Gen, Sec. 4.2; ``eval.metrics.clinical_efficacy``): label
the generated and the reference report with the same labeler, then score the labels as a
multi-label classification. A label counts as positive only when it is ``1`` (``0``, ``-1``
uncertain and ``None`` not mentioned are not positive). *Micro* pools TP/FP/FN over all
observations; *macro* averages the per-observation F1s, leaving out observations that have no
positive on either side (their F1 is undefined). The student writes

    ce_scores(pred_labels, ref_labels, observations) -> {"micro_precision", "micro_recall",
                                                         "micro_f1", "macro_f1"}

(``micro_precision``/``micro_recall`` are ``None`` when undefined, as in the library).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..eval.metrics import clinical_efficacy
from .checking import Case, CheckResult, Mistake, run_check

Labels = Mapping[str, int | None]
KEYS = ("micro_precision", "micro_recall", "micro_f1", "macro_f1")


def ce_scores(pred_labels: Sequence[Labels], ref_labels: Sequence[Labels], observations: Sequence[str]) -> dict:
    """Reference: the four headline numbers of :func:`~xraygpt_lab.eval.metrics.clinical_efficacy`."""
    scores = clinical_efficacy(pred_labels, ref_labels, observations)
    return {key: scores[key] for key in KEYS}


OBSERVATIONS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Edema", "Fracture")


def _random_labels(rng: np.random.Generator, n: int, p_positive: float) -> list[dict]:
    values = [1, 0, -1, None]
    probs = [p_positive, (1 - p_positive) * 0.5, (1 - p_positive) * 0.2, (1 - p_positive) * 0.3]
    return [{obs: values[rng.choice(4, p=probs)] for obs in OBSERVATIONS} for _ in range(n)]


def _cases() -> list[Case]:
    rng = np.random.default_rng(7)
    pred, ref = _random_labels(rng, 12, 0.3), _random_labels(rng, 12, 0.35)
    for labels in (pred, ref):  # "Fracture": never positive → undefined F1, left out of macro
        for lab in labels:
            lab["Fracture"] = lab["Fracture"] if lab["Fracture"] != 1 else 0
    hand_pred = [{"Cardiomegaly": 1, "Pleural Effusion": 1}, {"Cardiomegaly": 0, "Pleural Effusion": -1},
                 {"Cardiomegaly": 1, "Pleural Effusion": None}]
    hand_ref = [{"Cardiomegaly": 1, "Pleural Effusion": 0}, {"Cardiomegaly": 1, "Pleural Effusion": 1},
                {"Cardiomegaly": None, "Pleural Effusion": -1}]
    return [
        Case("3 hand-written reports (1 / 0 / -1 / None)", (hand_pred, hand_ref, ("Cardiomegaly", "Pleural Effusion"))),
        Case("12 random reports, 5 observations (one never positive)", (pred, ref, OBSERVATIONS)),
        Case("a system that predicts nothing positive", ([{obs: 0 for obs in OBSERVATIONS}] * 12, ref, OBSERVATIONS)),
    ]


def _confusion(pred, ref, observations, positive=(1,)):
    p = np.array([[lab.get(o) in positive for o in observations] for lab in pred])
    r = np.array([[lab.get(o) in positive for o in observations] for lab in ref])
    return (p & r).sum(0), (p & ~r).sum(0), (~p & r).sum(0)


def _macro_zero(pred, ref, observations):
    out = ce_scores(pred, ref, observations)
    tp, fp, fn = _confusion(pred, ref, observations)
    f1 = [2 * a / (2 * a + b + c) if (a + b + c) else 0.0 for a, b, c in zip(tp, fp, fn)]
    out["macro_f1"] = float(np.mean(f1))
    return out


def _macro_of_pr(pred, ref, observations):
    out = ce_scores(pred, ref, observations)
    tp, fp, fn = _confusion(pred, ref, observations)
    prec = [a / (a + b) for a, b in zip(tp, fp) if a + b]
    rec = [a / (a + c) for a, c in zip(tp, fn) if a + c]
    mp, mr = float(np.mean(prec)) if prec else 0.0, float(np.mean(rec)) if rec else 0.0
    out["macro_f1"] = 2 * mp * mr / (mp + mr) if mp + mr else 0.0
    return out


def check_ce_scores(answer: Callable[..., dict], *, strict: bool = False) -> CheckResult:
    """Check ``answer(pred_labels, ref_labels, observations) -> dict`` against ``clinical_efficacy``."""

    def headline(**kwargs):
        return lambda p, r, o: {k: v for k, v in clinical_efficacy(p, r, o, **kwargs).items() if k in KEYS}

    def not_none(p, r, o):
        fix = lambda labels: [{k: (1 if v is not None else None) for k, v in lab.items()} for lab in labels]  # noqa: E731
        return ce_scores(fix(p), fix(r), o)

    mistakes = [
        Mistake("uncertain mentions (-1) were counted as positive; only 1 is positive here",
                headline(uncertain_as_positive=True)),
        Mistake("you counted every *mentioned* label (0 and -1 too) as positive; 0 means 'negative'",
                not_none),
        Mistake("predictions and references are swapped, so precision and recall are exchanged: "
                "precision = TP / (what the *generated* reports claim)", lambda p, r, o: ce_scores(r, p, o)),
        Mistake("an observation with no positive on either side has an undefined F1: leave it out of the "
                "macro mean instead of counting it as 0", _macro_zero),
        Mistake("macro F1 is the mean of the per-observation F1s, not the F1 of the macro precision and "
                "macro recall", _macro_of_pr),
    ]
    return run_check("clinical-efficacy precision / recall / F1", answer, ce_scores, _cases(), mistakes,
                     strict=strict, hint="binarise (value == 1), count TP/FP/FN per observation; micro pools "
                                         "the counts, macro averages the defined per-observation F1s")


__all__ = ["KEYS", "OBSERVATIONS", "ce_scores", "check_ce_scores"]
