"""Templates: XrayGPT ###Patient/###Doctor and Vicuna v1.1; dropping old turns."""
from __future__ import annotations

import pytest

from xraygpt_lab.models.conversation import (IMAGE_SLOT, Conversation, vicuna_conversation,
                                             xraygpt_conversation, xraygpt_prompt, xraygpt_text_example)


def test_training_prompt_is_xraygpts_template():
    assert xraygpt_prompt("Describe the x-ray.") == "###Patient: <Img><ImageHere></Img> Describe the x-ray. ###Doctor: "
    assert xraygpt_prompt(" Hi ", with_image=False) == "###Patient: Hi ###Doctor: "
    prompt, target = xraygpt_text_example("Is there an effusion?", "No. ")
    assert prompt.endswith("###Doctor: ") and target == "No.###"


def test_multi_turn_prompt_and_image_only_in_first_question():
    conv = xraygpt_conversation(system="SYS")
    conv.ask("What do you see?", image=True)
    assert conv.get_prompt() == f"SYS###Patient: {IMAGE_SLOT} What do you see? ###Doctor: "
    conv.answer("A small effusion.")
    conv.ask("Which side?")
    assert conv.get_prompt() == (f"SYS###Patient: {IMAGE_SLOT} What do you see? ###Doctor: A small effusion. "
                                 "###Patient: Which side? ###Doctor: ")
    assert conv.turns == 2 and conv.stop_string == "###"


def test_answer_without_open_turn_is_an_error():
    conv = xraygpt_conversation()
    with pytest.raises(ValueError, match="no open answer"):
        conv.answer("hi")
    with pytest.raises(ValueError, match="role"):
        conv.append("Nurse", "hello")


def test_drop_oldest_turn_keeps_the_image():
    conv = xraygpt_conversation(system="")
    conv.ask("q1", image=True)
    conv.answer("a1")
    conv.ask("q2")
    conv.answer("a2")
    conv.ask("q3")
    assert conv.drop_oldest_turn()
    assert conv.get_prompt() == f"###Patient: {IMAGE_SLOT} q2 ###Doctor: a2 ###Patient: q3 ###Doctor: "
    assert conv.drop_oldest_turn()
    assert conv.get_prompt() == f"###Patient: {IMAGE_SLOT} q3 ###Doctor: "
    assert not conv.drop_oldest_turn()  # only the open turn is left


def test_vicuna_v11_template():
    conv = vicuna_conversation(system="SYS")
    conv.ask("Hello")
    conv.answer("Hi there")
    conv.ask("How are you?")
    assert conv.get_prompt() == "SYS USER: Hello ASSISTANT: Hi there</s>USER: How are you? ASSISTANT:"
    assert conv.stop_string == "</s>"
    copy = conv.copy()
    copy.answer("fine")
    assert conv.messages[-1][1] is None


def test_unknown_style_rejected():
    with pytest.raises(ValueError, match="style"):
        Conversation(style="chatml")
