"""Exercises for notebook 04 (chat): safe HTML for a message, and fitting the history in context.

* :func:`check_escape_message` — ``escape_message(text) -> str``: what ``widgets.html.escape_text``
  does to every string before it enters the transcript: drop control characters, escape
  ``& < > " '`` (``&`` first!), then turn line breaks into ``<br>``. A model can echo a user's
  ``<img src=x onerror=…>``; escaping is what keeps it text.
* :func:`check_fit_history` — ``fit_history(messages, count_tokens, context, max_new_tokens)
  -> (messages, dropped)``: drop the oldest question/answer pairs until prompt + answer budget
  fit in the LLM's context (2048 tokens for Vicuna-7B), never dropping the image: the
  ``<Img><ImageHere></Img>`` slot moves to the oldest remaining question
  (``Conversation.drop_oldest_turn`` and ``ChatSession.plan``).
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable

from ..models.conversation import IMAGE_SLOT, Conversation
from ..widgets.html import escape_text
from .checking import Case, CheckResult, Mistake, run_check


def escape_message(text: str) -> str:
    """Reference: ``widgets.html.escape_text``."""
    return escape_text(text)


_MESSAGES = [
    ("plain text", "Is there a pleural effusion?"),
    ("a script tag", "<script>alert('hi')</script>"),
    ("an event-handler attribute", '<img src=x onerror="alert(1)">'),
    ("an ampersand next to a tag", "heart & lungs <b>ok</b>"),
    ("two lines (\\n becomes <br>)", "Line one.\nLine two."),
    ("Windows line breaks (\\r\\n)", "first\r\nsecond"),
    ("control characters a random model may emit", "beep\x07 and\x00 null\x1b[0m"),
    ("an already-escaped entity (must be escaped again)", "&lt;not a tag&gt;"),
]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def check_escape_message(answer: Callable[[str], str], *, strict: bool = False) -> CheckResult:
    """Check ``answer(text) -> str`` against ``escape_text``."""
    cases = [Case(label, (text,)) for label, text in _MESSAGES]

    def manual(order: str, quotes: bool = True):
        def escape(text: str) -> str:
            text = _CONTROL.sub("", text.replace("\r\n", "\n"))
            table = [("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")] + ([('"', "&quot;"), ("'", "&#x27;")] if quotes else [])
            if order == "amp-last":
                table = table[1:] + table[:1]
            for old, new in table:
                text = text.replace(old, new)
            return text.replace("\n", "<br>")
        return escape

    mistakes = [
        Mistake("nothing was escaped: '<' must become '&lt;', '>' '&gt;', '&' '&amp;' (html.escape)",
                lambda t: _CONTROL.sub("", t.replace("\r\n", "\n")).replace("\n", "<br>")),
        Mistake("quotes were not escaped: inside an attribute, a '\"' or \"'\" would end the value and let "
                "an onerror=… handler in; use html.escape(text, quote=True)", manual("amp-first", quotes=False)),
        Mistake("'&' must be escaped first: escaping it last turns your own '&lt;' into '&amp;lt;'",
                manual("amp-last")),
        Mistake("line breaks must become '<br>' after escaping (so the <br> itself is not escaped)",
                lambda t: html.escape(_CONTROL.sub("", t.replace("\r\n", "\n")), quote=True)),
        Mistake("you added <br> before escaping, so it was shown as the text '&lt;br&gt;'",
                lambda t: html.escape(_CONTROL.sub("", t.replace("\r\n", "\n")).replace("\n", "<br>"), quote=True)),
        Mistake("control characters (\\x00-\\x08, \\x0b-\\x1f, \\x7f-\\x9f) must be dropped",
                lambda t: html.escape(t.replace("\r\n", "\n"), quote=True).replace("\n", "<br>")),
    ]
    return run_check("escape a chat message", answer, escape_message, cases, mistakes, strict=strict,
                     hint="drop control characters, html.escape(text, quote=True), then replace '\\n' by '<br>'")


# --------------------------------------------------------------------------- history


def fit_history(messages: list[list[str | None]], count_tokens: Callable[[str], int], context: int,
                max_new_tokens: int) -> tuple[list[list[str | None]], int]:
    """Reference: drop oldest turns with ``Conversation.drop_oldest_turn`` until the prompt fits.

    ``messages`` are ``[role, text]`` pairs of an XrayGPT conversation, the last one the open
    doctor turn (``None``); ``count_tokens(prompt)`` measures ``Conversation.get_prompt()``.
    """
    conversation = Conversation(messages=[list(m) for m in messages])
    dropped = 0
    while count_tokens(conversation.get_prompt()) + max_new_tokens > context and conversation.drop_oldest_turn():
        dropped += 1
    return conversation.messages, dropped


def count_words(prompt: str) -> int:
    """The checker's token counter: one token per whitespace-separated piece (a stand-in)."""
    return len(prompt.split())


def _history(turns: int) -> list[list[str | None]]:
    messages: list[list[str | None]] = []
    questions = ["Is the heart enlarged?", "Any effusion on the left?", "What about the right lung base?",
                 "Is there a pneumothorax?", "Should I worry?"]
    answers = ["The heart is mildly enlarged.", "Yes, a small left pleural effusion.", "The right base is clear.",
               "No pneumothorax is seen.", "Please discuss the findings with your doctor."]
    for i in range(turns):
        question = f"{IMAGE_SLOT} {questions[i]}" if i == 0 else questions[i]
        messages += [["Patient", question], ["Doctor", answers[i]]]
    messages += [["Patient", "Summarise everything in one sentence."], ["Doctor", None]]
    return messages


def check_fit_history(answer: Callable[..., tuple[list, int]], *, strict: bool = False) -> CheckResult:
    """Check ``answer(messages, count_tokens, context, max_new_tokens) -> (messages, dropped)``."""
    full = count_words(Conversation(messages=_history(4)).get_prompt())
    shorter = Conversation(messages=_history(4))
    shorter.drop_oldest_turn()
    exact = count_words(shorter.get_prompt()) + 40  # fits exactly after one drop
    cases = [
        Case("a history that already fits", (_history(2), count_words, 500, 40)),
        Case("one turn too many", (_history(4), count_words, full + 40 - 5, 40)),
        Case("several turns too many", (_history(4), count_words, full - 30, 40)),
        Case("a prompt that fills the context exactly after one drop", (_history(4), count_words, exact, 40)),
        Case("a context so small that only the open question is left", (_history(3), count_words, 30, 40)),
    ]

    def variant(newest: bool = False, keep_image: bool = True, strict_fit: bool = False):
        def fit(messages, count_tokens, context, max_new_tokens):
            messages = [list(m) for m in messages]
            dropped = 0

            def too_long() -> bool:
                n = count_tokens(Conversation(messages=messages).get_prompt()) + max_new_tokens
                return n >= context if strict_fit else n > context

            while too_long() and len(messages) > 2:
                start = len(messages) - 4 if newest else 0
                if start < 0:
                    break
                had_image = (messages[start][1] or "").startswith(IMAGE_SLOT)
                del messages[start:start + 2]
                if keep_image and had_image and not (messages[0][1] or "").startswith(IMAGE_SLOT):
                    messages[0][1] = f"{IMAGE_SLOT} {messages[0][1]}"
                dropped += 1
            return messages, dropped
        return fit

    mistakes = [
        Mistake("you dropped the image together with the first question: move the <Img><ImageHere></Img> "
                "slot to the oldest remaining question", variant(keep_image=False)),
        Mistake("drop the *oldest* turns first (the newest question must stay)", variant(newest=True)),
        Mistake("off by one: the prompt fits when tokens + max_new_tokens <= context (stop when equal)",
                variant(strict_fit=True)),
        Mistake("return a pair (messages, number of dropped question/answer pairs)",
                test=lambda got, exp, case: not (isinstance(got, tuple) and len(got) == 2)),
    ]
    return run_check("fit the chat history in the context", answer, fit_history, cases, mistakes, strict=strict,
                     hint="while count_tokens(prompt) + max_new_tokens > context: delete messages[0:2], "
                          "re-attach the image slot to messages[0], count the drop")


__all__ = ["check_escape_message", "check_fit_history", "count_words", "escape_message", "fit_history"]
