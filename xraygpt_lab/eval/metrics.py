"""Report-generation metrics: ROUGE (the paper's metric), BLEU-1..4 and clinical efficacy.

- ROUGE-1/2/L: Google's ``rouge-score`` package, F-measure with Porter stemming, averaged over
  reports — what XrayGPT reports (arXiv 2306.07971, Table 1).
- BLEU-n: NLTK's ``corpus_bleu`` (Papineni et al. 2002) with uniform weights over 1..n-grams,
  smoothing ``method1``, on lower-cased word tokens (punctuation dropped). Report-generation papers
  (R2Gen and successors) use pycocoevalcap's BLEU: on the same tokens it gives the same corpus
  BLEU (checked to 1e-6 on 50 synthetic reports) unless some n-gram order has no match at all or a
  report has fewer than n words; their tokens keep "." as a word, which raises BLEU-4 by ~0.02.
  The bootstrap re-scores hundreds of resamples, so it sums per-report counts from NLTK's own
  ``modified_precision`` (:func:`bleu_statistics`) and finishes as ``corpus_bleu`` does
  (:func:`bleu_from_statistics`); tests pin both to ``corpus_bleu``.
- Clinical efficacy (CE): precision / recall / F1 of observation labels extracted from the
  generated report against labels of the reference (Chen et al. 2020, "R2Gen", Sec. 4.2). A label
  counts as positive only when it is 1; 0, -1 (uncertain) and None (not mentioned) are not
  positive, unless ``uncertain_as_positive=True``.
- Consistency of each report with itself (``eval.consistency``): ``repetition_rate``, the share of
  reports that repeat a sentence or a clause of >= 3 words (body and summary each on their own),
  and ``contradiction_rate``, the share where the labeler, run per sentence, finds one
  observation both asserted and denied, or the summary puts a finding on the side opposite to
  the body's. Neither needs a reference.
- Side and grade agreement (``eval.details``): of the findings both the generated and the
  reference report assert with a side (a size or severity), the share on the same side (of the
  same grade); CE looks at neither.
- Bootstrap 95% intervals: percentile bootstrap over reports (Efron & Tibshirani 1993, ch. 13),
  :func:`bootstrap_ci`; :func:`bootstrap_intervals` gives the headline metrics' intervals used by
  :func:`report_metrics` and ``eval.evaluate``.

NLTK is imported inside the BLEU functions: importing it takes ~1.5 s, and this module is
imported by command-line paths (``xraygpt-lab --help``) that never score BLEU.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .consistency import consistency_flags
from .details import detail_agreement

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


def _bleu_weights(max_n: int) -> list[tuple[float, ...]]:
    return [tuple([1.0 / n] * n) for n in range(1, max_n + 1)]


def bleu(preds: Sequence[str], refs: Sequence[str], max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..``max_n`` with one reference per report: ``{"bleu1": …, "bleu4": …}``.

    NLTK's ``corpus_bleu``, uniform weights, smoothing ``method1`` (a zero match count becomes
    0.1, so a corpus with no 4-gram match does not score exactly 0), tokens from :func:`tokenize`.
    """
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu  # slow import, see module doc

    _check_pairs(preds, refs)
    hyps = [tokenize(p) for p in preds]
    refs_tok = [[tokenize(r)] for r in refs]
    smooth = SmoothingFunction().method1  # avoids log(0) when a high order has no match
    scores = corpus_bleu(refs_tok, hyps, weights=_bleu_weights(max_n), smoothing_function=smooth)
    scores = scores if isinstance(scores, list) else [scores] * max_n  # 0 for every order if no unigram matches
    return {f"bleu{n}": float(score) for n, score in enumerate(scores, start=1)}


def bleu_statistics(preds: Sequence[str], refs: Sequence[str], max_n: int = 4) -> np.ndarray:
    """Per-report sufficient statistics of corpus BLEU: ``[n, 2 + 2 * max_n]`` integers.

    Columns: hypothesis length, closest reference length, then for each order k = 1..max_n the
    numerator (clipped k-gram matches) and denominator (``max(1, hypothesis k-grams)``) of NLTK's
    ``modified_precision``: what ``corpus_bleu`` sums over reports. Summing the rows of a
    resample and calling :func:`bleu_from_statistics` equals ``corpus_bleu`` on that resample,
    without re-tokenising and re-counting n-grams for every bootstrap resample.
    """
    from nltk.translate.bleu_score import closest_ref_length, modified_precision  # slow import, see module doc

    _check_pairs(preds, refs)
    rows = np.zeros((len(preds), 2 + 2 * max_n), dtype=np.int64)
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        hyp, references = tokenize(pred), [tokenize(ref)]
        rows[i, 0], rows[i, 1] = len(hyp), closest_ref_length(references, len(hyp))
        for k in range(1, max_n + 1):
            p = modified_precision(references, hyp, k)  # unnormalised Fraction: matches / max(1, k-grams)
            rows[i, 2 * k], rows[i, 2 * k + 1] = p.numerator, p.denominator
    return rows


def bleu_from_statistics(stats: np.ndarray, max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` of the reports whose :func:`bleu_statistics` rows are ``stats``.

    The last steps of NLTK's ``corpus_bleu`` on the summed counts, with NLTK's own pieces
    (``Fraction``, smoothing ``method1``, ``brevity_penalty``; Papineni et al. 2002, Sec. 2.2.2),
    so the value is ``corpus_bleu``'s to the last bit.
    """
    from nltk.translate.bleu_score import Fraction, SmoothingFunction, brevity_penalty  # slow import

    total = [int(v) for v in stats.sum(axis=0)]
    hyp_len, ref_len = total[0], total[1]
    numerators, denominators = total[2::2][:max_n], total[3::2][:max_n]
    if numerators[0] == 0:  # corpus_bleu: no unigram match, BLEU 0
        return 0.0
    p_n = [Fraction(a, b, _normalize=False) for a, b in zip(numerators, denominators)]
    p_n = SmoothingFunction().method1(p_n)
    weights = _bleu_weights(max_n)[-1]
    return float(brevity_penalty(ref_len, hyp_len)
                 * math.exp(math.fsum(w * math.log(p) for w, p in zip(weights, p_n) if p > 0)))


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


def _pick(seq: Sequence, idx: np.ndarray) -> list:
    return [seq[i] for i in idx]


def ce_intervals(pred_labels: Sequence[Mapping[str, int | None]],
                 ref_labels: Sequence[Mapping[str, int | None]], observations: Sequence[str],
                 n_boot: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals of CE macro and micro F1: ``{"ce_f1_macro": …, "ce_f1_micro": …}``."""
    n = len(pred_labels)

    def ce(key: str) -> Callable[[np.ndarray], float]:
        return lambda idx: clinical_efficacy(_pick(pred_labels, idx), _pick(ref_labels, idx), observations)[key]

    return {"ce_f1_macro": bootstrap_ci(ce("macro_f1"), n, n_boot, seed=seed),
            "ce_f1_micro": bootstrap_ci(ce("micro_f1"), n, n_boot, seed=seed)}


def bootstrap_intervals(preds: Sequence[str], refs: Sequence[str],
                        pred_labels: Sequence[Mapping[str, int | None]],
                        ref_labels: Sequence[Mapping[str, int | None]], observations: Sequence[str],
                        n_boot: int, seed: int = 0, *, rouge_l: np.ndarray | None = None,
                        consistency: Mapping[str, np.ndarray] | None = None) -> dict[str, tuple[float, float]]:
    """Bootstrap 95% intervals of ROUGE-L, BLEU-4, CE macro/micro F1 and the repetition and
    contradiction rates (the ``ci`` of :func:`report_metrics`), every metric on the same
    resamples (:func:`bootstrap_ci`, ``seed``).

    ROUGE-L is averaged from per-report scores and BLEU-4 summed from per-report counts
    (:func:`bleu_statistics`), so no resample re-tokenises a report. ``rouge_l``: the per-report
    ROUGE-L, ``consistency``: ``eval.consistency.consistency_flags`` of ``preds``, when the caller
    already has them.
    """
    _check_pairs(preds, refs)
    n = len(preds)
    rouge_l = rouge_per_report(preds, refs)["rougeL"] if rouge_l is None else rouge_l  # [n]
    stats = bleu_statistics(preds, refs)  # [n, 10]
    flags = consistency_flags(preds) if consistency is None else consistency  # name -> bool [n]
    return {
        "rougeL": bootstrap_ci(lambda idx: float(rouge_l[idx].mean()), n, n_boot, seed=seed),
        "bleu4": bootstrap_ci(lambda idx: bleu_from_statistics(stats[idx]), n, n_boot, seed=seed),
        **ce_intervals(pred_labels, ref_labels, observations, n_boot, seed),
        **{name: bootstrap_ci(lambda idx, f=f: float(f[idx].mean()), n, n_boot, seed=seed)
           for name, f in flags.items()},
    }


def report_metrics(preds: Sequence[str], refs: Sequence[str],
                   pred_labels: Sequence[Mapping[str, int | None]],
                   ref_labels: Sequence[Mapping[str, int | None]],
                   observations: Sequence[str], n_boot: int = 200, seed: int = 0) -> dict:
    """All metrics of one system with bootstrap 95% intervals: the shape `evaluate` prints.

    Returns ``rouge1/rouge2/rougeL/bleu1..4/ce_f1_macro/ce_f1_micro/per_observation``,
    ``repetition_rate/contradiction_rate`` (``eval.consistency``), ``side_agreement/grade_agreement``, their
    ``*_pairs`` and ``*_per_observation`` (``eval.details``) and, when ``n_boot > 0``, ``ci``
    with ``[low, high]`` for ROUGE-L, BLEU-4, both CE F1s and both rates (:func:`bootstrap_intervals`).
    """
    per_report = rouge_per_report(preds, refs)
    out: dict = {key: float(v.mean()) for key, v in per_report.items()}
    out.update(bleu(preds, refs))
    ce = clinical_efficacy(pred_labels, ref_labels, observations)
    out["ce_f1_macro"] = ce["macro_f1"]
    out["ce_f1_micro"] = ce["micro_f1"]
    out["per_observation"] = ce["per_observation"]
    flags = consistency_flags(preds)  # name -> bool [n]
    out.update({name: float(f.mean()) for name, f in flags.items()})
    out.update(detail_agreement(preds, refs))  # sides and grades named in both texts (eval.details)
    if n_boot > 0:
        out["ci"] = bootstrap_intervals(preds, refs, pred_labels, ref_labels, observations, n_boot, seed,
                                        rouge_l=per_report["rougeL"], consistency=flags)
    return out
