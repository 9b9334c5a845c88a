"""Faithfulness metrics on hand-made maps, and the pointing-game bar on the trained tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xraygpt_lab.exercises.interpret import check_pointing_game
from xraygpt_lab.interpret.faithfulness import (default_tolerance, energy_in_mask, evaluate_maps,
                                                faithfulness_table, perturbation_curve, pointing_hit,
                                                random_map, random_pointing_rate, summary_table)


def lesion_mask(shape=(40, 40)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[10:16, 24:30] = True
    return mask


def test_pointing_game_hits_inside_and_within_euclidean_tolerance() -> None:
    mask = lesion_mask()
    saliency = np.zeros((40, 40))
    saliency[12, 26] = 1
    assert pointing_hit(saliency, mask, tolerance=0)
    saliency = np.zeros((40, 40))
    saliency[19, 27] = 1  # 4 rows below the last mask row (15)
    assert pointing_hit(saliency, mask, tolerance=4) and not pointing_hit(saliency, mask, tolerance=3)
    saliency = np.zeros((40, 40))
    saliency[18, 32] = 1  # (3, 3) from the corner (15, 29): distance 4.24
    assert not pointing_hit(saliency, mask, tolerance=4) and pointing_hit(saliency, mask, tolerance=4.3)
    assert not pointing_hit(np.ones((40, 40)), mask)  # a flat map points nowhere
    assert default_tolerance(128) == 4 and default_tolerance(224) == 7
    with pytest.raises(ValueError, match="empty"):
        pointing_hit(saliency, np.zeros((40, 40), bool))
    with pytest.raises(ValueError, match="same shape"):
        pointing_hit(saliency, mask[:20])


def test_random_baseline_rate_is_the_dilated_area_and_matches_random_maps() -> None:
    mask = lesion_mask()
    expected = random_pointing_rate(mask, 2)
    # the 6 × 6 lesion grown by 2 px: a 10 × 10 square minus 3 pixels at each corner farther than 2 px
    assert expected == pytest.approx((100 - 4 * 3) / 1600)
    hits = [pointing_hit(random_map((40, 40), seed=s), mask, 2) for s in range(1500)]
    assert np.mean(hits) == pytest.approx(expected, abs=0.025)


def test_energy_in_mask() -> None:
    mask = lesion_mask()
    assert energy_in_mask(mask.astype(float), mask) == pytest.approx(1.0)
    assert energy_in_mask(np.ones((40, 40)), mask) == pytest.approx(mask.mean())
    assert np.isnan(energy_in_mask(-mask.astype(float), mask))  # no positive mass at all


class SumTarget(torch.nn.Module):
    """Sum of the pixels under the mask (a linear target whose evidence is exactly the mask)."""

    def __init__(self, mask: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mask", torch.from_numpy(mask).float())

    def forward(self, x):
        return (x[:, 0] * self.mask).sum(dim=(-1, -2))


def test_deletion_and_insertion_reward_the_right_map() -> None:
    mask = lesion_mask()
    target = SumTarget(mask)
    pixels = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(0)) + 2.0
    good = mask.astype(float)
    bad = random_map((40, 40), seed=1)
    d_good = perturbation_curve(target, pixels, good, "deletion", steps=20, baseline="black")
    d_bad = perturbation_curve(target, pixels, bad, "deletion", steps=20, baseline="black")
    i_good = perturbation_curve(target, pixels, good, "insertion", steps=20, baseline="black")
    i_bad = perturbation_curve(target, pixels, bad, "insertion", steps=20, baseline="black")
    assert d_good.normalised[0] == pytest.approx(1) and d_good.normalised[-1] == pytest.approx(0, abs=1e-6)
    assert i_good.normalised[0] == pytest.approx(0, abs=1e-6) and i_good.normalised[-1] == pytest.approx(1)
    assert d_good.auc < 0.1 < 0.4 < d_bad.auc
    assert i_good.auc > 0.9 > 0.6 > i_bad.auc
    flat = perturbation_curve(lambda x: torch.zeros(x.shape[0]), pixels, good)
    assert np.isnan(flat.auc)  # nothing to normalise by
    # a baseline that scores higher than the image (a blurred copy keeps a smooth opacity): no curve,
    # rather than one divided by a negative gap
    inverted = perturbation_curve(lambda x: -target(x), pixels, good, "deletion", baseline="black")
    assert inverted.gap < 0 and np.isnan(inverted.auc)
    for curve in (d_good, d_bad, i_good, i_bad):  # always within [0, 1]
        assert 0.0 <= curve.normalised.min() and curve.normalised.max() <= 1.0 and curve.gap > 0
    with pytest.raises(ValueError, match="kind"):
        perturbation_curve(target, pixels, good, "erase")


def test_table_puts_every_method_beside_the_random_baseline() -> None:
    mask = lesion_mask()
    right = mask.astype(float)
    wrong = np.roll(right, 20, axis=0)
    rows = []
    for i, obs in enumerate(["Pleural Effusion", "Pneumothorax"]):
        rows += evaluate_maps({"right": right, "wrong": wrong}, mask, tolerance=2, observation=obs, case=i,
                              random_seed=i)
    table = faithfulness_table(rows)
    assert list(table.index) == ["right", "random", "wrong"]
    assert table.loc["right", "all"] == 1.0 and table.loc["wrong", "all"] == 0.0
    assert table.loc["random", "all"] == pytest.approx(random_pointing_rate(mask, 2))
    assert table.loc["right", "n"] == 2 and "Pneumothorax" in table.columns
    energy = faithfulness_table(rows, "energy")
    assert energy.loc["right", "all"] == pytest.approx(1.0)
    summary = summary_table(rows)
    assert summary.loc["right", "pointing"] == 1.0


def test_pointing_game_checker_passes_the_library_and_explains_mistakes() -> None:
    assert check_pointing_game(pointing_hit)

    def any_high_value(saliency, mask, tolerance):
        return bool((saliency[mask] >= 0.5 * saliency.max()).any())

    result = check_pointing_game(any_high_value)
    assert not result and "MAXIMUM" in str(result)

    def square_window(saliency, mask, tolerance):
        from scipy.ndimage import binary_dilation

        r, c = np.unravel_index(np.argmax(saliency), saliency.shape)
        size = 2 * int(tolerance) + 1
        grown = binary_dilation(mask, np.ones((size, size))) if tolerance else mask
        return bool(saliency.max() > saliency.min() and grown[r, c])

    result = check_pointing_game(square_window)
    assert not result and "Euclidean" in str(result)


def test_observation_phrase_is_the_whole_noun_phrase_of_the_finding() -> None:
    """The phrase keeps the size / severity words: nothing in the teacher-forced words before it
    may already say that the finding is there ("A 15 mm" before "nodule in …")."""
    import re

    from xraygpt_lab.data.synthetic.world import generate_cases
    from xraygpt_lab.interpret.localization import LOCALIZED_OBSERVATIONS, observation_phrase

    giveaway = re.compile(r"\b(small|mild|moderate|large|severe|plate-like|basilar|focal|\d+(\.\d+)? ?(mm|cm))\W*$",
                          re.IGNORECASE)
    seen: dict[str, int] = {}
    for case in generate_cases(400, 64, seed=4242):
        for obs in LOCALIZED_OBSERVATIONS:
            if obs not in case.masks or not case.masks[obs].any():
                continue
            phrase = observation_phrase(case.summary, obs)
            start = case.summary.lower().find(phrase.lower())
            sentence_start = max(case.summary.rfind(". ", 0, start) + 2, 0)
            before = case.summary[sentence_start:start]
            assert not giveaway.search(before), (obs, before, phrase)
            side = next(f.side for f in case.findings if f.observation == obs)
            assert side in phrase.lower() or "lingula" in phrase.lower(), (obs, side, phrase)
            seen[obs] = seen.get(obs, 0) + 1
    assert set(seen) == set(LOCALIZED_OBSERVATIONS) and min(seen.values()) >= 10, seen
    with pytest.raises(ValueError, match="not stated"):
        observation_phrase("No pleural effusion or pneumothorax.", "Pleural Effusion")


# ------------------------------------------------------------------ the bar, on the trained tiny run
@pytest.mark.slow
def test_recommended_ig_points_at_held_out_lesions() -> None:
    """40 held-out positives (8 per localized observation): the recommended IG points at ≥ 0.5
    of them, ≥ random + 0.4, and puts at least twice plain IG's share of its evidence on the finding.

    The bar (≥ 0.80) is measured by ``benchmarks/faithfulness.py`` on 300 positives
    (docs/design-notes.md). These first 40 positives are harder than the rest, and 40 positives
    add ± 0.07 (binomial) to a pointing rate, so this smaller set asks for 0.5. On these films
    plain IG's peak often lands on the finding too (0.70–0.75 on 40), so the pointing rates of the
    two differ by one or two films either way; what the gate reliably changes is where the rest of
    the map goes: plain IG spreads it over bright anatomy (energy on the finding 0.18, the gated
    map 0.57 on one training).
    """
    from xraygpt_lab.interpret.attribution import RECOMMENDED_IG
    from xraygpt_lab.interpret.localization import evaluate_positives, held_out_positives
    from xraygpt_lab.runs import ensure_tiny_run, load_run

    model = load_run(ensure_tiny_run(progress=False))
    pairs = held_out_positives(8, model.encoder.config.image_size)
    methods = {"ig_gated": {"method": "ig", **RECOMMENDED_IG, "n_steps": 16},
               "ig": {"baseline": "blur", "n_steps": 16}}
    rows = evaluate_positives(model, pairs, methods)
    table = faithfulness_table(rows)
    rate, random_rate = float(table.loc["ig_gated", "all"]), float(table.loc["random", "all"])
    assert table.loc["random", "n"] == 40 and 0 < random_rate < 0.2
    energy = faithfulness_table(rows, "energy")
    gated_energy, plain_energy = float(energy.loc["ig_gated", "all"]), float(energy.loc["ig", "all"])
    summary = (f"pointing: gated IG {rate:.2f}, plain IG {table.loc['ig', 'all']:.2f}, random {random_rate:.2f}; "
               f"energy on the finding: gated {gated_energy:.2f}, plain {plain_energy:.2f}")
    assert rate >= 0.5 and rate >= random_rate + 0.4, summary
    assert gated_energy >= 2 * plain_energy, summary


def test_reliance_table_splits_cases_by_the_counterfactual_gain() -> None:
    from xraygpt_lab.interpret.faithfulness import reliance_table

    rows = [{"method": "ig", "pointing": 1.0, "score_change": 2.0},
            {"method": "ig", "pointing": 1.0, "score_change": 0.9},
            {"method": "ig", "pointing": 0.0, "score_change": 0.1},
            {"method": "random", "pointing": 0.0, "pointing_expected": 0.05, "score_change": 2.0},
            {"method": "random", "pointing": 1.0, "pointing_expected": 0.07, "score_change": 0.1}]
    table = reliance_table(rows)
    assert table.loc["ig", "uses"] == 1.0 and table.loc["ig", "ignores"] == 0.0
    assert table.loc["ig", "n_uses"] == 2 and table.loc["ig", "n_ignores"] == 1
    assert table.loc["random", "uses"] == pytest.approx(0.05)  # the exact expectation, not the draw
    assert reliance_table(rows, threshold=1.0).loc["ig", "n_uses"] == 1
    with pytest.raises(ValueError, match="score_change"):
        reliance_table([{"method": "ig", "pointing": 1.0}])
