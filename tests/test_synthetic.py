"""The synthetic world: determinism, image contract, masks on the right side and zone,
counterfactual locality, configuration and typed errors."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from xraygpt_lab.data.synthetic.anatomy import AnatomyParams
from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS
from xraygpt_lab.data.synthetic.lesions import DRAWABLE, Finding
from xraygpt_lab.data.synthetic.world import (
    WorldConfig,
    case_image_id,
    generate_cases,
    phantom_coordinates,
    render_case,
    toggle_finding,
)

SIZE = 96

# One finding per observation and side, in patient terms.
LATERAL_CASES = [
    Finding("Pleural Effusion", side="left", severity="moderate"),
    Finding("Pleural Effusion", side="right", severity="small"),
    Finding("Pneumothorax", side="left", severity="small"),
    Finding("Pneumothorax", side="right", severity="large"),
    Finding("Consolidation", side="left", zone="lower"),
    Finding("Consolidation", side="right", zone="upper"),
    Finding("Lung Lesion", side="left", zone="upper"),
    Finding("Lung Lesion", side="right", zone="lower"),
    Finding("Atelectasis", side="left"),
    Finding("Atelectasis", side="right"),
    Finding("Fracture", side="left"),
    Finding("Fracture", side="right"),
]


def test_same_seed_same_case_different_seed_different_image():
    a, b, c = render_case(11, SIZE), render_case(11, SIZE), render_case(12, SIZE)
    assert np.array_equal(a.image, b.image)
    assert a.report == b.report and a.findings == b.findings and a.labels == b.labels
    assert a.masks.keys() == b.masks.keys()
    assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert not np.array_equal(a.image, c.image)


def test_generate_cases_is_deterministic_and_ids_follow_seed_and_index():
    first = list(generate_cases(3, SIZE, seed=5))
    again = list(generate_cases(3, SIZE, seed=5))
    assert [c.image_id for c in first] == [case_image_id(5, i) for i in range(3)] == ["syn-s5-000000",
                                                                                      "syn-s5-000001",
                                                                                      "syn-s5-000002"]
    for x, y in zip(first, again):
        assert np.array_equal(x.image, y.image) and x.summary == y.summary
    # any single case can be regenerated alone from its own seed
    alone = render_case(first[1].seed, SIZE, image_id=first[1].image_id)
    assert np.array_equal(alone.image, first[1].image)


def test_image_contract_and_radiological_convention():
    case = render_case(3, SIZE, findings=[Finding("Cardiomegaly", severity="moderate")])
    img = case.image
    assert img.shape == (SIZE, SIZE) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    # air outside the body is dark; the mediastinum is bright; the lungs in between
    x, y = phantom_coordinates(case.anatomy, SIZE)
    corner = img[: SIZE // 10, : SIZE // 10].mean()
    assert corner < 0.15
    # the heart lies mostly on the patient's left = the image's RIGHT
    heart = case.masks["Cardiomegaly"]
    cols = np.nonzero(heart)[1]
    assert cols.mean() > SIZE / 2
    assert set(case.labels) == set(RENDERED_OBSERVATIONS)


@pytest.mark.parametrize("finding", LATERAL_CASES, ids=lambda f: f"{f.observation}-{f.side}")
def test_positive_mask_is_on_the_correct_side_and_zone(finding):
    for seed in (1, 2):
        case = render_case(seed, SIZE, findings=[finding])
        done = case.finding(finding.observation)
        mask = case.masks[finding.observation]
        assert mask.dtype == bool and mask.shape == (SIZE, SIZE)
        assert mask.sum() >= 4, "finding too small to see"
        x, y = phantom_coordinates(case.anatomy, SIZE)
        # patient's left = phantom x > 0 = image right (before the small rotation)
        sign = 1 if finding.side == "left" else -1
        assert sign * x[mask].mean() > 0.1
        assert (sign * x[mask] > 0).mean() > 0.95
        cols = np.nonzero(mask)[1]
        assert (cols.mean() > SIZE / 2) == (finding.side == "left")
        lo, hi = case.anatomy.zone_bounds(done.side)[done.zone] if done.zone else (-1.0, 1.0)
        assert lo - 0.05 <= float(np.median(y[mask])) <= hi + 0.05, (done.zone, lo, hi)


def test_edema_is_bilateral_and_perihilar():
    case = render_case(4, SIZE, findings=[Finding("Edema", severity="moderate")])
    mask = case.masks["Edema"]
    x, y = phantom_coordinates(case.anatomy, SIZE)
    assert (x[mask] > 0).sum() > 20 and (x[mask] < 0).sum() > 20
    lo, hi = case.anatomy.zone_bounds("right")["perihilar"]
    assert lo <= float(np.median(y[mask])) <= hi


def test_negatives_have_no_mask_and_no_finding_is_exclusive():
    normal = render_case(7, SIZE, findings=[])
    assert normal.masks == {} and normal.labels["No Finding"] == 1
    assert sum(normal.labels.values()) == 1
    case = render_case(7, SIZE, findings=[Finding("Pneumothorax", side="right"), Finding("Support Devices")])
    assert set(case.masks) == {"Pneumothorax", "Support Devices"}
    assert case.labels["No Finding"] == 0
    assert {o for o, v in case.labels.items() if v} == {"Pneumothorax", "Support Devices"}


@pytest.mark.parametrize("observation", DRAWABLE)
def test_toggling_a_finding_changes_only_its_own_region(observation):
    base = render_case(21, SIZE, findings=[Finding("Support Devices")] if observation != "Support Devices" else [])
    with_it = toggle_finding(base, observation)
    assert with_it.labels[observation] == 1
    mask = with_it.masks[observation]
    diff = np.abs(with_it.image - base.image)
    # visible: the finding changes its own region clearly (more than the noise)
    assert diff[mask].max() > 0.08  # noise sd is <= 0.028
    # local: outside the mask (plus the blur's reach) the pixels are bit-identical
    region = binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=3)
    assert np.count_nonzero(diff[~region]) == 0
    back = toggle_finding(with_it, observation)
    assert np.array_equal(back.image, base.image)


def test_cardiomegaly_raises_the_cardiothoracic_ratio():
    normal = render_case(5, SIZE, findings=[])
    big = render_case(5, SIZE, findings=[Finding("Cardiomegaly", severity="severe")])
    assert normal.anatomy.heart_ctr < 0.5 <= big.finding("Cardiomegaly").detail["ctr"]
    width_big = np.nonzero(big.masks["Cardiomegaly"].any(axis=0))[0]
    assert width_big.size / SIZE > 0.3


def test_findings_given_loosely_are_completed_from_the_seed():
    a = render_case(9, SIZE, findings=[Finding("Lung Lesion")])
    b = render_case(9, SIZE, findings=[Finding("Lung Lesion")])
    f = a.finding("Lung Lesion")
    assert f == b.finding("Lung Lesion")
    assert f.side in ("left", "right") and f.zone in ("upper", "middle", "lower")
    assert f.detail["kind"] in ("nodule", "mass") and f.detail["size_mm"] >= 12
    # lesion at least ~4 px across at 128 px
    big = render_case(9, 128, findings=[f])
    assert big.masks["Lung Lesion"].sum() >= 12


def test_anatomy_override_changes_the_picture():
    base = render_case(2, SIZE, findings=[])
    wider = AnatomyParams(**{**base.anatomy.as_dict(), "thorax_half_width": base.anatomy.thorax_half_width + 0.06})
    other = render_case(2, SIZE, findings=[], anatomy=wider)
    assert not np.array_equal(base.image, other.image)
    assert other.anatomy.thorax_half_width == pytest.approx(base.anatomy.thorax_half_width + 0.06)


def test_prevalence_and_normal_fraction_are_respected():
    none = WorldConfig(prevalence={o: 0.0 for o in DRAWABLE})
    assert all(c.labels["No Finding"] == 1 for c in generate_cases(8, 48, seed=1, config=none))
    only = WorldConfig(prevalence={"Pleural Effusion": 1.0}, co_occurrence={})
    for c in generate_cases(6, 48, seed=2, config=only):
        assert [f.observation for f in c.findings] == ["Pleural Effusion"]
    abnormal = WorldConfig(normal_fraction=0.0)
    assert all(c.findings for c in generate_cases(10, 48, seed=3, config=abnormal))
    capped = WorldConfig(prevalence={o: 1.0 for o in DRAWABLE}, max_findings=2)
    # two are drawn; one may be hidden by the other (then it is not labelled)
    assert all(len(c.findings) + len(c.hidden) == 2 and c.findings
               for c in generate_cases(4, 48, seed=4, config=capped))


def test_co_occurrence_raises_the_joint_rate():
    base = {"Cardiomegaly": 0.3, "Edema": 0.15}
    free = WorldConfig(prevalence=dict(base), co_occurrence={})
    tied = WorldConfig(prevalence=dict(base), co_occurrence={("Cardiomegaly", "Edema"): 3.0})
    from xraygpt_lab.data.synthetic.world import sample_findings

    def joint(cfg):
        rng = np.random.default_rng(0)
        draws = [{f.observation for f in sample_findings(rng, cfg)} for _ in range(3000)]
        return sum({"Cardiomegaly", "Edema"} <= d for d in draws) / len(draws)

    assert joint(tied) > 2 * joint(free)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed=-1), "seed"),
    (dict(seed=1, size=8), "size"),
    (dict(seed=1, findings=[Finding("Pneumonia")]), "cannot draw"),
    (dict(seed=1, findings=[Finding("Pleural Effusion", side="bilateral")]), "side"),
    (dict(seed=1, findings=[Finding("Pneumothorax", severity="huge")]), "severity"),
    (dict(seed=1, findings=[Finding("Fracture"), Finding("Fracture")]), "twice"),
])
def test_bad_input_raises_value_error_with_a_useful_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_case(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(prevalence={"Pneumonia": 0.1}), dict(prevalence={"Edema": 1.5}),
    dict(normal_fraction=1.0), dict(max_findings=0), dict(co_occurrence={("Edema", "Nope"): 2.0}),
])
def test_bad_world_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        WorldConfig(**kwargs)


def test_generate_cases_rejects_bad_n():
    with pytest.raises(ValueError, match="n must"):
        list(generate_cases(0))
