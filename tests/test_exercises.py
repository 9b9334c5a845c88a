"""Exercise checkers: solutions pass, wrong answers fail with a diagnosis, references are right."""
from __future__ import annotations

import html
import importlib

import numpy as np
import pytest
import torch

import xraygpt_lab.exercises as exercises
from xraygpt_lab.exercises import checking
from xraygpt_lab.exercises.checking import Case, CheckResult, ExerciseFailed, Mistake, describe_difference, run_check

#: solution file → [(function, checker)]
SOLUTIONS = {
    "s00_synthetic_world": [("cardiothoracic_ratio", "check_cardiothoracic_ratio"), ("finding_side", "check_finding_side")],
    "s00b_real_data": [("keep_report", "check_keep_report"), ("drop_comparisons", "check_drop_comparisons")],
    "s01_vision_encoder": [("soft_label_loss", "check_soft_label_loss")],
    "s02_language_model": [("rms_norm", "check_rms_norm"), ("apply_rope", "check_rope")],
    "s03_alignment": [("xraygpt_labels", "check_xraygpt_labels")],
    "s04_chat": [("escape_message", "check_escape_message"), ("fit_history", "check_fit_history")],
    "s05_attribution": [("pointing_game", "check_pointing_game")],
    "s06_attention": [("rollout", "check_rollout")],
    "s07_evaluation": [("ce_scores", "check_ce_scores")],
    "s08_full_scale": [("step_flops", "check_step_flops")],
    "s09_released": [("query_maps", "check_query_maps")],
    "s10_out_of_distribution": [("feature_score", "check_feature_score")],
}
PAIRS = [(module, fn, checker) for module, items in SOLUTIONS.items() for fn, checker in items]


def test_every_checker_has_a_solution():
    assert {checker for _, _, checker in PAIRS} == set(exercises.CHECKERS)


@pytest.mark.parametrize("module, function, checker", PAIRS, ids=[p[2] for p in PAIRS])
def test_solution_passes_its_checker(module, function, checker):
    solution = getattr(exercises.load_solution(module), function)
    result = getattr(exercises, checker)(solution)
    assert result.passed, str(result)
    assert result.cases_passed == result.cases_total >= 3
    assert "PASSED" in str(result) and "\u2714" in result._repr_html_()


#: checkers built on ``checking.run_check`` (the interpretability ones diagnose mistakes inline,
#: tested in ``test_wrong_pointing_game_and_rollout_fail_with_a_reason``)
RUN_CHECK_CHECKERS = sorted(c for c, m in exercises.CHECKERS.items() if m != "interpret")


@pytest.mark.parametrize("checker", RUN_CHECK_CHECKERS)
def test_every_known_mistake_fails_with_its_diagnosis(checker, monkeypatch):
    """Capture each checker's mutants; each must be told apart from the reference and diagnosed."""
    module = importlib.import_module(f"xraygpt_lab.exercises.{exercises.CHECKERS[checker]}")
    captured = {}

    def capture(*args, **kwargs):
        captured["args"], captured["kwargs"] = args, kwargs
        return checking.run_check(*args, **kwargs)

    monkeypatch.setattr(module, "run_check", capture)
    getattr(module, checker)(lambda *a, **k: None)
    name, _answer, reference, cases, mistakes = captured["args"]
    assert mistakes, f"{checker} has no known mistakes"
    for mistake in mistakes:
        if mistake.wrong is None:
            continue
        result = checking.run_check(name, mistake.wrong, reference, cases, mistakes, **captured["kwargs"])
        assert not result.passed, f"{checker}: the mutant '{mistake.explanation[:50]}' passes the check"
        assert any(line.startswith("likely cause: ") for line in result.feedback), result.feedback


def test_unfinished_exercise_reports_not_implemented_without_raising():
    def stub(heart, right_lung, left_lung):
        raise NotImplementedError

    result = exercises.check_cardiothoracic_ratio(stub)
    assert not result and result.status == "not implemented"
    assert "not implemented yet" in str(result)
    with pytest.raises(ExerciseFailed, match="not implemented"):
        exercises.check_cardiothoracic_ratio(stub, strict=True)


def test_a_crashing_answer_is_reported_with_its_line():
    def buggy(mask):
        return mask.centroid  # numpy arrays have no centroid

    result = exercises.check_finding_side(buggy)
    assert result.status == "error"
    assert "AttributeError" in str(result) and "mask.centroid" in str(result)


def test_calling_the_function_instead_of_passing_it_is_explained():
    result = exercises.check_rms_norm(42)
    assert not result and "pass the function itself" in str(result)


# --------------------------------------------------------------------------- hand-written wrong answers


def test_swapped_sides_are_explained_with_the_radiological_convention():
    def image_side(mask):
        return "left" if np.nonzero(mask)[1].mean() < mask.shape[1] / 2 else "right"

    result = exercises.check_finding_side(image_side)
    assert not result and "radiological convention" in str(result)


def test_layernorm_instead_of_rmsnorm_is_diagnosed():
    result = exercises.check_rms_norm(lambda x, w, eps: torch.nn.functional.layer_norm(x, x.shape[-1:], w, None, eps))
    assert not result and "LayerNorm" in str(result)


def test_clip_loss_instead_of_medclip_is_diagnosed():
    def clip(img, txt, scale, li, lt):
        logits = scale * img @ txt.T
        target = torch.arange(len(img))
        return 0.5 * (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target))

    result = exercises.check_soft_label_loss(clip)
    assert not result and "one-hot" in str(result)


def test_unmasked_prompt_labels_are_diagnosed():
    solution = exercises.load_solution("s03_alignment")

    def forgot_bos(tokenizer, prompt, target, n, max_target_tokens=160):
        return solution.xraygpt_labels(tokenizer, prompt, target, n, max_target_tokens)[1:]

    result = exercises.check_xraygpt_labels(forgot_bos)
    assert not result and "BOS" in str(result)


def test_unsafe_escaping_is_diagnosed():
    result = exercises.check_escape_message(lambda t: html.escape(t, quote=False).replace("\n", "<br>"))
    assert not result
    assert "quotes" in str(result) or "control characters" in str(result)


def test_uncertain_as_positive_is_diagnosed():
    solution = exercises.load_solution("s07_evaluation")
    as_positive = lambda p, r, o: solution.ce_scores(  # noqa: E731
        [{k: (1 if v == -1 else v) for k, v in x.items()} for x in p],
        [{k: (1 if v == -1 else v) for k, v in x.items()} for x in r], o)
    result = exercises.check_ce_scores(as_positive)
    assert not result and "uncertain" in str(result)


def test_off_by_one_word_threshold_is_diagnosed():
    result = exercises.check_keep_report(lambda f, i: bool(f and i) and len(f.split()) > 10 and len(i.split()) > 2)
    assert not result and "likely cause" in str(result)


# --------------------------------------------------------------------------- references


def test_ctr_reference_matches_the_phantom_geometry():
    from xraygpt_lab.data.synthetic.anatomy import sample_anatomy
    from xraygpt_lab.exercises.synthetic import anatomy_masks, cardiothoracic_ratio

    for seed in range(4):
        anatomy = sample_anatomy(np.random.default_rng(seed))
        anatomy.rotation_deg = 0.0
        m = anatomy_masks(anatomy, 128)
        assert not (m["heart"] & m["left lung"]).any()
        ctr = cardiothoracic_ratio(m["heart"], m["right lung"], m["left lung"])
        assert abs(ctr - anatomy.heart_ctr) < 0.05, (seed, ctr, anatomy.heart_ctr)
        # patient's left lung on the image's right
        assert np.nonzero(m["left lung"])[1].mean() > np.nonzero(m["right lung"])[1].mean()


def test_finding_side_reference_agrees_with_ground_truth():
    from xraygpt_lab.data.synthetic.lesions import Finding
    from xraygpt_lab.data.synthetic.world import render_case
    from xraygpt_lab.exercises.synthetic import finding_side

    for seed, side in [(10, "left"), (11, "right"), (12, "left"), (13, "right")]:
        case = render_case(seed, 64, findings=[Finding("Pleural Effusion", side=side), Finding("Lung Lesion", side=side)])
        for mask in case.masks.values():
            assert finding_side(mask) == side


def test_anatomy_masks_rejects_tiny_images():
    from xraygpt_lab.data.synthetic.anatomy import AnatomyParams
    from xraygpt_lab.exercises.synthetic import anatomy_masks

    with pytest.raises(ValueError, match="size"):
        anatomy_masks(AnatomyParams(), 8)


def test_fit_history_keeps_the_image_slot_and_the_open_question():
    from xraygpt_lab.exercises.chat import _history, count_words, fit_history
    from xraygpt_lab.models.conversation import IMAGE_SLOT

    messages, dropped = fit_history(_history(4), count_words, 40, 10)
    assert dropped == 4 and len(messages) == 2
    assert messages[0][1].startswith(IMAGE_SLOT) and messages[-1] == ["Doctor", None]


# --------------------------------------------------------------------------- the machinery


def test_describe_difference_explains_shapes_values_and_keys():
    assert describe_difference(np.zeros(3), np.zeros(3)) is None
    assert "shape [2]" in describe_difference(np.zeros(2), np.zeros(3))
    assert "index [1]" in describe_difference(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 2.0]))
    assert "missing keys ['b']" in describe_difference({"a": 1}, {"a": 1, "b": 2})
    assert describe_difference(1.00001, 1.0) is None and "got 1.1" in describe_difference(1.1, 1.0)
    assert describe_difference("left", "left") is None and describe_difference(None, None) is None
    assert "length 1" in describe_difference([1], [1, 2])


def test_run_check_does_not_let_an_answer_spoil_the_inputs():
    data = np.arange(4.0)

    def mutating(x):
        x[:] = 0
        return float(x.sum())

    result = run_check("sum", mutating, lambda x: float(x.sum()), [Case("four numbers", (data,))])
    assert not result and data.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_mistake_with_a_test_function_and_result_rendering():
    result = run_check("double", lambda x: x, lambda x: 2 * x, [Case("x=3", (3,))],
                       [Mistake("you forgot to double", test=lambda got, exp, case: got * 2 == exp)])
    assert isinstance(result, CheckResult) and not result
    assert "likely cause: you forgot to double" in str(result)
    assert "&lt;" not in result._repr_html_() and "FAILED" in str(result)


def test_load_solution_names_the_available_files():
    with pytest.raises(FileNotFoundError, match="s02_language_model"):
        exercises.load_solution("s99_nothing")


def test_unknown_checker_is_a_clear_attribute_error():
    with pytest.raises(AttributeError, match="check_rms_norm"):
        exercises.check_does_not_exist  # noqa: B018


def test_wrong_pointing_game_and_rollout_fail_with_a_reason():
    """Ignoring the tolerance, or multiplying raw attentions, is caught and explained."""
    import numpy as np

    def strict_pointing(saliency, mask, tolerance):
        row, col = np.unravel_index(np.argmax(saliency), saliency.shape)
        return bool(mask[row, col])

    result = exercises.check_pointing_game(strict_pointing)
    assert not result.passed and str(result)

    def raw_rollout(attentions, residual=0.5):
        out = attentions[0]
        for a in attentions[1:]:
            out = a @ out
        return out

    result = exercises.check_rollout(raw_rollout)
    assert not result.passed and "residual" in str(result)


def _rolled(vision, cross, order="left", residual_handled=True):
    t = cross.shape[1]
    eye = torch.eye(t, dtype=cross.dtype)
    r = eye.clone()
    for a in vision:
        r = (eye + a) @ r if order == "left" else r @ (eye + a)
    if residual_handled:
        r = (r - eye) / (r - eye).sum(dim=-1, keepdim=True) + eye
    return cross @ r


def _normalised(m, grid):
    m = m.reshape(m.shape[0], *grid)
    return m / m.sum(dim=(1, 2), keepdim=True)


@pytest.mark.parametrize("wrong, hint", [
    (lambda v, c, g: _normalised(c[:, 1:], g), "through the ViT"),
    (lambda v, c, g: _normalised(_rolled(v, c, residual_handled=False)[:, 1:], g), "rownorm(R − I) + I"),
    (lambda v, c, g: _normalised(_rolled(v, c, order="right")[:, 1:], g), "on the LEFT"),
    (lambda v, c, g: _normalised(_rolled(v, c)[:, :-1], g), "drop the FIRST column"),
    (lambda v, c, g: _rolled(v, c)[:, 1:].reshape(c.shape[0], *g), "sum 1"),
    (lambda v, c, g: _rolled(v, c).reshape(c.shape[0], -1), "expected shape"),
], ids=["no-vit", "no-residual", "order", "last-column", "not-normalised", "cls-kept"])
def test_wrong_query_maps_fail_with_their_diagnosis(wrong, hint):
    result = exercises.check_query_maps(wrong)
    assert not result.passed and hint in str(result), str(result)
