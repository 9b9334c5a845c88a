"""Solutions for notebook 04: escaping a chat message and fitting the history in the context."""
from __future__ import annotations

import html
import re

from xraygpt_lab.models.conversation import IMAGE_SLOT, Conversation

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls except \t and \n


def escape_message(text: str) -> str:
    text = _CONTROL.sub("", text.replace("\r\n", "\n"))
    return html.escape(text, quote=True).replace("\n", "<br>")  # escape first, then add our <br>


def fit_history(messages, count_tokens, context: int, max_new_tokens: int):
    messages = [list(m) for m in messages]
    dropped = 0
    while (count_tokens(Conversation(messages=messages).get_prompt()) + max_new_tokens > context
           and len(messages) > 2):
        had_image = (messages[0][1] or "").startswith(IMAGE_SLOT)
        del messages[0:2]  # the oldest question and its answer
        if had_image and not (messages[0][1] or "").startswith(IMAGE_SLOT):
            messages[0][1] = f"{IMAGE_SLOT} {messages[0][1]}"  # never drop the image
        dropped += 1
    return messages, dropped
