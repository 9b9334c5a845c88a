"""Report-generation metrics: ROUGE (the paper's metric), BLEU-1..4 and clinical efficacy.

- ROUGE-1/2/L: Google's ``rouge-score`` package, F-measure with Porter stemming, averaged over
  reports — what XrayGPT reports (arXiv 2306.07971, Table 1).
- BLEU-n: NLTK's ``corpus_bleu`` (Papineni et al. 2002) with uniform weights over 1..n-grams,
  on lower-cased word tokens, as report-generation papers (R2Gen and successors) compute it.
- Clinical efficacy (CE): precision / recall / F1 of observation labels extracted from the
  generated report against labels of the reference (Chen et al. 2020, "R2Gen", Sec. 4.2). A label
  counts as positive only when it is 1; 0, -1 (uncertain) and None (not mentioned) are not
  positive, unless ``uncertain_as_positive=True``.
- Bootstrap 95% intervals: percentile bootstrap over reports (Efron & Tibshirani 1993, ch. 13).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation dropped) used by BLEU."""
    return _TOKEN.findall(text.lower())


def _check_pairs(preds: Sequence, refs: Sequence) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if len(preds) == 0:
        raise ValueError("no reports to score")


def rouge_per_report(preds: Sequence[str], refs: Sequence[str]) -> dict[str, np.ndarray]:
    """ROUGE-1/2/L F-measure of each report: ``{"rouge1": [n], "rouge2": [n], "rougeL": [n]}``."""
    from rouge_score import rouge_scorer

    _check_pairs(preds, refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    out = {key: np.zeros(len(preds)) for key in ("rouge1", "rouge2", "rougeL")}
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        scores = scorer.score(ref, pred)  # (target, prediction)
        for key in out:
            out[key][i] = scores[key].fmeasure
    return out


def rouge(preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure over reports."""
    return {key: float(values.mean()) for key, values in rouge_per_report(preds, refs).items()}


def bleu(preds: Sequence[str], refs: Sequence[str], max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..``max_n`` with one reference per report: ``{"bleu1": …, "bleu4": …}``."""
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    _check_pairs(preds, refs)
    hyps = [tokenize(p) for p in preds]
    refs_tok = [[tokenize(r)] for r in refs]
    smooth = SmoothingFunction().method1  # avoids log(0) when a high order has no match
    out = {}
    for n in range(1, max_n + 1):
        weights = tuple([1.0 / n] * n)
        out[f"bleu{n}"] = float(corpus_bleu(refs_tok, hyps, weights=weights, smoothing_function=smooth))
    return out


def _binary(labels: Sequence[Mapping[str, int | None]], observations: Sequence[str],
            uncertain_as_positive: bool) -> np.ndarray:
    positive = {1, -1} if uncertain_as_positive else {1}
    return np.array([[lab.get(obs) in positive for obs in observations] for lab in labels], dtype=bool)


def _prf(tp: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if tp + fp + fn == 0:
        return precision, recall, None  # nothing to find and nothing claimed: F1 undefined
    f1 = 2 * tp / (2 * tp + fp + fn)
    return precision, recall, f1


def clinical_efficacy(pred_labels: Sequence[Mapping[str, int | None]],
                      ref_labels: Sequence[Mapping[str, int | None]],
                      observations: Sequence[str],
                      uncertain_as_positive: bool = False) -> dict:
    """CE precision/recall/F1 per observation, macro (mean of defined F1s) and micro (pooled).

    ``pred_labels[i]`` and ``ref_labels[i]`` map observation names to 1 / 0 / -1 / None.
    Observations absent from both sides (no positives at all) have F1 ``None`` and are left out
    of the macro mean; ``support`` says how many reference positives each has.
    """
    _check_pairs(pred_labels, ref_labels)
    if not observations:
        raise ValueError("no observations to score")
    pred = _binary(pred_labels, observations, uncertain_as_positive)  # [reports, observations]
    ref = _binary(ref_labels, observations, uncertain_as_positive)  # [reports, observations]
    tp = (pred & ref).sum(0)
    fp = (pred & ~ref).sum(0)
    fn = (~pred & ref).sum(0)
    per_observation = {}
    f1s = []
    for j, obs in enumerate(observations):
        p, r, f = _prf(int(tp[j]), int(fp[j]), int(fn[j]))
        per_observation[obs] = {"precision": p, "recall": r, "f1": f, "support": int(ref[:, j].sum())}
        if f is not None:
            f1s.append(f)
    mp, mr, mf = _prf(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    return {
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "micro_f1": mf if mf is not None else 0.0,
        "micro_precision": mp,
        "micro_recall": mr,
        "per_observation": per_observation,
    }


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` reports.

    ``statistic`` receives an index array (a resample with replacement of ``range(n)``) and
    returns the metric on those reports, so any metric above can be bootstrapped.
    """
    if n < 1:
        raise ValueError("bootstrap needs at least one report")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_boot)])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def report_metrics(preds: Sequence[str], refs: Sequence[str],
                   pred_labels: Sequence[Mapping[str, int | None]],
                   ref_labels: Sequence[Mapping[str, int | None]],
                   observations: Sequence[str], n_boot: int = 200, seed: int = 0) -> dict:
    """All metrics of one system with bootstrap 95% intervals: the shape `evaluate` prints.

    Returns ``rouge1/rouge2/rougeL/bleu1..4/ce_f1_macro/ce_f1_micro/per_observation`` and
    ``ci`` with ``[low, high]`` for ROUGE-L, BLEU-4 and both CE F1s.
    """
    per_report = rouge_per_report(preds, refs)
    out: dict = {key: float(v.mean()) for key, v in per_report.items()}
    out.update(bleu(preds, refs))
    ce = clinical_efficacy(pred_labels, ref_labels, observations)
    out["ce_f1_macro"] = ce["macro_f1"]
    out["ce_f1_micro"] = ce["micro_f1"]
    out["per_observation"] = ce["per_observation"]
    n = len(preds)
    if n_boot > 0:
        pick = lambda seq, idx: [seq[i] for i in idx]  # noqa: E731
        out["ci"] = {
            "rougeL": bootstrap_ci(lambda idx: float(per_report["rougeL"][idx].mean()), n, n_boot, seed=seed),
            "bleu4": bootstrap_ci(lambda idx: bleu(pick(preds, idx), pick(refs, idx))["bleu4"], n, n_boot, seed=seed),
            "ce_f1_macro": bootstrap_ci(lambda idx: clinical_efficacy(
                pick(pred_labels, idx), pick(ref_labels, idx), observations)["macro_f1"], n, n_boot, seed=seed),
            "ce_f1_micro": bootstrap_ci(lambda idx: clinical_efficacy(
                pick(pred_labels, idx), pick(ref_labels, idx), observations)["micro_f1"], n, n_boot, seed=seed),
        }
    return out
