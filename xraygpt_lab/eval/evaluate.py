"""Score a trained XrayGPT and its three baselines on one dataset, with bootstrap 95% intervals.

Systems (XrayGPT, arXiv 2306.07971, Table 1 compares against MiniGPT-4 only):

* ``xraygpt`` — greedy reports of the model (:func:`generate_reports`);
* ``image_blind`` — the same model with the projection output replaced by zeros (the
  ``<Img></Img>`` slot stays): what the frozen LLM writes without seeing the image;
* ``nearest_neighbour`` — the report of the most similar image of a *retrieval pool* (training
  images) under the vision encoder's L2-normalised embedding (``eval.baselines``);
* ``always_normal`` — one normal report for every image (``eval.baselines.NORMAL_REPORT``).

Every system gets ROUGE-1/2/L, BLEU-1..4, clinical efficacy (CE) and the repetition and
contradiction rates (``eval.consistency``) and side and grade agreement (``eval.details``) from
``eval.metrics.report_metrics``. CE labels of the generated text come from our rule-based
labeler (``data.labeler``) and are scored against two references:

* ``labeler`` — the labeler applied to the reference report (the usual CE protocol, R2Gen);
* ``truth`` — ground-truth labels, when the data has them (synthetic world, MIMIC CheXpert CSV).

Intervals are percentile bootstraps over images (``eval.metrics.bootstrap_ci``);
:meth:`Evaluation.compare` gives a *paired* interval for the difference between two systems
(same resampled images for both), the right test for "does the model beat the baseline".

Imports point one way: ``train.evaluation`` (the walkthrough's stage 7) uses
:func:`generate_reports` and :func:`score_reports` from here; this module imports nothing from
``train``.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.findings import RENDERED_OBSERVATIONS
from ..data.readers.images import preprocess
from ..data.readers.images import load_image, preprocess
from ..data.synthetic.world import generate_cases
from ..data.text.labeler import label_report
from .baselines import always_normal_reports, nearest_neighbour_reports
from .consistency import CONSISTENCY_METRICS
from .details import DETAIL_METRICS, detail_mismatches
from .metrics import bootstrap_ci, ce_intervals, clinical_efficacy, report_metrics, rouge_per_report

#: The question asked about every evaluation image (XrayGPT's own description prompt).
DEFAULT_INSTRUCTION = "Describe the given chest x-ray image in detail."

#: The systems :func:`evaluate_systems` knows, in table order.
SYSTEMS: tuple[str, ...] = ("xraygpt", "image_blind", "nearest_neighbour", "always_normal")

#: What each system is, one line each (for tables and JSON).
SYSTEM_DESCRIPTIONS: dict[str, str] = {
    "xraygpt": "the trained model, greedy decoding",
    "image_blind": "same model, projection output replaced by zeros (<Img></Img> slot kept)",
    "nearest_neighbour": "report of the most similar pool image (encoder embedding, cosine)",
    "always_normal": "the same normal report for every image",
}

#: Headline metrics with a bootstrap interval (``report_metrics`` computes these six).
CI_METRICS: tuple[str, ...] = ("rougeL", "bleu4", "ce_f1_macro", "ce_f1_micro", "repetition_rate",
                               "contradiction_rate")

Labels = Mapping[str, int | None]


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
@dataclass
class EvalData:
    """Images (preprocessed), reference reports and, when known, ground-truth labels."""

    pixel_values: torch.Tensor  # [M, 1, S, S] MedCLIP-normalised (data.images.preprocess)
    references: list[str]
    ground_truth: list[dict] | None = None
    image_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [images, 1, S, S], got {list(self.pixel_values.shape)}")
        m = self.pixel_values.shape[0]
        if m == 0:
            raise ValueError("no images to evaluate")
        if len(self.references) != m:
            raise ValueError(f"{m} images but {len(self.references)} reference reports")
        if any(not isinstance(r, str) or not r.strip() for r in self.references):
            raise ValueError("every reference report must be a non-empty string")
        if self.ground_truth is not None and len(self.ground_truth) != m:
            raise ValueError(f"{m} images but {len(self.ground_truth)} ground-truth label sets")
        if not self.image_ids:
            self.image_ids = [f"image_{i}" for i in range(m)]
        if len(self.image_ids) != m:
            raise ValueError(f"{m} images but {len(self.image_ids)} image ids")

    def __len__(self) -> int:
        return len(self.references)


def synthetic_eval_data(n: int, size: int, seed: int) -> EvalData:
    """``n`` fresh synthetic cases (``data.synthetic.generate_cases``): summaries + true labels.

    Pick a ``seed`` no training stage used (the walkthrough uses ``S``, ``S+1000``, ``S+2000``).
    """

    cases = list(generate_cases(n, size, seed))
    return EvalData(
        pixel_values=torch.stack([preprocess(c.image, size) for c in cases]),  # [n, 1, S, S]
        references=[c.summary for c in cases],
        ground_truth=[dict(c.labels) for c in cases],
        image_ids=[c.image_id for c in cases],
    )


def records_eval_data(records: Sequence[Any], size: int) -> EvalData:
    """``EvalData`` from reader records (``data.readers.open_dataset(...).records``).

    Records without an image or a summary are left out; ground truth is used only when every
    kept record has labels (``labels.csv`` of a synthetic export, MIMIC's CheXpert CSV).
    """

    kept = [r for r in records if r.image_path is not None and r.summary and r.summary.strip()]
    if not kept:
        raise ValueError("no records with both an image and a reference report")
    truth = [dict(r.labels) for r in kept] if all(r.labels for r in kept) else None
    return EvalData(
        pixel_values=torch.stack([preprocess(load_image(r.image_path), size) for r in kept]),
        references=[r.summary for r in kept], ground_truth=truth, image_ids=[r.image_id for r in kept],
    )


@dataclass
class RetrievalPool:
    """Reports of training images and their encoder embeddings: the nearest-neighbour database."""

    embeddings: torch.Tensor  # [N, p]
    reports: list[str]

    def __post_init__(self) -> None:
        if self.embeddings.dim() != 2 or self.embeddings.shape[0] != len(self.reports) or not self.reports:
            raise ValueError(f"a retrieval pool needs [N, p] embeddings for N reports, got "
                             f"{list(self.embeddings.shape)} for {len(self.reports)} reports")


@torch.no_grad()
def encode(encoder: torch.nn.Module, pixel_values: torch.Tensor,
           batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``[M, N, d]`` (the projection's input) and unit embeddings ``[M, p]`` in one pass.

    Uses ``VisionEncoder.forward`` (``tokens`` + ``embedding``); an encoder without an
    ``embedding`` output is retrieved with its mean-pooled tokens instead.
    """
    device = next(encoder.parameters()).device
    tokens, embeddings = [], []
    for start in range(0, pixel_values.shape[0], batch_size):
        out = encoder(pixel_values[start:start + batch_size].to(device))
        t = out.tokens.float().cpu()  # [b, N, d]
        e = getattr(out, "embedding", None)
        e = t.mean(dim=1) if e is None else e.float().cpu()  # [b, p]
        tokens.append(t)
        embeddings.append(torch.nn.functional.normalize(e, dim=-1))
    return torch.cat(tokens), torch.cat(embeddings)


def retrieval_pool(encoder: torch.nn.Module, pixel_values: torch.Tensor, reports: Sequence[str],
                   batch_size: int = 64) -> RetrievalPool:
    """Embed the pool images ``[N, 1, S, S]`` once; ``reports[i]`` belongs to image ``i``."""
    if pixel_values.shape[0] != len(reports):
        raise ValueError(f"{pixel_values.shape[0]} pool images but {len(reports)} reports")
    return RetrievalPool(encode(encoder, pixel_values, batch_size)[1], list(reports))


def training_pool(model: Any, n: int = 400, batch_size: int = 64) -> RetrievalPool:
    """Retrieval pool of a walkthrough run: ``n`` stage-1 synthetic cases, re-drawn from the seed
    in the run's ``config.json`` (``seeds.stage1``): images the model was aligned on."""

    seeds = getattr(model, "run_config", {}).get("seeds", {})
    if "stage1" not in seeds:
        raise ValueError("this model's run has no synthetic stage-1 seed (config.json 'seeds'); "
                         "build a pool from your training folder with retrieval_pool()")
    size = int(model.image_size)
    cases = list(generate_cases(n, size, seeds["stage1"]))
    pixels = torch.stack([preprocess(c.image, size) for c in cases])  # [n, 1, S, S]
    return retrieval_pool(model.encoder, pixels, [c.summary for c in cases], batch_size)


# ----------------------------------------------------------------------------------------------
# Generating reports
# ----------------------------------------------------------------------------------------------
def generate_reports(model: Any, pixel_values: torch.Tensor | None = None, features: torch.Tensor | None = None,
                     batch_size: int = 50, instruction: str = DEFAULT_INSTRUCTION,
                     max_new_tokens: int = 160, withhold_image: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Greedy reports of an ``XrayGPT`` for ``pixel_values`` ``[M, 1, S, S]`` or cached ``features`` ``[M, N, d]``."""
    source = pixel_values if pixel_values is not None else features
    if source is None:
        raise ValueError("give pixel_values or features")
    reports: list[str] = []
    for start in range(0, source.shape[0], batch_size):
        chunk = source[start:start + batch_size]
        kwargs = {"pixel_values": chunk} if pixel_values is not None else {"features": chunk}
        reports += model.describe(instruction=instruction, max_new_tokens=max_new_tokens,
                                  withhold_image=withhold_image, **kwargs)
        if progress is not None:
            progress(len(reports), source.shape[0])
    return reports


# ----------------------------------------------------------------------------------------------
# Scoring one system
# ----------------------------------------------------------------------------------------------
def _pick(seq: Sequence, idx: np.ndarray) -> list:
    return [seq[i] for i in idx]


def ce_against(pred_labels: Sequence[Labels], ref_labels: Sequence[Labels],
               observations: Sequence[str], n_boot: int, seed: int) -> dict[str, Any]:
    """CE macro/micro F1 (+ per observation) of ``pred_labels`` vs ``ref_labels`` with intervals."""
    ce = clinical_efficacy(pred_labels, ref_labels, observations)
    out: dict[str, Any] = {"ce_f1_macro": ce["macro_f1"], "ce_f1_micro": ce["micro_f1"],
                           "ce_precision_micro": ce["micro_precision"], "ce_recall_micro": ce["micro_recall"],
                           "per_observation": ce["per_observation"]}
    if n_boot > 0:
        out["ci"] = ce_intervals(pred_labels, ref_labels, observations, n_boot, seed)
    return out


def score_system(preds: Sequence[str], references: Sequence[str], reference_labels: Sequence[Labels],
                 ground_truth: Sequence[Labels] | None = None,
                 observations: Sequence[str] = RENDERED_OBSERVATIONS,
                 n_boot: int = 200, seed: int = 0) -> tuple[dict[str, Any], list[dict]]:
    """All metrics of one system: ``(metrics, labeler labels of preds)``.

    ``metrics`` is ``eval.metrics.report_metrics``' dict (CE vs the labeler on the references,
    with its ``ci``) plus ``vs_ground_truth`` (CE vs ``ground_truth`` with its own ``ci``) when
    ground truth is given.
    """
    preds, references, reference_labels = list(preds), list(references), list(reference_labels)
    pred_labels = [label_report(p) for p in preds]
    metrics = report_metrics(preds, references, pred_labels, reference_labels, observations, n_boot, seed)
    if ground_truth is not None:
        metrics["vs_ground_truth"] = ce_against(pred_labels, list(ground_truth), observations, n_boot, seed)
    return metrics, pred_labels


def score_reports(preds: Sequence[str], refs: Sequence[str],
                  ground_truth: Sequence[Labels] | None = None,
                  observations: Sequence[str] = RENDERED_OBSERVATIONS, n_boot: int = 200) -> dict[str, Any]:
    """ROUGE, BLEU and CE (labeler on both texts; and vs ground truth when given): ``metrics.json``.

    :func:`score_system` with the references labelled here; ``vs_ground_truth`` has CE without
    intervals and ``labeler_ceiling_f1_macro`` (the labeler on the reference vs ground truth).
    """
    ref_labels = [label_report(r) for r in refs]
    out, pred_labels = score_system(preds, refs, ref_labels, None, observations, n_boot)
    if ground_truth is not None:
        ce = clinical_efficacy(pred_labels, list(ground_truth), observations)
        ref_ce = clinical_efficacy(ref_labels, list(ground_truth), observations)
        out["vs_ground_truth"] = {
            "ce_f1_macro": ce["macro_f1"], "ce_f1_micro": ce["micro_f1"],
            "per_observation": ce["per_observation"],
            "labeler_ceiling_f1_macro": ref_ce["macro_f1"],  # labeler on the reference vs truth
        }
    return out


# ----------------------------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """Metrics, reports and labels of every system on one :class:`EvalData`."""

    data: EvalData
    metrics: dict[str, dict[str, Any]]  # system -> score_system metrics
    reports: dict[str, list[str]]  # system -> one report per image
    labels: dict[str, list[dict]]  # system (and "reference") -> labeler output per image
    observations: tuple[str, ...] = RENDERED_OBSERVATIONS
    n_boot: int = 200
    seed: int = 0
    labeler_ceiling: dict[str, Any] | None = None  # labeler on the references vs ground truth

    @property
    def systems(self) -> list[str]:
        return list(self.metrics)

    def _ref_labels(self, reference: str) -> list:
        if reference == "labeler":
            return self.labels["reference"]
        if reference == "truth":
            if self.data.ground_truth is None:
                raise ValueError("this dataset has no ground-truth labels; use reference='labeler'")
            return self.data.ground_truth
        raise ValueError(f"reference must be 'labeler' or 'truth', got {reference!r}")

    def _system(self, system: str) -> None:
        if system not in self.metrics:
            raise ValueError(f"unknown system {system!r}; evaluated: {', '.join(self.metrics)}")

    def metrics_table(self):
        """One row per system: ROUGE, BLEU, CE (both references), repetition and contradiction
        rates, side and grade agreement (NaN where no finding has one in both texts), and the 95%
        intervals."""
        import pandas as pd

        rows = []
        for system, m in self.metrics.items():
            row = {"system": system, **{k: m[k] for k in ("rouge1", "rouge2", "rougeL", "bleu1", "bleu4",
                                                          "ce_f1_macro", "ce_f1_micro", "repetition_rate",
                                                          "contradiction_rate", "side_agreement", "grade_agreement")}}
            for key, (low, high) in m.get("ci", {}).items():
                row[f"{key}_low"], row[f"{key}_high"] = low, high
            truth = m.get("vs_ground_truth")
            if truth is not None:
                row["truth_f1_macro"], row["truth_f1_micro"] = truth["ce_f1_macro"], truth["ce_f1_micro"]
                for key, (low, high) in truth.get("ci", {}).items():
                    name = key.replace("ce_", "truth_")
                    row[f"{name}_low"], row[f"{name}_high"] = low, high
            rows.append(row)
        return pd.DataFrame(rows).set_index("system")

    def per_observation_table(self, reference: str = "truth"):
        """Long table: system × observation → precision, recall, F1, support (``reference`` labels)."""
        import pandas as pd

        self._ref_labels(reference)  # validates
        rows = []
        for system, m in self.metrics.items():
            per = m["vs_ground_truth"]["per_observation"] if reference == "truth" else m["per_observation"]
            for obs, values in per.items():
                rows.append({"system": system, "observation": obs, **values})
        return pd.DataFrame(rows)

    def errors(self, system: str = "xraygpt", reference: str = "truth"):
        """One row per image: the observations ``system`` missed and those it invented (against
        ``reference`` labels), ``wrong_side`` and ``wrong_grade``: those it puts on another side, or
        gives another size or severity, than the reference report does (``eval.details``; not
        counted in CE)."""
        import pandas as pd

        self._system(system)
        refs = self._ref_labels(reference)
        rows = []
        for i, (pred, ref) in enumerate(zip(self.labels[system], refs)):
            missed = [o for o in self.observations if ref.get(o) == 1 and pred.get(o) != 1]
            invented = [o for o in self.observations if pred.get(o) == 1 and ref.get(o) != 1]
            rows.append({"image_id": self.data.image_ids[i], "index": i, "n_missed": len(missed),
                         "n_invented": len(invented), "missed": missed, "invented": invented,
                         **detail_mismatches(self.reports[system][i], self.data.references[i]),
                         "generated": self.reports[system][i], "reference": self.data.references[i]})
        return pd.DataFrame(rows)

    def failures(self, system: str = "xraygpt", k: int = 5, reference: str = "truth"):
        """The ``k`` images with the most label errors (missed + invented), worst first.

        Among images with as many errors, one of each kind of error (the same missed and invented
        observations) comes before a second of any kind, then test order: where most films carry
        one error, the first ``k`` in test order would often show the same mistake ``k`` times.
        """
        table = self.errors(system, reference)
        table = table.assign(n_errors=table["n_missed"] + table["n_invented"])
        table = table[table["n_errors"] > 0].sort_values("index")
        kind = [(tuple(m), tuple(v)) for m, v in zip(table["missed"], table["invented"])]
        table = table.assign(repeat=table.assign(kind=kind).groupby(["n_errors", "kind"]).cumcount())
        table = table.sort_values(["n_errors", "repeat", "index"], ascending=[False, True, True])
        return table.drop(columns="repeat").head(k)

    def compare(self, system: str, baseline: str, metric: str = "ce_f1_macro",
                reference: str = "truth") -> dict[str, float]:
        """Paired bootstrap of ``metric(system) - metric(baseline)`` over the same resampled images.

        ``metric``: ``ce_f1_macro``/``ce_f1_micro`` (against ``reference``) or ``rougeL``.
        Returns ``{"difference", "low", "high"}``; an interval above 0 means ``system`` is better.
        """
        self._system(system)
        self._system(baseline)
        n = len(self.data)
        if metric == "rougeL":
            a = rouge_per_report(self.reports[system], self.data.references)["rougeL"]
            b = rouge_per_report(self.reports[baseline], self.data.references)["rougeL"]
            stat: Callable[[np.ndarray], float] = lambda idx: float(a[idx].mean() - b[idx].mean())  # noqa: E731
        elif metric in ("ce_f1_macro", "ce_f1_micro"):
            refs = self._ref_labels(reference)
            key = "macro_f1" if metric == "ce_f1_macro" else "micro_f1"

            def stat(idx: np.ndarray) -> float:
                r = _pick(refs, idx)
                return (clinical_efficacy(_pick(self.labels[system], idx), r, self.observations)[key]
                        - clinical_efficacy(_pick(self.labels[baseline], idx), r, self.observations)[key])
        else:
            raise ValueError(f"metric must be rougeL, ce_f1_macro or ce_f1_micro, got {metric!r}")
        difference = stat(np.arange(n))
        low, high = bootstrap_ci(stat, n, max(self.n_boot, 1), seed=self.seed)
        return {"difference": float(difference), "low": low, "high": high}

    def to_json(self, n_examples: int = 5) -> dict[str, Any]:
        """A JSON-ready dict in the shape of ``train.evaluation.evaluate_model`` (``metrics.json``).

        The model's metrics (``xraygpt``, else the first system) are at the top level; every other
        system is under ``baselines.<name>`` with a ``how`` line; ``examples`` hold every system's
        report for the first ``n_examples`` images.
        """
        primary = "xraygpt" if "xraygpt" in self.metrics else self.systems[0]
        out: dict[str, Any] = {
            "system": primary, **self.metrics[primary],
            "n": len(self.data), "observations": list(self.observations), "n_boot": self.n_boot,
            "ce_labels": "rule-based labeler (data.labeler) on generated text, vs the labeler on the "
                         "reference text and vs ground truth (vs_ground_truth) when known",
            "consistency_metrics": dict(CONSISTENCY_METRICS), "detail_metrics": dict(DETAIL_METRICS),
            "baselines": {s: {"how": SYSTEM_DESCRIPTIONS.get(s, s), **m}
                          for s, m in self.metrics.items() if s != primary},
            "examples": [{"image_id": self.data.image_ids[i], "reference": self.data.references[i],
                          **{s: self.reports[s][i] for s in self.reports}}
                         for i in range(min(n_examples, len(self.data)))],
        }
        if self.labeler_ceiling is not None:
            out["labeler_ceiling"] = self.labeler_ceiling
            out["vs_ground_truth"] = {**out["vs_ground_truth"],
                                      "labeler_ceiling_f1_macro": self.labeler_ceiling["ce_f1_macro"]}
        return json.loads(json.dumps(out, default=float))  # tuples → lists, numpy → float


# ----------------------------------------------------------------------------------------------
# The whole evaluation
# ----------------------------------------------------------------------------------------------
def evaluate_systems(model: Any, data: EvalData, pool: RetrievalPool | None = None,
                     systems: Sequence[str] = SYSTEMS, *, n_boot: int = 200, max_new_tokens: int = 160,
                     batch_size: int = 50, observations: Sequence[str] = RENDERED_OBSERVATIONS,
                     seed: int = 0, log: Callable[[str], None] | None = None) -> Evaluation:
    """Generate (or retrieve) a report per image for each of ``systems`` and score them all.

    ``model`` is an ``XrayGPT`` (``runs.load_run``); ``pool`` is needed for
    ``nearest_neighbour``. The encoder runs once per image; its tokens feed both model systems.
    """
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise ValueError(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    if "nearest_neighbour" in systems and pool is None:
        raise ValueError("the nearest_neighbour baseline needs a retrieval pool (eval.evaluate.retrieval_pool)")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    say = log or (lambda _: None)
    say(f"encoding {len(data)} images")
    features, embeddings = encode(model.encoder, data.pixel_values, batch_size)  # [M, N, d], [M, p]
    reports: dict[str, list[str]] = {}
    for system in systems:
        say(f"{system}: reports for {len(data)} images")
        if system in ("xraygpt", "image_blind"):
            reports[system] = generate_reports(model, features=features, batch_size=batch_size,
                                               max_new_tokens=max_new_tokens,
                                               withhold_image=system == "image_blind")
        elif system == "nearest_neighbour":
            reports[system] = nearest_neighbour_reports(pool.embeddings, pool.reports, embeddings)
        else:
            reports[system] = always_normal_reports(len(data))
    reference_labels = [label_report(r) for r in data.references]
    labels: dict[str, list[dict]] = {"reference": reference_labels}
    metrics: dict[str, dict[str, Any]] = {}
    for system in systems:
        say(f"{system}: scoring ({n_boot} bootstrap resamples)")
        metrics[system], labels[system] = score_system(reports[system], data.references, reference_labels,
                                                       data.ground_truth, observations, n_boot, seed)
    ceiling = None
    if data.ground_truth is not None:
        ce = clinical_efficacy(reference_labels, data.ground_truth, observations)
        ceiling = {"ce_f1_macro": ce["macro_f1"], "ce_f1_micro": ce["micro_f1"]}
    return Evaluation(data=data, metrics=metrics, reports=reports, labels=labels,
                      observations=tuple(observations), n_boot=n_boot, seed=seed, labeler_ceiling=ceiling)
