"""HTML for the chat transcript: every string is escaped, the markup is ours alone.

The transcript is an ``ipywidgets.HTML`` whose ``value`` is built here from plain text. Questions
and answers are untrusted (a user may type ``<script>`` or ``<img onerror=…>``, and a model may
echo it), so :func:`escape_text` runs on *every* string that goes into the page — text, titles and
class names alike — and the only tags in the output are the fixed ones written in this module
(``div``, ``span``, ``b``, ``br``). Browsers do not run scripts placed in ``innerHTML``, but event
handler attributes would run; escaping ``<``, ``>``, ``&``, ``"`` and ``'`` removes both routes.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Iterable

#: Kinds of transcript entries and how they look.
PATIENT, DOCTOR, NOTICE, ERROR = "patient", "doctor", "notice", "error"
KINDS = (PATIENT, DOCTOR, NOTICE, ERROR)

#: Label shown in front of each kind (the XrayGPT template's roles, Sec. 3.2).
_LABELS = {PATIENT: "Patient", DOCTOR: "Doctor", NOTICE: "Note", ERROR: "Problem"}
_STYLES = {
    PATIENT: "background:#e8f0fe;border-left:4px solid #1a73e8;",
    DOCTOR: "background:#f1f8e9;border-left:4px solid #388e3c;",
    NOTICE: "background:#fff8e1;border-left:4px solid #f9a825;font-size:90%;",
    ERROR: "background:#fdecea;border-left:4px solid #d32f2f;font-size:90%;",
}

#: Banner shown above every chat (a visible education-only note).
EDUCATION_NOTE = (
    "For education only \u2014 not for clinical use. The answers come from a research model "
    "(the tiny profile is trained on synthetic images in minutes); they can be wrong and "
    "must never guide the care of a patient."
)


#: C0/C1 control characters other than tab and newline (a random model may emit raw bytes).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_text(text: object) -> str:
    """``text`` as HTML text: ``& < > " '`` escaped, control characters dropped, line breaks as ``<br>``."""
    text = _CONTROL.sub("", str(text).replace("\r\n", "\n"))
    return html.escape(text, quote=True).replace("\n", "<br>")


@dataclass
class Entry:
    """One line of the transcript.

    ``kind`` is one of :data:`KINDS`; ``streaming`` marks an answer still being generated;
    ``forgotten`` marks a turn that was dropped from the model's context (shown greyed).
    """

    kind: str
    text: str
    streaming: bool = False
    forgotten: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown transcript entry kind {self.kind!r}; choose one of {KINDS}")


def render_entry(entry: Entry) -> str:
    """One message as a ``div`` with classes ``xg-msg xg-<kind>`` (the browser test reads them)."""
    classes = f"xg-msg xg-{entry.kind}" + (" xg-streaming" if entry.streaming else "") + \
        (" xg-forgotten" if entry.forgotten else "")
    style = "margin:4px 0;padding:6px 10px;border-radius:4px;white-space:normal;" + _STYLES[entry.kind]
    if entry.forgotten:
        style += "opacity:0.5;"
    cursor = '<span class="xg-cursor">\u258c</span>' if entry.streaming else ""
    title = ' title="no longer in the model\'s context"' if entry.forgotten else ""
    return (f'<div class="{escape_text(classes)}" style="{style}"{title}>'
            f"<b>{escape_text(_LABELS[entry.kind])}:</b> "
            f'<span class="xg-text">{escape_text(entry.text)}</span>{cursor}</div>')


def render_transcript(entries: Iterable[Entry], height_px: int = 360) -> str:
    """The whole conversation in a scrolling box that stays pinned to its newest message.

    ``flex-direction: column-reverse`` on the outer box keeps the scroll position at the bottom
    while text streams in, without any script.
    """
    body = "".join(render_entry(e) for e in entries)
    if not body:
        body = ('<div class="xg-empty" style="color:#777;padding:6px;">'
                "Choose an image, then ask a question.</div>")
    return (f'<div class="xg-transcript" style="display:flex;flex-direction:column-reverse;'
            f'height:{int(height_px)}px;overflow-y:auto;border:1px solid #ddd;border-radius:4px;'
            f'padding:4px;font-family:sans-serif;font-size:14px;line-height:1.4;">'
            f"<div>{body}</div></div>")


def render_banner(text: str = EDUCATION_NOTE) -> str:
    """The education-only note as an escaped, always-visible banner."""
    return ('<div class="xg-banner" style="background:#fff3cd;border:1px solid #ffe08a;'
            'padding:6px 10px;border-radius:4px;font-size:13px;">'
            f"\u26a0\ufe0f <b>{escape_text(text)}</b></div>")


def render_status(text: str, kind: str = NOTICE) -> str:
    """A one-line status message (escaped) under the input box."""
    colour = "#d32f2f" if kind == ERROR else "#555"
    return f'<span class="xg-status" style="color:{colour};font-size:13px;">{escape_text(text)}</span>'


def render_familiarity(text: str | None, flagged: bool) -> str:
    """Whether the image is like the training films (``models.ood``), escaped: a red warning box
    (class ``xg-ood-flagged``) when it is not, a quiet line (``xg-ood-ok``) when it is, nothing unchecked."""
    if not text:
        return ""
    if flagged:
        return ('<div class="xg-ood xg-ood-flagged" style="background:#fdecea;border:1px solid #d32f2f;'
                'padding:4px 8px;border-radius:4px;font-size:12px;color:#8a1c1c;">'
                f"\u26a0\ufe0f <b>{escape_text(text)}</b></div>")
    return f'<div class="xg-ood xg-ood-ok" style="font-size:12px;color:#2e7d32;">{escape_text(text)}</div>'


def render_reference(text: str | None) -> str:
    """The dataset's report for the current image (escaped, scrollable), or nothing when unknown."""
    if not text:
        return ""
    return ('<div class="xg-reference" style="font-size:12px;max-height:110px;overflow-y:auto;'
            'border-left:3px solid #999;padding:2px 6px;color:#333;">'
            f"<b>Reference report (dataset):</b> {escape_text(text)}</div>")
