"""Grounded fine-tuning examples: concept tokens in the image slot."""
from __future__ import annotations

import pytest

from xraygpt_lab.data.lesions import Finding
from xraygpt_lab.train.grounding import (BLANK_TOKEN, CONCEPT_TOKENS, concept_token, grounded_examples,
                                         mix)


def test_concept_tokens_carry_the_side_only_for_lateral_findings():
    assert concept_token("Pleural Effusion", "left") == "<pleural_effusion_left>"
    assert concept_token("Cardiomegaly", "left") == "<cardiomegaly>"
    assert concept_token("Edema", "bilateral") == "<edema>"
    assert len(set(CONCEPT_TOKENS)) == len(CONCEPT_TOKENS) and BLANK_TOKEN in CONCEPT_TOKENS


def test_grounded_example_fills_the_slot_and_targets_the_summary():
    findings = [[Finding("Pleural Effusion", side="right"), Finding("Cardiomegaly")], []]
    examples = grounded_examples(findings, ["right effusion, big heart", "normal"], n_slots=16, seed=0,
                                 per_case=2)
    assert len(examples) == 4
    prompt, target = examples[0]
    slot = prompt.split("<Img>")[1].split("</Img>")[0]
    assert slot.count("<") == 16  # one token per image slot
    assert "<pleural_effusion_right>" in slot and "<cardiomegaly>" in slot
    assert "<ImageHere>" not in prompt and target == "right effusion, big heart###"
    normal_slot = examples[2][0].split("<Img>")[1].split("</Img>")[0]
    assert normal_slot == BLANK_TOKEN * 16


def test_mix_reaches_the_requested_share():
    conversations = [("q", "a###")] * 10
    grounded = [("g", "s###")] * 3
    mixed = mix(conversations, grounded, 0.9, seed=0)
    assert sum(p == "g" for p, _ in mixed) == 90 and len(mixed) == 100
    assert mix(conversations, grounded, 0.0, seed=0) == conversations
    with pytest.raises(ValueError):
        mix(conversations, grounded, 1.0, seed=0)
    with pytest.raises(ValueError, match="summaries"):
        grounded_examples([[]], [], n_slots=4, seed=0)
