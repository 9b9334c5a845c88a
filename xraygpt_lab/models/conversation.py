"""Prompt templates: XrayGPT's ``###Patient: … ###Doctor: …`` and Vicuna v1.1.

XrayGPT (arXiv 2306.07971, Sec. 3.2; MiniGPT-4's ``Conversation`` class) trains on

    ###Patient: <Img><ImageHere></Img> {instruction} ###Doctor: {target}###

The image embeddings replace ``<ImageHere>``; generation stops at the separator ``###``.
The chat demo prefixes a system prompt and keeps the turns with the same separator.
Vicuna v1.1 (FastChat ``conv_vicuna_v1``) uses ``USER:``/``ASSISTANT:`` with ``</s>`` ends.

A :class:`Conversation` is plain text; :mod:`xraygpt_lab.models.xraygpt` turns it into
embeddings. Dropping the oldest turns when the context is full is decided here
(:meth:`Conversation.drop_oldest_turn`), measured in tokens by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

#: Placeholder the image embeddings replace (XrayGPT / MiniGPT-4).
IMAGE_PLACEHOLDER = "<ImageHere>"
#: Markers around the image slot.
IMAGE_START, IMAGE_END = "<Img>", "</Img>"
#: The image slot as it appears in a prompt.
IMAGE_SLOT = f"{IMAGE_START}{IMAGE_PLACEHOLDER}{IMAGE_END}"
#: XrayGPT's separator and end symbol (``end_sym`` in their config).
END_SYM = "###"
#: Roles of the XrayGPT template.
PATIENT, DOCTOR = "Patient", "Doctor"
#: Longest training target in tokens (``max_txt_len`` in XrayGPT's stage configs).
MAX_TARGET_TOKENS = 160

#: System prompt of XrayGPT's chat demo (their ``conversation.py``, paraphrased).
XRAYGPT_SYSTEM = (
    "A chat between a patient and an experienced Doctor who can understand the chest "
    "radiology image that the patient provides, and answer the patient's questions "
    "in detail and politely."
)
#: Vicuna v1.1 system prompt (FastChat ``conv_vicuna_v1``).
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def xraygpt_prompt(instruction: str, with_image: bool = True) -> str:
    """The single-turn training prompt, ending where the answer starts.

    >>> xraygpt_prompt("Describe the x-ray.")
    '###Patient: <Img><ImageHere></Img> Describe the x-ray. ###Doctor: '
    """
    image = f"{IMAGE_SLOT} " if with_image else ""
    return f"{END_SYM}{PATIENT}: {image}{instruction.strip()} {END_SYM}{DOCTOR}: "


def xraygpt_text_example(question: str, answer: str) -> tuple[str, str]:
    """A text-only conversation turn for domain fine-tuning (MedVicuna/RadVicuna step).

    Returns ``(prompt, target)``; the loss is computed on ``target`` only, which ends with
    the end symbol so that the model learns where to stop.
    """
    return xraygpt_prompt(question, with_image=False), f"{answer.strip()}{END_SYM}"


@dataclass
class Conversation:
    """A multi-turn conversation rendered as one prompt string.

    ``style`` is ``"xraygpt"`` (``###Role: message `` turns) or ``"vicuna_v1.1"``
    (``ROLE: message`` turns, assistant turns closed by ``</s>``). ``messages`` holds
    ``[role, text]`` pairs; the text of the last doctor turn may be ``None`` (to be generated).
    """

    system: str = XRAYGPT_SYSTEM
    roles: tuple[str, str] = (PATIENT, DOCTOR)
    style: str = "xraygpt"
    sep: str = END_SYM
    sep2: str = "</s>"
    messages: list[list[str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.style not in ("xraygpt", "vicuna_v1.1"):
            raise ValueError(f"unknown conversation style {self.style!r}")

    def copy(self) -> "Conversation":
        """A copy whose message list can change independently."""
        return replace(self, messages=[list(m) for m in self.messages])

    def append(self, role: str, text: str | None) -> None:
        """Add one message; ``role`` must be one of ``self.roles``."""
        if role not in self.roles:
            raise ValueError(f"role {role!r} is not one of {self.roles}")
        self.messages.append([role, text])

    def ask(self, question: str, image: bool = False) -> None:
        """Add a patient question (with the image slot in front when ``image``) and an open answer."""
        text = f"{IMAGE_SLOT} {question.strip()}" if image else question.strip()
        self.append(self.roles[0], text)
        self.append(self.roles[1], None)

    def answer(self, text: str) -> None:
        """Fill in the open doctor turn."""
        if not self.messages or self.messages[-1][0] != self.roles[1] or self.messages[-1][1] is not None:
            raise ValueError("there is no open answer to fill in; call ask() first")
        self.messages[-1][1] = text.strip()

    def get_prompt(self) -> str:
        """The text the LLM reads; ends with the open answer's role tag when one is open."""
        if self.style == "xraygpt":
            out = self.system
            for role, text in self.messages:
                out += f"{self.sep}{role}: " + ("" if text is None else f"{text} ")
            return out
        out = self.system + " "
        for i, (role, text) in enumerate(self.messages):
            if text is None:
                out += f"{role.upper()}:"
            else:
                closing = " " if i % 2 == 0 else self.sep2
                out += f"{role.upper()}: {text}{closing}"
        return out

    @property
    def stop_string(self) -> str:
        """The string at which generation of one answer stops."""
        return self.sep if self.style == "xraygpt" else self.sep2

    @property
    def turns(self) -> int:
        """Number of patient messages."""
        return sum(1 for role, _ in self.messages if role == self.roles[0])

    def drop_oldest_turn(self) -> bool:
        """Remove the oldest complete question/answer pair that does not carry the image.

        The image slot moves to the oldest remaining patient message so that the image is never
        dropped. Returns ``False`` when nothing can be dropped (only the open turn is left).
        """
        if len(self.messages) <= 2:
            return False
        first_text = self.messages[0][1] or ""
        had_image = first_text.startswith(IMAGE_SLOT)
        del self.messages[0:2]
        if had_image:
            rest = self.messages[0][1] or ""
            if not rest.startswith(IMAGE_SLOT):
                self.messages[0][1] = f"{IMAGE_SLOT} {rest}"
        return True


def xraygpt_conversation(system: str = XRAYGPT_SYSTEM) -> Conversation:
    """An empty XrayGPT chat (the demo's template)."""
    return Conversation(system=system)


def vicuna_conversation(system: str = VICUNA_SYSTEM) -> Conversation:
    """An empty Vicuna v1.1 chat (``USER``/``ASSISTANT``, answers closed by ``</s>``)."""
    return Conversation(system=system, roles=("USER", "ASSISTANT"), style="vicuna_v1.1", sep=" ")
