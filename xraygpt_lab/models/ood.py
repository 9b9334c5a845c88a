"""Is an image from the world the encoder was trained on? A feature-density score plus input checks.

A model trained on one world answers about any picture with the same confidence; this module
says when a picture is not from that world (out of distribution, OOD).

**Feature score** (does the real work: real films, CT and MR slices, photographs, blank and
noise images). For each level ``l`` of the frozen encoder (:meth:`VisionEncoder.pooled_stages`:
patch embedding, then each Swin stage, mean-pooled to ``d_l`` numbers) a Gaussian is fitted to
synthetic films; the score is the squared Mahalanobis distance to it divided by ``d_l`` (about 1
for a typical film), averaged over the levels — the class-free, several-layer form of Lee et
al., "A simple unified framework for detecting out-of-distribution samples and adversarial
attacks", NeurIPS 2018. Each covariance is shrunk towards a scaled identity by Ledoit & Wolf
("A well-conditioned estimator for large-dimensional covariance matrices", J. Multivariate
Anal. 88, 2004), since a few hundred films estimate a 128-wide covariance poorly.

**Calibration** (:func:`calibrate`): the Gaussians are fitted on ``N_FIT`` synthetic films of one
seed the run never trained on; the threshold is the ``PERCENTILE``-th percentile of a log-normal
fitted to the scores of ``N_THRESHOLD`` films of a second such seed (scoring the fitting films
themselves would set it too low, and a tail percentile read straight off 200 scores moves by about
15 % from one set of films to the next; the fitted one moves less). It is the score the model
sees: the images go through the model's own transform.

**Input checks** (:func:`input_problems`): the transform pads every image to a square and resizes
it, which can hide what is wrong with it (a 1×1 image becomes a uniform square). An image smaller
than ``MIN_SIDE`` pixels on a side, or longer than ``MAX_ASPECT`` times its width (or the other
way), is flagged whatever its score.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import torch
from tqdm.auto import tqdm

from xraygpt_lab.data.readers.images import preprocess
from xraygpt_lab.data.synthetic.world import generate_cases
from xraygpt_lab.errors import CorruptFileError
from xraygpt_lab.run_folder import OOD_FILE, load_weights, save_weights

#: The calibration's file in a run folder.
FILE_NAME = OOD_FILE
FORMAT = "xraygpt-lab-ood-1"
#: Input checks: smallest side in pixels, largest ratio of the long side to the short one.
MIN_SIDE = 32
MAX_ASPECT = 2.5
#: Calibration: films to fit the Gaussians, films to set the threshold, and its percentile.
N_FIT = 300
N_THRESHOLD = 200
PERCENTILE = 99.5
#: The JSON fields for a model without the check (the released XrayGPT).
UNCHECKED: dict[str, Any] = {"in_distribution": None, "ood_score": None, "ood_threshold": None, "ood_reasons": []}
#: Offsets from the run's seed of the two calibration sets (the walkthrough uses +0, +1000, +2000).
FIT_OFFSET, THRESHOLD_OFFSET = 3000, 4000


def ledoit_wolf(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean ``[d]``, Ledoit-Wolf covariance ``[d, d]`` and shrinkage of samples ``x`` ``[n, d]``.

    ``(1 - a) S + a (tr S / d) I`` with the sample covariance ``S`` and ``a`` from Ledoit & Wolf
    (2004), Lemma 3.2–3.4 (the form scikit-learn's ``ledoit_wolf_shrinkage`` computes).
    """
    x = x.double()
    n, d = x.shape
    mean = x.mean(dim=0)  # [d]
    centred = x - mean  # [n, d]
    sample = centred.T @ centred / n  # [d, d]
    scale = float(torch.trace(sample)) / d
    delta = float(((sample - scale * torch.eye(d, dtype=x.dtype)) ** 2).sum())
    beta = (float((centred.square().sum(dim=1) ** 2).sum()) / n - float((sample ** 2).sum())) / n
    shrinkage = 0.0 if delta == 0 else min(beta, delta) / delta
    covariance = (1 - shrinkage) * sample + shrinkage * scale * torch.eye(d, dtype=x.dtype)  # [d, d]
    return mean, covariance, shrinkage


def input_problems(shape: Sequence[int]) -> list[str]:
    """What the input checks find wrong with an image of ``(height, width)`` pixels (empty: nothing)."""
    height, width = int(shape[0]), int(shape[1])
    problems = []
    if min(height, width) < MIN_SIDE:
        problems.append(f"it is only {width}\u00d7{height} px, under {MIN_SIDE} px a side")
    if max(height, width) > MAX_ASPECT * max(min(height, width), 1):
        problems.append(f"its {width}\u00d7{height} px are more elongated than {MAX_ASPECT:g}:1")
    return problems


@dataclass(frozen=True)
class Verdict:
    """The check of one image: its feature ``score``, the run's ``threshold`` and the input checks' ``problems``."""

    score: float
    threshold: float
    problems: tuple[str, ...] = ()

    @property
    def in_distribution(self) -> bool:
        return self.score <= self.threshold and not self.problems

    @property
    def reasons(self) -> list[str]:
        """Why the image is flagged (empty when it is in distribution)."""
        features = [f"its feature score {self.score:.2f} is above the threshold {self.threshold:.2f}"] \
            if self.score > self.threshold else []
        return [*self.problems, *features]

    def warning(self) -> str | None:
        """One sentence for the user when the image is flagged, else None."""
        if self.in_distribution:
            return None
        return ("not like the chest films this model was trained on (" + "; ".join(self.reasons)
                + "), so its answers about this image are not to be trusted")

    def summary(self) -> str:
        """One line for the panel and notebooks, whether flagged or not."""
        if self.in_distribution:
            return (f"Like the films the model was trained on (feature score {self.score:.2f}, "
                    f"threshold {self.threshold:.2f}).")
        return f"Out of distribution: {self.warning()}."

    def as_json(self) -> dict[str, Any]:
        """``in_distribution``, ``ood_score``, ``ood_threshold``, ``ood_reasons`` (the CLI's JSON fields)."""
        return {"in_distribution": self.in_distribution, "ood_score": round(self.score, 4),
                "ood_threshold": round(self.threshold, 4), "ood_reasons": self.reasons}


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """SHA-256 of the encoder's weights: a calibration belongs to exactly these weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class OODDetector:
    """Per-level Gaussians of the encoder's pooled features, and the calibrated threshold."""

    means: list[torch.Tensor]  # each [d_l], float64
    precisions: list[torch.Tensor]  # each [d_l, d_l], float64
    threshold: float
    held_out: torch.Tensor  # [N_THRESHOLD] scores of the threshold films
    info: dict[str, str]  # seeds, sizes, the encoder's fingerprint

    @torch.no_grad()
    def scores(self, encoder: Any, pixel_values: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """Feature scores ``[B]`` of ``pixel_values`` ``[B, 1, S, S]`` (the model's transform)."""
        out = []
        for start in range(0, pixel_values.shape[0], batch):
            out.append(self.score_features(encoder.pooled_stages(pixel_values[start:start + batch])))
        return torch.cat(out)

    def score_features(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """Scores ``[B]`` of pooled features (one ``[B, d_l]`` per level): mean of Mahalanobis² / d_l."""
        if len(levels) != len(self.means):
            raise ValueError(f"expected features of {len(self.means)} levels, got {len(levels)}")
        total = 0
        for feature, mean, precision in zip(levels, self.means, self.precisions):
            centred = feature.detach().double().cpu() - mean  # [B, d_l]
            total = total + torch.einsum("bi,ij,bj->b", centred, precision, centred) / mean.numel()
        return total / len(self.means)  # [B]

    def check(self, encoder: Any, pixel_values: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[Verdict]:
        """One :class:`Verdict` per image: ``pixel_values`` ``[B, 1, S, S]``, ``shapes`` its ``(H, W)`` before the transform."""
        if len(shapes) != pixel_values.shape[0]:
            raise ValueError(f"{pixel_values.shape[0]} images but {len(shapes)} shapes")
        return [Verdict(float(s), self.threshold, tuple(input_problems(shape)))
                for s, shape in zip(self.scores(encoder, pixel_values).tolist(), shapes)]

    def save(self, path: str | Path) -> Path:
        """Write the calibration to ``path`` (safetensors, atomically)."""
        tensors = {"threshold": torch.tensor([self.threshold], dtype=torch.float64), "held_out": self.held_out}
        for i, (mean, precision) in enumerate(zip(self.means, self.precisions)):
            tensors[f"mean.{i}"], tensors[f"precision.{i}"] = mean, precision
        return save_weights(path, tensors, {"format": FORMAT, **self.info})

    @classmethod
    def load(cls, path: str | Path) -> "OODDetector":
        """Read what :meth:`save` wrote; ``CorruptFileError`` for a file of another kind."""
        tensors, info = load_weights(path)
        levels = sum(1 for k in tensors if k.startswith("mean."))
        expected = {"threshold", "held_out", *(f"{k}.{i}" for i in range(levels) for k in ("mean", "precision"))}
        if info.get("format") != FORMAT or set(tensors) != expected or levels == 0:
            raise CorruptFileError(Path(path), f"is not an out-of-distribution calibration ({FORMAT})")
        return cls([tensors[f"mean.{i}"] for i in range(levels)], [tensors[f"precision.{i}"] for i in range(levels)],
                   float(tensors["threshold"][0]), tensors["held_out"], dict(info))

    def matches(self, encoder: Any) -> bool:
        """True when this calibration was made with ``encoder``'s weights."""
        return self.info.get("encoder") == encoder_fingerprint(encoder)


@torch.no_grad()
def synthetic_features(encoder: Any, n: int, seed: int, bar: Any = None, batch: int = 50) -> list[torch.Tensor]:
    """Pooled features (one ``[n, d_l]`` float64 per level) of ``n`` synthetic films of ``seed``,
    rendered at the encoder's size and put through its transform."""
    size = int(encoder.image_size)
    chunks: list[list[torch.Tensor]] = []
    pixels: list[torch.Tensor] = []
    for i, case in enumerate(generate_cases(n, size, seed)):
        pixels.append(preprocess(case.image, size))  # [1, S, S]
        if bar is not None:
            bar.update(1)
        if len(pixels) == batch or i == n - 1:
            chunks.append([f.double().cpu() for f in encoder.pooled_stages(torch.stack(pixels))])
            pixels = []
    return [torch.cat(level) for level in zip(*chunks)]


def calibrate(encoder: Any, fit_seed: int, threshold_seed: int, n_fit: int = N_FIT,
              n_threshold: int = N_THRESHOLD, percentile: float = PERCENTILE, progress: bool = False) -> OODDetector:
    """Fit the Gaussians on ``n_fit`` synthetic films of ``fit_seed`` and set the threshold at the
    ``percentile``-th percentile of a log-normal fitted to the scores of ``n_threshold`` films of
    ``threshold_seed`` (:func:`lognormal_percentile`)."""
    if fit_seed == threshold_seed:
        raise ValueError("the fitting and threshold films need two different seeds")
    with tqdm(total=n_fit + n_threshold, desc="ood calibration", unit="film", disable=not progress) as bar:
        fit = synthetic_features(encoder, n_fit, fit_seed, bar)
        held = synthetic_features(encoder, n_threshold, threshold_seed, bar)
    means, precisions, shrinkages = [], [], []
    for level in fit:
        mean, covariance, shrinkage = ledoit_wolf(level)
        means.append(mean)
        precisions.append(torch.linalg.inv(covariance))
        shrinkages.append(f"{shrinkage:.4f}")
    info = {"encoder": encoder_fingerprint(encoder), "fit_seed": str(fit_seed), "threshold_seed": str(threshold_seed),
            "n_fit": str(n_fit), "n_threshold": str(n_threshold), "percentile": str(percentile),
            "shrinkage": ",".join(shrinkages), "image_size": str(int(encoder.image_size))}
    detector = OODDetector(means, precisions, 0.0, torch.empty(0, dtype=torch.float64), info)
    detector.held_out = detector.score_features(held)  # [n_threshold]
    detector.threshold = lognormal_percentile(detector.held_out, percentile)
    return detector


def lognormal_percentile(scores: torch.Tensor, percentile: float) -> float:
    """The ``percentile``-th percentile of a log-normal fitted to positive ``scores`` ``[n]``:
    ``exp(m + z s)`` with the mean ``m`` and standard deviation ``s`` of ``log(scores)`` and the
    standard normal quantile ``z``."""
    if scores.numel() < 2 or not bool((scores > 0).all()):
        raise ValueError("a log-normal needs at least two positive scores")
    logs = scores.double().log()
    z = NormalDist().inv_cdf(percentile / 100.0)
    return float(torch.exp(logs.mean() + z * logs.std()))


def calibration_seeds(config: dict[str, Any]) -> tuple[int, int]:
    """Seeds of the two calibration sets for a run's ``config.json``: its seed plus
    ``FIT_OFFSET`` / ``THRESHOLD_OFFSET``, moved on by 10,000 while one is a seed it trained on."""
    base = int(config.get("seed", 0) or 0)
    used = {int(v) for v in (config.get("seeds") or {}).values() if isinstance(v, int)}
    fit, threshold = base + FIT_OFFSET, base + THRESHOLD_OFFSET
    while fit in used or threshold in used:
        fit, threshold = fit + 10_000, threshold + 10_000
    return fit, threshold


def load_or_calibrate(path: str | Path, encoder: Any, config: dict[str, Any], progress: bool = False,
                      log: Callable[[str], None] | None = None) -> tuple[OODDetector, bool]:
    """The calibration in ``path`` when it was made for ``encoder``; else a new one (``calibrate``).
    Returns it and whether it is new (the caller saves it). An unreadable file is recalibrated."""
    path = Path(path)
    if path.is_file():
        try:
            detector = OODDetector.load(path)
            if detector.matches(encoder):
                return detector, False
        except CorruptFileError:
            pass
    fit_seed, threshold_seed = calibration_seeds(config)
    if log is not None:
        log(f"calibrating the out-of-distribution check on {N_FIT + N_THRESHOLD} held-out synthetic films "
            f"(seeds {fit_seed} and {threshold_seed}; once per run)")
    return calibrate(encoder, fit_seed, threshold_seed, progress=progress), True
