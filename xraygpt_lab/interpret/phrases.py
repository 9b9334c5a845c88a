"""From a finding's plain name to the words the model wrote for it.

Attributions explain a phrase *inside an answer*: under teacher forcing every word before the
phrase is given, so explaining the bare name "pleural effusion" after the model wrote "a moderate
left pleural effusion" asks only where the model puts a finding it has already been told about.
The whole noun phrase — severity or size, side, zone and the finding — is what the model decided
from the image (``localization.PHRASE_PATTERNS``; the counterfactual gains are in
``docs/design-notes.md``).

:func:`resolve_phrase` finds that noun phrase in the model's own answer. If the report does not
mention the finding, it asks the model the finding's yes/no question (the conversation template's
``finding_question``, e.g. "Is there a pleural effusion?") and looks in that answer. If neither
states it, ``written`` is ``False`` and the name is explained where the report has it (a negation,
"No pleural effusion.") or else on its own: the map then shows what would make the model say it,
not why it did.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..data.text.instructions import finding_question
from .localization import PHRASE_PATTERNS
from .targets import DEFAULT_INSTRUCTION, find_phrase

#: Plain names (lower case) and the observation whose noun phrase they stand for.
FINDING_NAMES: dict[str, str] = {
    "pleural effusion": "Pleural Effusion", "effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "atelectasis": "Atelectasis",
    "nodule": "Lung Lesion", "mass": "Lung Lesion", "lung nodule": "Lung Lesion", "lung mass": "Lung Lesion",
    "lesion": "Lung Lesion", "lung lesion": "Lung Lesion",
}

Source = Literal["answer", "question", "asked"]


@dataclass(frozen=True)
class ResolvedPhrase:
    """What is explained, in which answer, after which instruction."""

    asked: str  # the text the user asked about
    phrase: str  # the text explained: the model's whole noun phrase when it wrote one
    answer: str | None  # the teacher-forced answer containing ``phrase`` (None: the phrase alone)
    instruction: str
    observation: str | None  # the observation a plain name stands for
    written: bool  # the model stated the finding (in its report or its yes/no answer), not only its name
    source: Source  # "answer": the report; "question": the yes/no answer; "asked": neither
    report: str  # the model's answer to ``instruction`` (or the given answer)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def observation_for(name: str) -> str | None:
    """The observation a plain finding name stands for (``"nodule"`` → ``"Lung Lesion"``), else ``None``."""
    return FINDING_NAMES.get(" ".join(name.lower().split()))


def noun_phrase(answer: str, asked: str) -> str | None:
    """The whole noun phrase of ``asked`` in ``answer`` (as written there), or ``None``.

    A plain name matches its observation's pattern (``"nodule"`` finds ``"12 mm nodule in the right
    upper lung"``, and also a mass: both are a lung lesion); any other text is expanded to the
    pattern match that contains it (``"left pleural effusion"`` → ``"moderate left pleural
    effusion"``), or else taken as written. Negations ("no pleural effusion") never match a
    pattern: every pattern needs a severity, size or location.
    """
    observation = observation_for(asked)
    if observation is not None:
        match = re.search(PHRASE_PATTERNS[observation], answer, flags=re.IGNORECASE)
        return None if match is None else match.group(0)
    span = find_phrase(answer, asked)
    if span is None:
        return None
    for pattern in PHRASE_PATTERNS.values():
        for match in re.finditer(pattern, answer, flags=re.IGNORECASE):
            if match.start() <= span[0] and span[1] <= match.end():
                return match.group(0)
    return answer[span[0]:span[1]]


def resolve_phrase(model: Any, pixel_values: Any, asked: str, instruction: str | None = None,
                   answer: str | None = None, max_new_tokens: int = 96) -> ResolvedPhrase:
    """Find what to explain for ``asked`` on one image (``pixel_values`` ``[1, C, S, S]``).

    ``answer`` fixes the teacher-forced answer (nothing is generated); otherwise the model writes
    its answer to ``instruction`` and, for a plain finding name it did not write there, to the
    finding's yes/no question.
    """
    if not asked.strip():
        raise ValueError("phrase is empty or only whitespace")
    instruction = instruction or DEFAULT_INSTRUCTION
    observation = observation_for(asked)
    if answer is not None:
        phrase = noun_phrase(answer, asked)
        if phrase is not None:
            return ResolvedPhrase(asked, phrase, answer, instruction, observation, True, "answer", answer)
        span = find_phrase(answer, asked)  # a name in a negation: "No pleural effusion."
        if span is None:
            raise ValueError(f"{asked!r} does not occur in the given answer")
        return ResolvedPhrase(asked, answer[span[0]:span[1]], answer, instruction, observation, False, "answer", answer)
    generated = model.describe(pixel_values, instruction=instruction, max_new_tokens=max_new_tokens)[0]
    phrase = noun_phrase(generated, asked) if generated.strip() else None
    if phrase is not None:
        return ResolvedPhrase(asked, phrase, generated, instruction, observation, True, "answer", generated)
    if observation is not None:
        question = finding_question(observation)
        reply = model.describe(pixel_values, instruction=question, max_new_tokens=max_new_tokens)[0]
        phrase = noun_phrase(reply, asked) if reply.strip() else None
        if phrase is not None:
            return ResolvedPhrase(asked, phrase, reply, question, observation, True, "question", generated)
    span = find_phrase(generated, asked)  # the words without the finding: "No pleural effusion."
    if span is not None:
        return ResolvedPhrase(asked, generated[span[0]:span[1]], generated, instruction, observation, False, "answer",
                              generated)
    return ResolvedPhrase(asked, asked.strip(), None, instruction, observation, False, "asked", generated)
