"""Grounded fine-tuning examples: concept tokens in the image slot."""
from __future__ import annotations

import pytest
import numpy as np

from xraygpt_lab.data.synthetic.lesions import Finding
from xraygpt_lab.data.synthetic.world import generate_cases
from xraygpt_lab.train.grounding import (BLANK_TOKEN, CONCEPT_TOKENS, concept_token, grounded_conversations,
                                         grounded_examples, mix, oracle_prompts)


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


def test_grounded_chats_put_the_slot_in_the_first_question_as_chat_session_does():
    from xraygpt_lab.models.conversation import xraygpt_conversation

    findings = [[Finding("Pneumothorax", side="left")]]
    turns = [{"question": "Is there a pneumothorax?", "answer": "Yes, a small left apical pneumothorax."},
             {"question": "Is there a pleural effusion?", "answer": "No, there is no pleural effusion."},
             {"question": "Is the heart enlarged?", "answer": "No."}]
    examples = grounded_conversations(findings, [turns], n_slots=8, seed=0, per_case=50, max_turns=2)
    assert len(examples) == 50
    for prompt, target in examples:
        assert prompt.count("<Img>") == 1 and prompt.index("<Img>") < prompt.index("?")
        assert "<pneumothorax_left>" in prompt.split("</Img>")[0] and target.endswith("###")
        assert prompt.startswith("###Patient: <Img>") and prompt.endswith("###Doctor: ")
        assert prompt.count("###Patient:") <= 2
    two_turns = next(p for p, _ in examples if p.count("###Patient:") == 2)
    # the same layout as the chat: replace the slot by <ImageHere> and rebuild it with Conversation
    first_q = two_turns.split("</Img> ")[1].split(" ###Doctor:")[0]
    first_a = two_turns.split("###Doctor: ")[1].split(" ###Patient:")[0]
    second_q = two_turns.split("###Patient: ")[2].split(" ###Doctor:")[0]
    chat = xraygpt_conversation(system="")
    chat.append("Patient", f"<Img><ImageHere></Img> {first_q}")
    chat.append("Doctor", first_a)
    chat.append("Patient", second_q)
    chat.append("Doctor", None)
    slot = two_turns.split("<Img>")[1].split("</Img>")[0]
    assert chat.get_prompt().replace("<ImageHere>", slot) == two_turns


def test_oracle_prompts_hold_the_true_concepts():
    prompts = oracle_prompts([[Finding("Cardiomegaly")], []], n_slots=4, seed=0)
    assert "<cardiomegaly>" in prompts[0] and prompts[1].count(BLANK_TOKEN) == 4
    assert all(p.startswith("###Patient: <Img>") and p.endswith("###Doctor: ") for p in prompts)


def test_spatial_slot_puts_each_concept_where_its_region_is() -> None:
    """With a layout, slot k names the finding that covers token cell k; a cell covered twice gets
    one of the two; a finding that covers no cell still appears once; other slots are blank."""
    import random

    from xraygpt_lab.data.synthetic.lesions import Finding
    from xraygpt_lab.train.grounding import BLANK_TOKEN, concept_columns, concept_token, slot_text

    columns = concept_columns()
    effusion, cardio = columns.index(("Pleural Effusion", "left")), columns.index(("Cardiomegaly", None))
    layout = [[0.0] * len(columns) for _ in range(4)]
    layout[1][effusion] = 1.0
    layout[2][effusion] = layout[2][cardio] = 1.0
    findings = [Finding("Pleural Effusion", side="left"), Finding("Cardiomegaly"), Finding("Fracture", side="right")]
    seen = set()
    for seed in range(20):
        slots = slot_text(findings, random.Random(seed), 4, layout).replace("><", ">\n<").split("\n")
        assert len(slots) == 4
        assert slots[1] == concept_token("Pleural Effusion", "left")
        assert slots[2] in (concept_token("Pleural Effusion", "left"), concept_token("Cardiomegaly"))
        seen.add(slots[2])
        assert {s for s in slots if s != BLANK_TOKEN} == {concept_token(f.observation, f.side) for f in findings}
        assert slots[0] in (BLANK_TOKEN, concept_token("Fracture", "right"), concept_token("Cardiomegaly"))
    assert len(seen) == 2
    with pytest.raises(ValueError, match="layout"):
        slot_text(findings, random.Random(0), 5, layout)



def test_each_yes_no_question_is_answered_yes_about_as_often_as_no():
    """Balanced per question, the question alone does not give the answer away: over 400 cases
    of the world every yes/no question's last-turn answers are Yes 35-65 % of the time, where a
    balance over all questions at once (``yes_weight`` 10 on raw counts) left 0.43-0.80."""
    cases = list(generate_cases(400, 32, seed=3))

    def yes_shares(yes_weight: float) -> dict[str, tuple[int, float]]:
        examples = grounded_conversations([c.findings for c in cases], [c.conversation for c in cases], 8,
                                          seed=2, per_case=8, yes_weight=yes_weight)
        tally: dict[str, list[bool]] = {}
        for prompt, target in examples:
            question = prompt.rsplit("###Patient: ", 1)[1].split(" ###Doctor:")[0].split("</Img> ")[-1]
            if question.startswith("Is there") and target[:3] in ("Yes", "No,", "No."):
                tally.setdefault(question, []).append(target.startswith("Yes"))
        return {q: (len(a), float(np.mean(a))) for q, a in tally.items()}

    balanced = yes_shares(1.0)
    assert len(balanced) >= 9
    for question, (n, share) in balanced.items():
        assert n > 100 and 0.35 <= share <= 0.65, (question, n, share)
    # yes_weight moves the operating point of every question alike
    assert all(share > 0.65 for _, share in yes_shares(3.0).values())


def test_graded_concepts_name_the_grade_of_graded_findings_only() -> None:
    """With graded concepts, an effusion's token carries its size and edema's its severity; a
    nodule's stays as it was, and an ungraded slot is the same as before for the same draw."""
    import random

    from xraygpt_lab.train.grounding import GRADED, GRADED_TOKENS, concept_tokens, finding_token, slot_text

    assert concept_token("Pleural Effusion", "left", "large") == "<pleural_effusion_left_large>"
    assert concept_token("Edema", "bilateral", "severe") == "<edema_severe>"
    assert concept_token("Lung Lesion", "left", "large") == "<lung_lesion_left>"  # not graded
    with pytest.raises(ValueError, match="grade must be one of"):
        concept_token("Cardiomegaly", None, "large")
    assert not set(GRADED_TOKENS) & set(CONCEPT_TOKENS) and len(set(GRADED_TOKENS)) == len(GRADED_TOKENS)
    assert concept_tokens() == CONCEPT_TOKENS and concept_tokens(True)[len(CONCEPT_TOKENS):] == GRADED_TOKENS
    assert len(GRADED_TOKENS) == 3 * (2 + 2 + 1 + 1) and set(GRADED) == {"Pleural Effusion", "Pneumothorax",
                                                                          "Edema", "Cardiomegaly"}
    findings = [Finding("Pleural Effusion", side="right", severity="small"),
                Finding("Edema", side="bilateral", severity="moderate"), Finding("Lung Lesion", side="left")]
    assert [finding_token(f, graded=True) for f in findings] == ["<pleural_effusion_right_small>",
                                                                 "<edema_moderate>", "<lung_lesion_left>"]
    for seed in range(5):
        graded = slot_text(findings, random.Random(seed), 16, graded=True)
        plain = slot_text(findings, random.Random(seed), 16)
        assert "<pleural_effusion_right_small>" in graded and "<edema_moderate>" in graded
        assert "<pleural_effusion_right>" not in graded and "<lung_lesion_left>" in graded
        assert graded.replace("_small>", ">").replace("_moderate>", ">") == plain
    examples = grounded_examples([findings], ["summary"], n_slots=16, seed=0, per_case=1, graded=True)
    assert "<edema_moderate>" in examples[0][0]
    chats = grounded_conversations([findings], [[{"question": "Is there edema?", "answer": "Yes."}]],
                                   n_slots=16, seed=0, per_case=1, graded=True)
    assert "<pleural_effusion_right_small>" in chats[0][0]
    assert "<edema_moderate>" in oracle_prompts([findings], 16, seed=0, graded=True)[0]


def test_spatial_graded_slot_puts_the_graded_concept_on_its_cells() -> None:
    import random

    from xraygpt_lab.train.grounding import concept_columns, slot_text

    columns = concept_columns()
    effusion = columns.index(("Pleural Effusion", "left"))
    layout = [[0.0] * len(columns) for _ in range(4)]
    layout[0][effusion] = layout[3][effusion] = 1.0
    findings = [Finding("Pleural Effusion", side="left", severity="large")]
    slots = slot_text(findings, random.Random(0), 4, layout, graded=True).replace("><", ">\n<").split("\n")
    assert slots == ["<pleural_effusion_left_large>", BLANK_TOKEN, BLANK_TOKEN, "<pleural_effusion_left_large>"]
