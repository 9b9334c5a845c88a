"""A multi-turn chat with one radiograph: the model side of the chat panel, without any widget.

XrayGPT's demo (arXiv 2306.07971, Sec. 3.2; MiniGPT-4's ``Chat`` class) keeps one
:class:`~xraygpt_lab.models.conversation.Conversation` per image. The image slot
``<Img><ImageHere></Img>`` sits in the first patient message; each answer is generated from the
whole conversation so far and stops at ``###``. When the prompt plus the answer budget no longer
fits in the LLM's context (``max_position_embeddings``: 2048 for Vicuna-7B), the oldest
question/answer pairs are dropped (the image slot moves to the oldest remaining question, so the
image is never dropped).

Streaming: :meth:`ChatSession.answer` runs ``XrayGPT.generate`` on a worker thread with a
``transformers.TextIteratorStreamer`` and calls ``on_text(partial_answer)`` from the calling
thread each time a word arrives. Beam search (``num_beams > 1``) cannot stream in Hugging Face
``generate``; the answer then arrives whole.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from transformers import TextIteratorStreamer

from ..errors import XrayGPTLabError
from ..models.conversation import IMAGE_PLACEHOLDER, MAX_TARGET_TOKENS, Conversation

#: Seconds the reader waits for the next streamed word before checking the worker is alive.
_POLL_S = 0.1


class ChatInputError(XrayGPTLabError, ValueError):
    """A question or setting the chat cannot use (empty, no image yet, too long); the message says why."""


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
class Answer:
    """The outcome of one :meth:`ChatSession.answer` call."""

    text: str
    dropped_turns: int = 0  # oldest question/answer pairs removed to fit the context
    prompt_tokens: int = 0  # tokens the LLM read (BOS + text + image tokens)
    max_new_tokens: int = 0  # answer budget actually used (lowered when the context was tight)
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


@dataclass
class ChatSession:
    """The conversation about one image with an :class:`~xraygpt_lab.models.xraygpt.XrayGPT`.

    ``system`` is the text in front of the first ``###``. The default ``""`` reproduces the
    training prompt exactly (``###Patient: <Img><ImageHere></Img> … ###Doctor: ``), which the
    tiny model needs; XrayGPT's Gradio demo puts ``conversation.XRAYGPT_SYSTEM`` there.
    """

    model: Any
    system: str = ""
    image: np.ndarray | None = None  # [H, W] float32 in [0, 1]
    image_name: str = ""
    pixel_values: torch.Tensor | None = None  # [1, 1, S, S] MedCLIP-normalised
    features: torch.Tensor | None = None  # [1, N, d_vision] frozen encoder tokens (cached)
    conversation: Conversation = field(default_factory=Conversation)
    last_prompt: str | None = None  # the prompt that produced the last answer
    last_answer: str | None = None

    def __post_init__(self) -> None:
        self.conversation = Conversation(system=self.system)

    # ------------------------------------------------------------------ image and history
    @property
    def image_size(self) -> int:
        """Side ``S`` of the square the encoder reads (128 tiny, 224 full)."""
        return int(self.model.encoder.config.image_size)

    def set_image(self, image: np.ndarray, name: str = "") -> None:
        """Use ``image`` ``[H, W]`` in ``[0, 1]`` from now on; starts a new conversation."""
        from ..data.images import preprocess

        pixel_values = preprocess(image, self.image_size)[None]  # [1, 1, S, S]
        features = self.model.encode_image(pixel_values)  # [1, N, d_vision]
        self.image, self.image_name = image, name
        self.pixel_values, self.features = pixel_values, features
        self.reset()

    def clear_image(self) -> None:
        """Forget the image and the conversation."""
        self.image, self.image_name, self.pixel_values, self.features = None, "", None, None
        self.reset()

    def reset(self) -> None:
        """Start the conversation again (the image stays)."""
        self.conversation = Conversation(system=self.system)
        self.last_prompt = self.last_answer = None

    @property
    def turns(self) -> int:
        """Completed question/answer pairs the model still sees."""
        return sum(1 for role, text in self.conversation.messages
                   if role == self.conversation.roles[1] and text is not None)

    # ------------------------------------------------------------------ context budget
    def prompt_tokens(self, prompt: str) -> int:
        """Tokens the LLM reads for ``prompt``: BOS + text pieces + the image tokens (as ``prompt_wrap``)."""
        tokenizer = self.model.tokenizer
        parts = prompt.split(IMAGE_PLACEHOLDER)
        n = 1 if tokenizer.bos_token_id is not None else 0
        for part in parts:
            if part:
                n += len(tokenizer(part, add_special_tokens=False)["input_ids"])
        if len(parts) == 2:
            n += int(self.features.shape[1]) if self.features is not None else self.model.num_image_tokens
        return n

    def plan(self, question: str, max_new_tokens: int) -> tuple[Conversation, int, int, int]:
        """The conversation to send, after dropping the oldest turns until it fits.

        Returns ``(conversation, dropped_turns, prompt_tokens, max_new_tokens)``; the answer
        budget is lowered when even the newest question alone leaves less room than asked for.
        Raises :class:`ChatInputError` for an empty question, no image, or no room at all.
        """
        question = (question or "").strip()
        if not question:
            raise ChatInputError("Please type a question first.")
        if self.features is None:
            raise ChatInputError("Please choose an image first (upload, dataset or path).")
        context = int(self.model.context_length)
        conversation = self.conversation.copy()
        conversation.ask(question, image=not conversation.messages)
        dropped = 0
        tokens = self.prompt_tokens(conversation.get_prompt())
        while tokens + max_new_tokens > context and conversation.drop_oldest_turn():
            dropped += 1
            tokens = self.prompt_tokens(conversation.get_prompt())
        room = context - tokens
        if room < 1:
            raise ChatInputError(
                f"This question is too long: the prompt needs {tokens} tokens but the model's "
                f"context holds {context}. Please ask something shorter.")
        return conversation, dropped, tokens, min(int(max_new_tokens), room)

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
        conversation, dropped, tokens, budget = self.plan(question, int(settings.max_new_tokens))
        prompt = conversation.get_prompt()
        kwargs = {**settings.generate_kwargs(), "max_new_tokens": budget,
                  "stop_string": conversation.stop_string}
        stop = stop or threading.Event()
        if settings.streams:
            text, stopped = self._generate_streaming(prompt, kwargs, on_text, stop)
        else:
            text, stopped = self.model.generate(prompt, features=self.features, **kwargs)[0], False
            if on_text is not None:
                on_text(text)
        conversation.answer(text)
        self.conversation = conversation
        self.last_prompt, self.last_answer = prompt, text
        return Answer(text=text, dropped_turns=dropped, prompt_tokens=tokens, max_new_tokens=budget,
                      stopped=stopped, streamed=settings.streams)

    def _generate_streaming(self, prompt: str, kwargs: dict[str, Any],
                            on_text: Callable[[str], None] | None,
                            stop: threading.Event) -> tuple[str, bool]:
        """Generate on a worker thread; read words from the streamer here. Returns (answer, stopped)."""
        streamer = StoppableStreamer(self.model.tokenizer, stop)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["texts"] = self.model.generate(prompt, features=self.features,
                                                      streamer=streamer, **kwargs)
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
                on_text(_clean_partial(self.model, partial, kwargs["stop_string"]))
        worker.join()
        error = result.get("error")
        if isinstance(error, GenerationStopped):
            return self.model.clean_answer(partial, kwargs["stop_string"]), True
        if error is not None:
            raise error
        return result["texts"][0], False
