"""One chat session, two faces: the terminal ``xraygpt-lab chat`` and the notebook panel's session.

Both wrap ``models.xraygpt.ChatSession``. The same questions about the same image, on the tiny run
(``runs.ensure_tiny_run`` returns the default run, training it once if it is missing), must give the same answers,
drop the same old turns, lower the same answer budget and refuse the same too-long question.
"""
from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest
from PIL import Image

from xraygpt_lab.cli import main
from xraygpt_lab.data.readers.images import load_image
from xraygpt_lab.data.synthetic.world import render_case
from xraygpt_lab.models.conversation import IMAGE_SLOT
from xraygpt_lab.runs import ensure_tiny_run, load_run
from xraygpt_lab.widgets.session import ChatInputError, ChatSession, GenerationSettings

MAX_NEW = 400  # of the tiny run's 512-token context: old turns must go after a turn or two
QUESTIONS = [
    "Describe the given chest x-ray image in detail.",
    "Is there a pleural effusion?",
    "Is the heart enlarged?",
    "What are the key findings in this chest x-ray image?",
    "Is there a pneumothorax?",
    "Please describe the lungs, " + "the heart, the pleura and the bones, " * 12 + "in detail.",  # budget lowered
    "word " * 600,  # longer than the whole context: refused, the chat goes on
    "/reset",
    "Describe the given chest x-ray image in detail.",
]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("parity") / "case7.png"
    Image.fromarray((render_case(7).image * 255).round().astype(np.uint8)).save(path)
    return path


def terminal_events(image_path, monkeypatch, capsys) -> list[tuple]:
    """Run ``xraygpt-lab chat`` with the questions piped in; its output as events."""
    run = ensure_tiny_run(progress=False)  # trains the run once when this test is the first to need it
    capsys.readouterr()  # drop that training log
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(q.strip() + "\n" for q in QUESTIONS)))
    assert main(["chat", "--run", str(run), "--image", str(image_path),
                 "--max-new-tokens", str(MAX_NEW), "--device", "cpu"]) == 0
    events = []
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("Doctor: "):
            events.append(("doctor", line[len("Doctor: "):]))
        elif m := re.fullmatch(r"\(context full: dropped the (\d+) oldest turn\(s\)\)", line):
            events.append(("dropped", int(m[1])))
        elif m := re.fullmatch(r"\(answer limited to (\d+) tokens by the model's context\)", line):
            events.append(("limited", int(m[1])))
        elif line == "(conversation reset)":
            events.append(("reset",))
        elif line.startswith("(This question is too long"):
            events.append(("refused",))
        else:
            raise AssertionError(f"unexpected terminal line {line!r}")
    return events


def widget_events(image_path) -> tuple[list[tuple], ChatSession]:
    """The same questions through the chat panel's session (streaming on its worker thread)."""
    session = ChatSession(load_run(ensure_tiny_run(), device="cpu"))
    session.set_image(load_image(image_path), name=image_path.name)
    settings = GenerationSettings(max_new_tokens=MAX_NEW)
    events = []
    for question in QUESTIONS:
        if question == "/reset":
            session.reset()
            events.append(("reset",))
            continue
        try:
            answer = session.answer(question, settings, on_text=lambda partial: None)
        except ChatInputError as exc:
            assert "too long" in str(exc)
            events.append(("refused",))
            continue
        assert answer.streamed and not answer.stopped
        if answer.dropped_turns:
            events.append(("dropped", answer.dropped_turns))
        if answer.max_new_tokens < MAX_NEW:
            events.append(("limited", answer.max_new_tokens))
        events.append(("doctor", answer.text))
    return events, session


def test_terminal_chat_and_panel_session_answer_and_trim_alike(image_path, monkeypatch, capsys):
    terminal = terminal_events(image_path, monkeypatch, capsys)
    widget, session = widget_events(image_path)
    assert terminal == widget
    kinds = [e[0] for e in terminal]
    assert kinds.count("doctor") == 7 and all(e[1] for e in terminal if e[0] == "doctor")
    assert sum(e[1] for e in terminal if e[0] == "dropped") > 0, "the history was trimmed"
    assert "limited" in kinds and "refused" in kinds and "reset" in kinds
    # after the reset: one fresh turn, the image slot in its question
    assert session.turns == 1 and session.last_prompt.count(IMAGE_SLOT) == 1
    assert session.last_prompt.startswith(f"###Patient: {IMAGE_SLOT} {QUESTIONS[-1]}")
