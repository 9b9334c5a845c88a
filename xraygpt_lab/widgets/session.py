"""A multi-turn chat with one radiograph: the model side of the chat panel, without any widget.

XrayGPT's demo (arXiv 2306.07971, Sec. 3.2; MiniGPT-4's ``Chat`` class) keeps one
:class:`~xraygpt_lab.models.conversation.Conversation` per image. The conversation state lives in
the model layer, :class:`xraygpt_lab.models.xraygpt.ChatSession` (the one the terminal
``xraygpt-lab chat`` uses too): the image slot ``<Img><ImageHere></Img>`` sits in the first
patient message; each answer is generated from the whole conversation so far and stops at
``###``; when the prompt plus the answer budget no longer fits in the LLM's context
(``max_position_embeddings``: 2048 for Vicuna-7B), the oldest question/answer pairs are dropped
(the image slot moves to the oldest remaining question, so the image is never dropped).

This module's :class:`ChatSession` wraps it with what the page needs. Streaming:
:meth:`ChatSession.answer` runs ``XrayGPT.generate`` on a worker thread with a
``transformers.TextIteratorStreamer`` and calls ``on_text(partial_answer)`` from the calling
thread each time a word arrives. Beam search (``num_beams > 1``) cannot stream in Hugging Face
``generate``; the answer then arrives whole.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from transformers import TextIteratorStreamer

from ..models.conversation import MAX_TARGET_TOKENS, Conversation
from ..models.xraygpt import ChatInputError, ChatReply, ChatTurn
from ..models.xraygpt import ChatSession as ModelChatSession

__all__ = ["Answer", "ChatInputError", "ChatSession", "GenerationSettings", "GenerationStopped",
           "StoppableStreamer"]

#: Seconds the reader waits for the next streamed word before checking the worker is alive.
_POLL_S = 0.1


class GenerationStopped(Exception):
    """Raised inside the streamer to end a generation early (the Stop button)."""


@dataclass
class GenerationSettings:
    """Decoding controls of the panel (the sliders of XrayGPT's Gradio demo).

    ``temperature == 0`` means greedy decoding (deterministic); above 0 the model samples with
    that temperature and nucleus ``top_p`` (MiniGPT-4's demo samples with 1.0 and 0.9).
    ``max_new_tokens`` defaults to XrayGPT's 160-token target length (``max_txt_len``).
    """

    temperature: float = 0.0
    top_p: float = 0.9
    max_new_tokens: int = MAX_TARGET_TOKENS
    num_beams: int = 1
    repetition_penalty: float = 1.0

    def validate(self) -> None:
        """Raise :class:`ChatInputError` naming the first setting out of range."""
        if not 0.0 <= float(self.temperature) <= 5.0:
            raise ChatInputError(f"temperature must be in [0, 5], got {self.temperature}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ChatInputError(f"top-p must be in (0, 1], got {self.top_p}")
        if int(self.max_new_tokens) < 1:
            raise ChatInputError(f"max new tokens must be >= 1, got {self.max_new_tokens}")
        if int(self.num_beams) < 1:
            raise ChatInputError(f"beams must be >= 1, got {self.num_beams}")
        if float(self.repetition_penalty) <= 0:
            raise ChatInputError(f"repetition penalty must be > 0, got {self.repetition_penalty}")

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``XrayGPT.generate``."""
        sample = float(self.temperature) > 0
        return {
            "max_new_tokens": int(self.max_new_tokens),
            "num_beams": int(self.num_beams),
            "do_sample": sample,
            "temperature": float(self.temperature) if sample else 1.0,
            "top_p": float(self.top_p),
            "repetition_penalty": float(self.repetition_penalty),
        }

    @property
    def streams(self) -> bool:
        """Whether tokens can be streamed (Hugging Face streams greedy and sampling only)."""
        return int(self.num_beams) == 1


@dataclass
class Answer(ChatReply):
    """The outcome of one :meth:`ChatSession.answer` call: the model-layer reply + what the page shows.

    From :class:`~xraygpt_lab.models.xraygpt.ChatReply`: ``text``, ``dropped_turns`` (oldest
    question/answer pairs removed to fit the context), ``prompt_tokens`` (BOS + text + image
    tokens) and ``max_new_tokens`` (the answer budget actually used).
    """

    stopped: bool = False  # the user pressed Stop
    streamed: bool = True  # False for beam search


class StoppableStreamer(TextIteratorStreamer):
    """A ``TextIteratorStreamer`` whose ``put`` raises :class:`GenerationStopped` once ``stop`` is set.

    Raising inside ``put`` is the one way to end Hugging Face ``generate`` from outside without
    passing a stopping criterion through ``XrayGPT.generate``.
    """

    def __init__(self, tokenizer: Any, stop: threading.Event) -> None:
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=False)
        self.stop = stop

    def put(self, value: torch.Tensor) -> None:  # value: [1, new] or [new] token ids
        if self.stop.is_set():
            raise GenerationStopped()
        super().put(value)


def _clean_partial(model: Any, text: str, stop_string: str) -> str:
    """What to show of an answer still being generated: cut at the stop string, no half ``###``."""
    shown = model.clean_answer(text, stop_string)
    for k in range(len(stop_string) - 1, 0, -1):  # a stop string may arrive one piece at a time
        if shown.endswith(stop_string[:k]):
            return shown[: -k].rstrip()
    return shown


class ChatSession:
    """The panel's side of the chat about one image: a thin UI wrapper of the model-layer session.

    The conversation itself (history, trimming to the context, the image slot, the system prompt,
    the stop string) is :class:`xraygpt_lab.models.xraygpt.ChatSession`, the same session the
    terminal ``xraygpt-lab chat`` uses, held in :attr:`chat`. This class adds only what the page
    needs: the image as an array and its name, the UI's messages for a missing image, and
    streaming on a worker thread with a Stop button (:meth:`answer`).

    ``system`` is the text in front of the first ``###`` (default: the run's ``chat_system``).
    ``""`` reproduces the training prompt exactly (``###Patient: <Img><ImageHere></Img> … ###Doctor: ``),
    which the tiny model needs; XrayGPT's Gradio demo puts ``conversation.XRAYGPT_SYSTEM`` there.
    """

    def __init__(self, model: Any, system: str | None = None) -> None:
        self.model = model
        self.chat = ModelChatSession(model, system=system)
        self.image: np.ndarray | None = None  # [H, W] float32 in [0, 1]
        self.image_name = ""

    # ------------------------------------------------------------------ state, kept by the model-layer session
    @property
    def system(self) -> str:
        return self.chat.system

    @property
    def pixel_values(self) -> torch.Tensor | None:
        """``[1, C, S, S]`` as the model reads it (MedCLIP grey, or BLIP-2 RGB for the release), or None."""
        return self.chat.pixel_values

    @property
    def features(self) -> torch.Tensor | None:
        """``[1, N, d_vision]`` frozen encoder tokens (encoded once per image), or None."""
        return self.chat.features

    @property
    def conversation(self) -> Conversation:
        return self.chat.conversation

    @property
    def last_prompt(self) -> str | None:
        """The prompt that produced the last answer."""
        return self.chat.last_prompt

    @property
    def last_answer(self) -> str | None:
        return self.chat.last_answer

    @property
    def turns(self) -> int:
        """Completed question/answer pairs the model still sees."""
        return self.chat.turns

    @property
    def image_size(self) -> int:
        """Side ``S`` of the square the encoder reads (128 tiny, 224 full and released)."""
        return int(self.model.encoder.image_size)

    # ------------------------------------------------------------------ image and history
    def set_image(self, image: np.ndarray, name: str = "") -> None:
        """Use ``image`` ``[H, W]`` in ``[0, 1]`` from now on; starts a new conversation."""
        pixel_values = self.model.image_processor(image)  # [1, C, S, S], the model's own transform
        self.chat.set_image(pixel_values)
        self.image, self.image_name = image, name

    def clear_image(self) -> None:
        """Forget the image and the conversation."""
        self.chat.set_image(None)
        self.image, self.image_name = None, ""

    def reset(self) -> None:
        """Start the conversation again (the image stays)."""
        self.chat.reset()

    # ------------------------------------------------------------------ context budget
    def prompt_tokens(self, prompt: str) -> int:
        """Tokens the LLM reads for ``prompt``: BOS + text pieces + the image tokens (as ``prompt_wrap``)."""
        return self.chat.prompt_tokens(prompt)

    def _plan(self, question: str, max_new_tokens: int) -> ChatTurn:
        if (question or "").strip() and self.features is None:
            raise ChatInputError("Please choose an image first (upload, dataset or path).")
        return self.chat.plan(question, max_new_tokens)

    def plan(self, question: str, max_new_tokens: int) -> tuple[Conversation, int, int, int]:
        """The conversation to send, after dropping the oldest turns until it fits.

        Returns ``(conversation, dropped_turns, prompt_tokens, max_new_tokens)``; the answer
        budget is lowered when even the newest question alone leaves less room than asked for
        (:meth:`xraygpt_lab.models.xraygpt.ChatSession.plan`). Raises :class:`ChatInputError` for
        an empty question, no image, or no room at all.
        """
        turn = self._plan(question, max_new_tokens)
        return turn.conversation, turn.dropped_turns, turn.prompt_tokens, turn.max_new_tokens

    # ------------------------------------------------------------------ answering
    def answer(self, question: str, settings: GenerationSettings | None = None,
               on_text: Callable[[str], None] | None = None,
               stop: threading.Event | None = None) -> Answer:
        """Answer ``question`` about the current image; ``on_text(partial)`` sees the answer grow.

        The conversation is only updated when an answer was produced (also a stopped one).
        Errors inside the model are re-raised here, after the worker thread has finished.
        """
        settings = settings or GenerationSettings()
        settings.validate()
        turn = self._plan(question, int(settings.max_new_tokens))
        kwargs = settings.generate_kwargs()
        del kwargs["max_new_tokens"]  # the planned budget (lowered when the context is tight)
        stop = stop or threading.Event()
        if settings.streams:
            text, stopped = self._generate_streaming(turn, kwargs, on_text, stop)
        else:
            text, stopped = self.chat.generate(turn, **kwargs), False
            if on_text is not None:
                on_text(text)
        reply = self.chat.commit(turn, text)
        return Answer(**vars(reply), stopped=stopped, streamed=settings.streams)

    def _generate_streaming(self, turn: ChatTurn, kwargs: dict[str, Any],
                            on_text: Callable[[str], None] | None,
                            stop: threading.Event) -> tuple[str, bool]:
        """Generate on a worker thread; read words from the streamer here. Returns (answer, stopped)."""
        streamer = StoppableStreamer(self.model.tokenizer, stop)
        stop_string = turn.conversation.stop_string
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["text"] = self.chat.generate(turn, streamer=streamer, **kwargs)
            except BaseException as exc:  # handed to the reading thread below
                result["error"] = exc
            finally:
                streamer.text_queue.put(streamer.stop_signal)  # the reader never waits forever

        worker = threading.Thread(target=work, name="xraygpt-generate", daemon=True)
        worker.start()
        partial = ""
        while True:
            try:
                piece = streamer.text_queue.get(timeout=_POLL_S)
            except queue.Empty:
                if worker.is_alive():
                    continue
                break
            if piece is streamer.stop_signal:
                break
            partial += piece
            if on_text is not None and piece:
                on_text(_clean_partial(self.model, partial, stop_string))
        worker.join()
        error = result.get("error")
        if isinstance(error, GenerationStopped):
            return self.model.clean_answer(partial, stop_string), True
        if error is not None:
            raise error
        return result["text"], False
