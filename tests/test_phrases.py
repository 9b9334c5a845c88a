"""``interpret.phrases``: a plain finding name becomes the whole noun phrase the model wrote."""
from __future__ import annotations

import pytest

from xraygpt_lab.data.synthetic.world import generate_cases
from xraygpt_lab.data.text.instructions import finding_question
from xraygpt_lab.interpret.localization import observation_phrase
from xraygpt_lab.interpret.phrases import noun_phrase, observation_for, resolve_phrase
from xraygpt_lab.interpret.targets import DEFAULT_INSTRUCTION

REPORT = ("The heart is normal in size. There is a moderate left pleural effusion, with a meniscus. "
          "A 14 mm nodule is seen in the right upper lung. No pneumothorax.")


@pytest.mark.parametrize("asked, expected", [
    ("pleural effusion", "moderate left pleural effusion"),
    ("Effusion", "moderate left pleural effusion"),
    ("nodule", "14 mm nodule is seen in the right upper lung"),
    ("mass", "14 mm nodule is seen in the right upper lung"),  # a lung lesion either way
    ("left pleural effusion", "moderate left pleural effusion"),  # expanded to the whole phrase
    ("meniscus", "meniscus"),  # other text: as written
    ("pneumothorax", None),  # only in a negation
    ("consolidation", None),
])
def test_noun_phrase_expands_a_name_to_what_the_model_wrote(asked, expected) -> None:
    assert noun_phrase(REPORT, asked) == expected


def test_every_synthetic_summary_yields_the_benchmark_phrase_for_its_findings() -> None:
    """The expansion finds exactly the phrase the pointing benchmark explains, on 200 summaries."""
    names = {"Pleural Effusion": "pleural effusion", "Pneumothorax": "pneumothorax", "Consolidation": "consolidation",
             "Atelectasis": "atelectasis", "Lung Lesion": "nodule"}
    checked = 0
    for case in generate_cases(200, 64, seed=4242):
        for obs, name in names.items():
            assert observation_for(name) == obs
            if case.labels[obs]:
                assert noun_phrase(case.summary, name) == observation_phrase(case.summary, obs), case.summary
                checked += 1
            else:
                assert noun_phrase(case.summary, name) is None, (name, case.summary)
    assert checked > 50


class _Scripted:
    """Answers each instruction with a fixed text, recording what it was asked."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.asked = answers, []

    def describe(self, pixels, instruction: str, max_new_tokens: int) -> list[str]:
        self.asked.append(instruction)
        return [self.answers.get(instruction, "")]


def test_resolve_uses_the_report_then_the_yes_no_answer_then_the_name() -> None:
    model = _Scripted({DEFAULT_INSTRUCTION: REPORT})
    got = resolve_phrase(model, None, "pleural effusion")
    assert (got.phrase, got.answer, got.source, got.written) == ("moderate left pleural effusion", REPORT, "answer", True)
    assert got.instruction == DEFAULT_INSTRUCTION and model.asked == [DEFAULT_INSTRUCTION]

    question = finding_question("Pneumothorax")
    reply = "Yes. There is a small right apical pneumothorax."
    model = _Scripted({DEFAULT_INSTRUCTION: REPORT, question: reply})
    got = resolve_phrase(model, None, "pneumothorax")
    assert (got.phrase, got.answer, got.instruction, got.source) == ("small right apical pneumothorax", reply,
                                                                     question, "question")
    assert got.written and got.report == REPORT

    model = _Scripted({DEFAULT_INSTRUCTION: REPORT, question: "No, there is no pneumothorax."})
    got = resolve_phrase(model, None, "pneumothorax")
    assert not got.written and got.phrase == "pneumothorax" and got.answer == REPORT  # in "No pneumothorax."

    model = _Scripted({DEFAULT_INSTRUCTION: "The lungs are clear."})
    got = resolve_phrase(model, None, "atelectasis")
    assert not got.written and got.answer is None and got.source == "asked"
    assert model.asked == [DEFAULT_INSTRUCTION, finding_question("Atelectasis")]


def test_a_given_answer_is_used_as_is_and_must_contain_the_phrase() -> None:
    model = _Scripted({})
    got = resolve_phrase(model, None, "nodule", answer=REPORT)
    assert got.phrase == "14 mm nodule is seen in the right upper lung" and model.asked == []
    with pytest.raises(ValueError, match="does not occur"):
        resolve_phrase(model, None, "atelectasis", answer=REPORT)
    with pytest.raises(ValueError, match="empty"):
        resolve_phrase(model, None, "  ", answer=REPORT)
