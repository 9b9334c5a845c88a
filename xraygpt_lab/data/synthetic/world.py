"""The synthetic chest-radiograph world: seeded films with findings, masks and reports.

``render_case(seed)`` draws one frontal radiograph (PA, or AP portable) of a parametric
patient (``anatomy``, ``skeleton``, ``vessels``, assembled by ``phantom``), adds the findings
as the signs a textbook teaches (``signs``, ``devices``), forms the image physically (``film``:
Beer-Lambert line integrals, detector blur, quantum noise, processing) and writes its reports
(``reports``). Everything comes from ``seed`` through independent random streams:

==========  ============================================================
stream 0    patient and acquisition (shape, view, kVp, dose, rotation ...)
stream 1    which findings are present (``WorldConfig`` prevalence)
stream 2    detector noise (depends on the seed only)
stream 3    the unspecified details of each finding (location, size ...)
stream 4    report wording
stream 5    the texture of each finding
stream 6    the real lung-field shape (``WorldConfig(lung_shapes="real")``)
stream 7    real finding geometry (``WorldConfig(finding_geometry="real")``), per observation
==========  ============================================================

So ``render_case(seed, findings=[...])`` draws the SAME patient with other findings, and the
pixels outside the changed findings' masks stay bit-identical (the blur is local, the noise
and the processing depend on the patient only): counterfactuals for the interpretability
notebooks. A finding that the film does not show (e.g. basal atelectasis behind a large heart)
is neither labelled nor reported: it goes to ``SyntheticCase.hidden``.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from xraygpt_lab.data.synthetic import anatomy as anat
from xraygpt_lab.data.synthetic.anatomy import AnatomyParams, sample_anatomy
from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS
from xraygpt_lab.data.synthetic.devices import draw_support_devices
from xraygpt_lab.data.synthetic.film import Maps, develop, line_integral, processing_for
from xraygpt_lab.data.synthetic.lesions import (
    DRAWABLE,
    Finding,
    complete_finding,
    validate_finding,
)
from xraygpt_lab.data.synthetic.phantom import build_maps
from xraygpt_lab.data.synthetic.real_findings import finding_boxes, real_finding
from xraygpt_lab.data.synthetic.signs import (
    draw_atelectasis,
    draw_cardiomegaly,
    draw_consolidation,
    draw_edema,
    draw_effusion,
    draw_fracture,
    draw_lesion,
    draw_pneumothorax,
)

#: How each observation is drawn: ``fn(maps, finding, rng) -> mask``.
DRAWERS = {
    "Cardiomegaly": lambda m, f, rng: draw_cardiomegaly(m, f),
    "Pleural Effusion": lambda m, f, rng: draw_effusion(m, f),
    "Pneumothorax": lambda m, f, rng: draw_pneumothorax(m, f),
    "Consolidation": draw_consolidation,
    "Lung Lesion": draw_lesion,
    "Edema": draw_edema,
    "Atelectasis": draw_atelectasis,
    "Support Devices": lambda m, f, rng: draw_support_devices(m, f),
    "Fracture": lambda m, f, rng: draw_fracture(m, f),
}

__all__ = [
    "AnatomyParams", "Finding", "SyntheticCase", "WorldConfig", "DEFAULT_PREVALENCE",
    "DEFAULT_CO_OCCURRENCE", "render_case", "generate_cases", "case_seed", "case_image_id",
    "sample_findings", "phantom_coordinates", "MIN_SIZE", "Conspicuity", "conspicuity",
]

#: Smallest image side we render (below this the ribs and lesions vanish).
MIN_SIZE: int = 32
#: Version of the world: raised whenever a seed's films or texts change, so a model trained on an
#: older world is not taken for one of this world (``config.json``'s ``world``; runs from before
#: the physically formed films have none and count as version 1).
WORLD_VERSION: int = 3

#: Default prevalence of each drawn observation (before co-occurrence), roughly the order of
#: frequency in MIMIC-CXR's CheXpert labels but flattened so rare findings are learnable.
DEFAULT_PREVALENCE: dict[str, float] = {
    "Cardiomegaly": 0.20,
    "Pleural Effusion": 0.20,
    "Pneumothorax": 0.12,
    "Consolidation": 0.14,
    "Lung Lesion": 0.12,
    "Edema": 0.10,
    "Atelectasis": 0.15,
    "Support Devices": 0.18,
    "Fracture": 0.08,
}

#: Probability multipliers for the later-sampled observation of a pair when the other is present
#: (heart failure: cardiomegaly, edema and effusions travel together; trauma: fracture and
#: pneumothorax; the ICU patient has lines and edema).
DEFAULT_CO_OCCURRENCE: dict[tuple[str, str], float] = {
    ("Cardiomegaly", "Edema"): 3.0,
    ("Cardiomegaly", "Pleural Effusion"): 1.6,
    ("Pleural Effusion", "Edema"): 2.0,
    ("Pleural Effusion", "Atelectasis"): 1.8,
    ("Pneumothorax", "Fracture"): 3.0,
    ("Edema", "Support Devices"): 2.0,
    ("Consolidation", "Pleural Effusion"): 1.3,
}


@dataclass
class WorldConfig:
    """How the world samples findings.

    ``prevalence``: probability of each drawn observation; ``co_occurrence``: multiplier on the
    probability of one observation of a pair when the other was already sampled positive
    (symmetric; a boosted probability stops at 0.95); ``normal_fraction``: if set, exactly this share
    of images (in expectation) is "No Finding" and the rest have at least one finding;
    ``max_findings`` caps the findings per image; ``noise_scale`` multiplies detector noise;
    ``lung_shapes``: ``"builtin"`` parametric lung fields, or ``"real"`` to draw each patient's
    lung-field shape from the real lung segmentations in the torchxrayvision wheel
    (``real_shapes``; falls back to built-in, with a warning, when they are not cached);
    ``finding_geometry``: ``"builtin"``, or ``"real"`` to take the sides, zones, sizes and
    severities of effusions, pneumothoraces, consolidations, atelectasis, nodules and masses from
    real annotations (``real_findings``: NIH, RSNA and SIIM tables of the same wheel; built-in,
    with a warning, when they are not cached).
    """

    prevalence: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))
    co_occurrence: dict[tuple[str, str], float] = field(default_factory=lambda: dict(DEFAULT_CO_OCCURRENCE))
    normal_fraction: float | None = None
    max_findings: int = 4
    noise_scale: float = 1.0
    lung_shapes: str = "builtin"
    finding_geometry: str = "builtin"

    def __post_init__(self) -> None:
        for obs, p in self.prevalence.items():
            if obs not in DRAWABLE:
                raise ValueError(f"prevalence: unknown observation {obs!r}; choose from {list(DRAWABLE)}")
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"prevalence of {obs!r} must be in [0, 1], got {p}")
        for pair, m in self.co_occurrence.items():
            if len(pair) != 2 or any(o not in DRAWABLE for o in pair):
                raise ValueError(f"co_occurrence: bad pair {pair!r}")
            if float(m) < 0:
                raise ValueError(f"co_occurrence multiplier for {pair!r} must be >= 0, got {m}")
        if self.normal_fraction is not None and not 0.0 <= self.normal_fraction < 1.0:
            raise ValueError(f"normal_fraction must be in [0, 1), got {self.normal_fraction}")
        if self.max_findings < 1:
            raise ValueError(f"max_findings must be >= 1, got {self.max_findings}")
        if self.noise_scale < 0:
            raise ValueError(f"noise_scale must be >= 0, got {self.noise_scale}")
        if self.lung_shapes not in ("builtin", "real"):
            raise ValueError(f"lung_shapes must be 'builtin' or 'real', got {self.lung_shapes!r}")
        if self.finding_geometry not in ("builtin", "real"):
            raise ValueError(f"finding_geometry must be 'builtin' or 'real', got {self.finding_geometry!r}")


@dataclass
class SyntheticCase:
    """One synthetic study: image, labels, findings, masks and the three kinds of text."""

    image_id: str
    image: np.ndarray                 # [H, W] float32 in [0, 1]; 0 = air (black), 1 = bone (white)
    labels: dict[str, int]            # every RENDERED_OBSERVATION -> 0/1
    findings: list[Finding]
    masks: dict[str, np.ndarray]      # observation -> bool [H, W], positives only (not No Finding)
    anatomy: AnatomyParams
    report: str                       # "FINDINGS: ...\n\nIMPRESSION: ..." MIMIC style
    summary: str                      # XrayGPT-style summary (the training caption)
    conversation: list[dict]          # [{"question": ..., "answer": ...}, ...]
    seed: int = 0                     # render_case(seed, findings=...) redraws this phantom
    hidden: list[Finding] = field(default_factory=list)  # drawn by the sampler, not visible: unlabelled

    def finding(self, observation: str) -> Finding | None:
        """The finding for ``observation``, or None when it is negative."""
        return next((f for f in self.findings if f.observation == observation), None)


# ----------------------------------------------------------------------------------------------
# Seeds and sampling
# ----------------------------------------------------------------------------------------------
def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def case_seed(seed: int, index: int) -> int:
    """Seed of image ``index`` of the dataset generated with ``seed`` (32-bit)."""
    return int(np.random.SeedSequence([_check_seed(seed), 7, int(index)]).generate_state(1)[0])


def case_image_id(seed: int, index: int) -> str:
    """Deterministic image id, e.g. ``syn-s0-000123``."""
    return f"syn-s{seed}-{index:06d}"


def sample_findings(rng: np.random.Generator, config: WorldConfig) -> list[Finding]:
    """Draw which observations are present (sides etc. are filled later by ``complete_finding``)."""
    force_normal = None
    if config.normal_fraction is not None:
        force_normal = rng.random() < config.normal_fraction
        if force_normal:
            return []
    for _ in range(100):
        present: list[str] = []
        for obs in DRAWABLE:
            base = p = float(config.prevalence.get(obs, 0.0))
            for other in present:
                p *= config.co_occurrence.get((other, obs), config.co_occurrence.get((obs, other), 1.0))
            if rng.random() < min(p, max(base, 0.95)):  # co-occurrence boosts stop at 0.95
                present.append(obs)
        if len(present) > config.max_findings:
            present = [present[i] for i in sorted(rng.choice(len(present), config.max_findings, replace=False))]
        if present or force_normal is None or not any(config.prevalence.values()):
            break
    return [Finding(obs) for obs in present]


def _complete_all(findings: list[Finding], anatomy: AnatomyParams, seed: int,
                  real_geometry: bool = False) -> list[Finding]:
    """Validate, complete and order findings (from real annotations first when
    ``real_geometry``); keep an effusion and a pneumothorax apart."""
    seen: set[str] = set()
    for f in findings:
        if not isinstance(f, Finding):
            raise ValueError(f"findings must be Finding objects, got {type(f).__name__}")
        validate_finding(f)
        if f.observation in seen:
            raise ValueError(f"observation {f.observation!r} given twice; give one Finding per observation")
        seen.add(f.observation)
    ordered = sorted(findings, key=lambda f: DRAWABLE.index(f.observation))
    if real_geometry:
        finding_boxes()  # read once; warns when the tables are missing, even for a normal film
    done: list[Finding] = []
    for f in ordered:
        k = DRAWABLE.index(f.observation)
        if real_geometry:
            f = real_finding(f, anatomy, _rng(seed, 7, k))
        g = complete_finding(f, anatomy, _rng(seed, 3, k))
        done.append(g)
    by_obs = {f.observation: f for f in done}
    eff, ptx = by_obs.get("Pleural Effusion"), by_obs.get("Pneumothorax")
    if eff and ptx and eff.side == ptx.side:
        explicit = next(f for f in findings if f.observation == "Pneumothorax").side is not None
        if not explicit:
            ptx.side = "left" if eff.side == "right" else "right"
            ptx.detail = dict(ptx.detail)
    return done


def phantom_coordinates(anatomy: AnatomyParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Phantom (x, y) of each pixel, [size, size] each: x > 0 is the PATIENT's left."""
    return anat.coordinate_grid(anatomy, size)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------
#: Films are judged for visibility at this size (the tiny profile's 128 px, 3.1 mm pixels), so
#: the labels of a seed do not depend on the size it is rendered at.
REFERENCE_SIZE: int = 128
#: A finding is visible when it changes at least VISIBLE_PIXELS pixels, and VISIBLE_FRACTION of
#: its mask, of the reference film by at least VISIBLE_DELTA (about three times the quantum
#: noise in the lungs).
VISIBLE_DELTA: float = 0.04
VISIBLE_PIXELS: int = 4
VISIBLE_FRACTION: float = 0.05
#: ... and its largest change reaches VISIBLE_PEAK: a nodule over the heart, a dome or a rib
#: crossing that changes its pixels by less is not seen by a reader at this size (nor found by
#: the encoder: 40 % of such lesions were, against 80-100 % of brighter ones), so it is neither
#: labelled nor reported, as a missed nodule is in a real report.
VISIBLE_PEAK: float = 0.10
#: Findings whose sign another finding or the heart can hide; the others (an enlarged heart,
#: pleural fluid or air, bilateral edema, metal) always show, which ``tests/test_synthetic_signs``
#: checks over thousands of studies.
OCCLUDABLE: frozenset[str] = frozenset({"Consolidation", "Lung Lesion", "Atelectasis", "Fracture"})


def _draw(base: Maps, findings: list[Finding], seed: int) -> tuple[Maps, dict[str, np.ndarray]]:
    """A copy of ``base`` with ``findings`` drawn (each from its own random stream) and masks."""
    maps = base.copy()
    masks: dict[str, np.ndarray] = {}
    for f in sorted(findings, key=lambda g: DRAWABLE.index(g.observation)):
        rng = _rng(seed, 5, DRAWABLE.index(f.observation))
        masks[f.observation] = DRAWERS[f.observation](maps, f, rng).astype(bool)
    return maps, masks


def _film(maps: Maps, params: AnatomyParams, proc, size: int, noise: np.ndarray | None) -> np.ndarray:
    return develop(line_integral(maps, params), params, proc, size, noise)


@dataclass
class _Film:
    """One patient's anatomy maps at one size, its processing and its finding-free film."""

    base: Maps
    proc: object
    P: np.ndarray  # line integral without findings

    def plain(self, params: AnatomyParams) -> np.ndarray:
        """The noise-free film without findings."""
        return develop(self.P, params, self.proc, self.P.shape[0], None)


def _prepare(params: AnatomyParams, size: int) -> _Film:
    base = build_maps(params, size)
    P = line_integral(base, params)
    return _Film(base, processing_for(params, P, size), P)


def visible_findings(params: AnatomyParams, findings: list[Finding], seed: int,
                     film: _Film | None = None):
    """Split ``findings`` into (visible, hidden) on the noise-free reference film: a finding is
    hidden when removing it changes fewer than VISIBLE_PIXELS pixels of its mask by
    VISIBLE_DELTA (e.g. basal atelectasis behind a large heart, or under an effusion).
    Also returns the maps and masks with every finding drawn."""
    film = film or _prepare(params, REFERENCE_SIZE)
    maps, masks = _draw(film.base, findings, seed)
    if not findings:
        return [], [], (maps, masks)
    full = None
    visible, hidden = [], []
    for f in findings:
        if f.observation not in OCCLUDABLE:
            visible.append(f)
            continue
        full = _film(maps, params, film.proc, REFERENCE_SIZE, None) if full is None else full
        change = _change_in_mask(film, params, findings, f, seed, full, masks[f.observation])
        seen = int(np.count_nonzero(change >= VISIBLE_DELTA))
        enough = seen >= max(VISIBLE_PIXELS, VISIBLE_FRACTION * change.size) and change.max(initial=0.0) >= VISIBLE_PEAK
        (visible if enough else hidden).append(f)
    return visible, hidden, (maps, masks)


def _change_in_mask(film: _Film, params: AnatomyParams, findings: list[Finding], finding: Finding, seed: int,
                    full: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``|film with findings − film without finding|`` inside ``mask``, noise-free: ``[pixels in mask]``."""
    rest = [g for g in findings if g is not finding]
    without = _film(_draw(film.base, rest, seed)[0], params, film.proc, REFERENCE_SIZE, None) if rest else film.plain(params)
    return np.abs(full - without)[mask]


@dataclass(frozen=True)
class Conspicuity:
    """How strongly one finding shows on the noise-free reference film (``REFERENCE_SIZE``), inside
    its mask: what a reader, or an encoder, has to go on. A finding is labelled when
    ``changed_pixels`` reaches the visibility rule (``VISIBLE_PIXELS``, ``VISIBLE_FRACTION``) and
    ``peak`` reaches ``VISIBLE_PEAK`` (a 20 mm nodule changes some 30 pixels by about 0.13, a
    rib fracture with its hematoma some 100 pixels by 0.4, a mass hundreds of pixels by 0.25)."""

    changed_pixels: int  # pixels changed by at least VISIBLE_DELTA
    peak: float  # largest change (film intensity, 0-1)
    integrated: float  # summed change over the mask
    mask_pixels: int


def conspicuity(case: SyntheticCase, observation: str) -> Conspicuity:
    """:class:`Conspicuity` of ``case``'s finding of ``observation`` (redrawn noise-free at
    ``REFERENCE_SIZE`` with and without it; a few ms)."""
    finding = next((f for f in case.findings if f.observation == observation), None)
    if finding is None:
        drawn = sorted({f.observation for f in case.findings})
        raise ValueError(f"{case.image_id} has no {observation!r} finding (it has: {', '.join(drawn) or 'none'})")
    film = _prepare(case.anatomy, REFERENCE_SIZE)
    maps, masks = _draw(film.base, case.findings, case.seed)
    full = _film(maps, case.anatomy, film.proc, REFERENCE_SIZE, None)
    change = _change_in_mask(film, case.anatomy, case.findings, finding, case.seed, full, masks[observation])
    return Conspicuity(changed_pixels=int(np.count_nonzero(change >= VISIBLE_DELTA)),
                       peak=float(change.max(initial=0.0)), integrated=float(change.sum()), mask_pixels=int(change.size))


def _render(anatomy: AnatomyParams, findings: list[Finding], size: int, seed: int,
            noise_scale: float) -> tuple[np.ndarray, dict[str, np.ndarray], list[Finding], list[Finding]]:
    """Image [H, W] float32, masks, visible and hidden findings for completed ``findings``."""
    film = _prepare(anatomy, size)
    visible, hidden = [], []
    if findings:
        reference = film if size == REFERENCE_SIZE else _prepare(anatomy, REFERENCE_SIZE)
        visible, hidden, drawn = visible_findings(anatomy, findings, seed, reference)
    if findings and size == REFERENCE_SIZE and not hidden:
        maps, masks = drawn
    else:
        maps, masks = _draw(film.base, visible, seed)
    noise = _rng(seed, 2).standard_normal((size, size), dtype=np.float32) * np.float32(noise_scale)
    image = _film(maps, anatomy, film.proc, size, noise if noise_scale > 0 else None)
    return image, masks, visible, hidden


def render_case(seed: int, size: int = 128, config: WorldConfig | None = None,
                findings: list[Finding] | None = None, image_id: str | None = None,
                anatomy: AnatomyParams | None = None) -> SyntheticCase:
    """Draw one synthetic study.

    ``seed`` fixes the anatomy, exposure and noise; ``findings`` (if given) replaces the sampled
    findings (missing details are filled from the seed), so toggling one finding changes only
    the pixels in its own mask (plus the blur's 2-pixel reach). ``anatomy`` overrides the sampled
    anatomy (turn a parameter and redraw).
    """
    from xraygpt_lab.data.synthetic.reports import write_texts

    seed = _check_seed(seed)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE} pixels, got {size!r}")
    config = config or WorldConfig()
    params = anatomy if anatomy is not None else sample_anatomy(_rng(seed, 0))
    if anatomy is None and config.lung_shapes == "real":
        from xraygpt_lab.data.synthetic.real_shapes import apply_real_shape

        apply_real_shape(params, _rng(seed, 6))
    if findings is None:
        findings = sample_findings(_rng(seed, 1), config)
    findings = _complete_all(list(findings), params, seed, config.finding_geometry == "real")
    image, masks, findings, hidden = _render(params, findings, int(size), seed, config.noise_scale)
    labels = {obs: 0 for obs in RENDERED_OBSERVATIONS}
    for f in findings:
        labels[f.observation] = 1
    labels["No Finding"] = int(not findings)
    report, summary, conversation = write_texts(findings, _rng(seed, 4))
    return SyntheticCase(
        image_id=image_id or f"syn-{seed}",
        image=image, labels=labels, findings=findings, masks=masks, anatomy=params,
        report=report, summary=summary, conversation=conversation, seed=seed, hidden=hidden,
    )


def generate_cases(n: int, size: int = 128, seed: int = 0,
                   config: WorldConfig | None = None) -> Iterator[SyntheticCase]:
    """Yield ``n`` cases; case ``i`` is ``render_case(case_seed(seed, i), ...)`` with id
    ``case_image_id(seed, i)``, so any single case can be regenerated on its own."""
    n, seed = _check_n(n), _check_seed(seed)
    config = config or WorldConfig()
    for i in range(n):
        yield render_case(case_seed(seed, i), size, config, image_id=case_image_id(seed, i))


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    return int(n)


def _render_indexed(job: tuple[int, int, int, WorldConfig]) -> SyntheticCase:
    seed, index, size, config = job
    return render_case(case_seed(seed, index), size, config, image_id=case_image_id(seed, index))


def render_cases(n: int, size: int = 128, seed: int = 0, config: WorldConfig | None = None,
                 workers: int | None = None) -> list[SyntheticCase]:
    """The cases of ``generate_cases(n, size, seed, config)`` as a list, rendered in ``workers``
    processes (default: every CPU when ``n >= 256``; each case has its own seed, so the result is
    the same for any number of workers)."""
    import multiprocessing
    import os
    import sys

    n, seed = _check_n(n), _check_seed(seed)
    if workers is None:
        workers = (os.cpu_count() or 1) if n >= 256 else 1
    if workers <= 1:
        return list(generate_cases(n, size, seed, config))
    jobs = [(seed, i, size, config or WorldConfig()) for i in range(n)]
    sys.stdout.flush()  # a forked worker must not inherit (and re-print) buffered output
    sys.stderr.flush()
    with multiprocessing.get_context().Pool(workers) as pool:
        return list(pool.imap(_render_indexed, jobs, chunksize=max(1, min(64, n // (4 * workers)))))


def toggle_finding(case: SyntheticCase, observation: str, finding: Finding | None = None,
                   config: WorldConfig | None = None) -> SyntheticCase:
    """Counterfactual: the same phantom with ``observation`` removed (if present) or added."""
    current = [replace(f) for f in case.findings]
    if any(f.observation == observation for f in current):
        new = [f for f in current if f.observation != observation]
    else:
        new = current + [finding or Finding(observation)]
    size = case.image.shape[0]
    return render_case(case.seed, size, config, findings=new, image_id=case.image_id, anatomy=case.anatomy)
