"""Localization benchmark on held-out synthetic positives: does the map point at the lesion?

For every localized observation (``data.findings.LOCALIZED_OBSERVATIONS``) we draw held-out
phantoms that have it (seed ``HELD_OUT_SEED``, which no training stage uses: the walkthrough
trains on seeds S and S + 1000 and evaluates on S + 2000), teacher-force the image's own
ground-truth summary after XrayGPT's first instruction, and explain the observation's phrase in
it — e.g. ``"moderate left pleural effusion"``, ``"15 mm nodule in the right upper lung"`` — with
each method.
Each map is scored against the finding's mask (``interpret.faithfulness``), beside a random map.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..data.findings import LOCALIZED_OBSERVATIONS
from ..data.readers.images import preprocess
from ..data.synthetic.world import generate_cases
from .attribution import RECOMMENDED_IG, explain
from .counterfactual import counterfactual_pair
from .faithfulness import default_tolerance, evaluate_maps
from .targets import DEFAULT_INSTRUCTION, phrase_target

#: Seed of the held-out interpretability set (walkthrough seeds are S, S + 1000, S + 2000).
HELD_OUT_SEED = 3000

#: How each observation is worded in the synthetic summaries (``data.synthetic_reports``): the
#: finding's whole noun phrase, i.e. its size or severity, its side and zone, and the finding.
#: The size or severity words belong in it: under teacher forcing every word before the phrase is
#: given, and "A 15 mm" already tells the model that a nodule follows. Starting the phrase after
#: them would explain only *where* the model puts a finding it has been told about, not why it
#: reports one (with them, the phrase gains 0.6-0.9 instead of 0.2-0.4 nats from a nodule and
#: 1.6-2.1 instead of 0.5-0.6 from atelectasis; docs/design-notes.md).
_SEVERITY = r"(small|mild|moderate|large|severe) "
_SIZE = r"\d+(\.\d+)? (mm|cm) "
PHRASE_PATTERNS: dict[str, str] = {
    "Pleural Effusion": _SEVERITY + r"(left|right)(-sided)? pleural effusion",
    "Pneumothorax": _SEVERITY + r"(left|right)( apical)? pneumothorax",
    "Consolidation": r"(focal )?consolidation (is present )?in the [a-z ]*?(lobe|lingula|zone)",
    "Lung Lesion": (_SIZE + r"((nodule|mass)( is seen)? in the (left|right) [a-z]+ lung"
                    r"|(left|right) [a-z]+ lung (nodule|mass))"),
    "Atelectasis": (_SEVERITY + r"(left|right) basilar atelectasis"
                    r"|(plate-like|basilar) atelectasis at the (left|right) lung base"
                    r"|" + _SEVERITY + r"atelectasis is seen at the (left|right) base"),
}

#: Methods of the benchmark and their settings (Captum defaults of ``attribute`` otherwise). A
#: ``"method"`` entry names the method when the key is a variant's label.
DEFAULT_METHODS: dict[str, dict] = {
    "ig_gated": {"method": "ig", **RECOMMENDED_IG, "n_steps": 32},
    "ig_blur_black": {"method": "ig", "baseline": ("blur", "black"), "smooth": 2.0, "n_steps": 32},
    "feature_ig": {"n_steps": 16},
    "ig": {"baseline": "blur", "n_steps": 32},
    "smoothgrad": {},
    "occlusion": {"baseline": "blur"},
    "saliency": {},
    "gradientshap": {},
    "gradcam": {},
    "layer_ig": {"baseline": "blur", "n_steps": 32},
    "attention": {},
    "grad_rollout": {},
}


def observation_phrase(text: str, observation: str) -> str:
    """The first wording of ``observation`` in ``text`` (see :data:`PHRASE_PATTERNS`)."""
    if observation not in PHRASE_PATTERNS:
        raise ValueError(f"no phrase pattern for {observation!r}; choose one of {sorted(PHRASE_PATTERNS)}")
    match = re.search(PHRASE_PATTERNS[observation], text, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"{observation!r} is not stated in {text[:100]!r}")
    return match.group(0)


def held_out_positives(n_per_observation: int, size: int, observations: Sequence[str] = LOCALIZED_OBSERVATIONS,
                       seed: int = HELD_OUT_SEED, max_cases: int = 20_000) -> list[tuple[object, str]]:
    """``(case, observation)`` pairs: the first ``n_per_observation`` held-out phantoms positive for
    each observation (a phantom with two findings can serve both)."""

    if n_per_observation < 1:
        raise ValueError(f"n_per_observation must be >= 1, got {n_per_observation}")
    counts = {obs: 0 for obs in observations}
    pairs: list[tuple[object, str]] = []
    for case in generate_cases(max_cases, size, seed=seed):
        for obs in observations:
            if counts[obs] < n_per_observation and obs in case.masks and case.masks[obs].any():
                pairs.append((case, obs))
                counts[obs] += 1
        if all(c >= n_per_observation for c in counts.values()):
            return pairs
    raise ValueError(f"only {counts} positives among {max_cases} held-out cases")


def evaluate_positives(model, pairs: Sequence[tuple[object, str]], methods: dict[str, dict] | None = None, *,
                       tolerance: float | None = None, curves: bool = False, steps: int = 16,
                       instruction: str = DEFAULT_INSTRUCTION, counterfactual: bool = True,
                       log: Callable[[str], None] | None = None) -> list[dict]:
    """One row per (case, observation, method) with pointing / energy (and curve AUCs).

    With ``counterfactual`` each row also gets ``score_change``: the target on the image minus the
    target on the same phantom without the finding. Near zero means the model's words do not
    depend on the lesion at all — then no faithful map can point at it.
    """

    methods = DEFAULT_METHODS if methods is None else methods
    size = model.encoder.config.image_size
    tolerance = default_tolerance(size) if tolerance is None else tolerance
    rows: list[dict] = []
    timings = {m: 0.0 for m in methods}
    for i, (case, obs) in enumerate(pairs):
        if case.image.shape != (size, size):
            raise ValueError(f"case {case.image_id} is {case.image.shape}, the model reads {size}x{size}")
        pixels = preprocess(case.image, size)[None]  # [1, 1, S, S]
        phrase = observation_phrase(case.summary, obs)
        target = phrase_target(model, phrase, case.summary, instruction)
        maps = {}
        for method, kwargs in methods.items():
            start = time.perf_counter()
            torch.manual_seed(i)
            settings = dict(kwargs)
            maps[method] = explain(target, pixels, settings.pop("method", method), **settings).map
            timings[method] += time.perf_counter() - start
        extra = {}
        if counterfactual:
            without = preprocess(counterfactual_pair(case, obs)[1].image, size)[None]
            with torch.no_grad():
                extra["score_change"] = float(target(pixels)[0] - target(without)[0])
        rows += evaluate_maps(maps, case.masks[obs], tolerance=tolerance, target=target if curves else None,
                              pixel_values=pixels if curves else None, curves=curves, steps=steps,
                              random_seed=i, observation=obs, case=case.image_id, phrase=phrase, **extra)
        if log is not None and (i + 1) % 10 == 0:
            log(f"{i + 1}/{len(pairs)} positives explained")
    for row in rows:
        row["seconds_per_map"] = timings.get(row["method"], 0.0) / max(1, len(pairs))
    return rows


def best_method(table) -> str:
    """The method (not ``random``) with the highest pooled score in a ``faithfulness_table``."""
    candidates = table.drop(index=[m for m in ("random",) if m in table.index])
    return str(candidates["all"].astype(float).idxmax())


def mask_area(pairs: Sequence[tuple[object, str]]) -> dict[str, float]:
    """Mean share of the image each observation's mask covers (how hard pointing is)."""
    areas: dict[str, list[float]] = {}
    for case, obs in pairs:
        areas.setdefault(obs, []).append(float(np.mean(case.masks[obs])))
    return {obs: float(np.mean(v)) for obs, v in areas.items()}
