"""Solution for notebook 07: clinical-efficacy precision, recall and F1."""
from __future__ import annotations


def ce_scores(pred_labels, ref_labels, observations) -> dict:
    totals = {"tp": 0, "fp": 0, "fn": 0}
    f1s = []
    for obs in observations:
        tp = fp = fn = 0
        for pred, ref in zip(pred_labels, ref_labels):
            p, r = pred.get(obs) == 1, ref.get(obs) == 1  # only 1 is positive
            tp += p and r
            fp += p and not r
            fn += r and not p
        if tp + fp + fn:  # F1 undefined when nothing was claimed and nothing was there
            f1s.append(2 * tp / (2 * tp + fp + fn))
        totals["tp"] += tp
        totals["fp"] += fp
        totals["fn"] += fn
    tp, fp, fn = totals["tp"], totals["fp"], totals["fn"]
    return {
        "micro_precision": tp / (tp + fp) if tp + fp else None,
        "micro_recall": tp / (tp + fn) if tp + fn else None,
        "micro_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
    }
