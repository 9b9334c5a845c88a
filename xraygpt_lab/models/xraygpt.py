"""XrayGPT: frozen vision encoder → ONE trainable ``nn.Linear`` → frozen LLM.

XrayGPT (arXiv 2306.07971, Sec. 3, Fig. 2) aligns MedCLIP's image tokens with Vicuna through a
single linear layer; only that layer is trained. The image tokens are spliced into the prompt

    <s>###Patient: <Img>[N image embeddings]</Img> {instruction} ###Doctor: {target}###

and the loss is computed on ``{target}###`` only (labels are -100 on BOS, prompt and image),
with the target cut at 160 tokens (``max_txt_len``). :meth:`XrayGPT.prompt_wrap` does the whole
splice top to bottom in one function, like LLaVA's ``prepare_inputs_labels_for_multimodal``.

Hook points (``nn.Identity`` modules; attach a forward hook to read or replace the tensor):

* ``hook_image_features`` — ``[B, N, d_vision]`` encoder tokens entering the projection
* ``hook_projection``     — ``[B, N, d_llm]`` projection output = the image embeddings
* ``hook_inputs_embeds``  — ``[B, T, d_llm]`` the spliced sequence the LLM reads; the image
  occupies ``model.last_image_positions`` (``[B, N]`` indices into ``T``), set on every
  forward / generate call.

Withholding the image (``withhold_image=True``) replaces the projection output by zeros while
keeping the ``<Img>…</Img>`` slot, the image-blind baseline used in evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import XrayGPTLabError
from .conversation import END_SYM, IMAGE_PLACEHOLDER, MAX_TARGET_TOKENS, Conversation, xraygpt_prompt
from .llm import freeze
from .static_decode import decoder_for

IGNORE_INDEX = -100  # label value the cross-entropy skips (PyTorch / Hugging Face convention)


class ContextLengthError(XrayGPTLabError, ValueError):
    """Prompt, image and answer do not fit the LLM's context; the message states the limit."""


@dataclass
class WrappedPrompt:
    """What :meth:`XrayGPT.prompt_wrap` returns: a padded batch ready for the LLM."""

    inputs_embeds: torch.Tensor  # [B, T, d_llm]
    attention_mask: torch.Tensor  # [B, T] 1 = real token, 0 = padding
    labels: torch.Tensor | None  # [B, T] token ids on the target, -100 elsewhere
    image_positions: torch.Tensor | None  # [B, N] index of each image token in T
    input_ids: torch.Tensor  # [B, T] token ids, pad_token_id at image and padding positions


@dataclass
class XrayGPTOutput:
    loss: torch.Tensor | None  # scalar mean cross-entropy over target tokens
    logits: torch.Tensor  # [B, T, vocab]
    wrapped: WrappedPrompt


class XrayGPT(nn.Module):
    """Frozen ``encoder`` → ``projection = nn.Linear(d_vision, d_llm)`` → frozen ``llm``.

    ``encoder`` needs ``encode_tokens(pixels [B,1,S,S]) -> [B,N,d]`` and ``token_dim``
    (``models.encoder.VisionEncoder``); ``llm`` is a Hugging Face causal LM and ``tokenizer``
    its tokenizer. The projection is MiniGPT-4's ``llama_proj``.
    """

    def __init__(self, encoder: nn.Module, llm: nn.Module, tokenizer: Any,
                 max_target_tokens: int = MAX_TARGET_TOKENS, end_sym: str = END_SYM,
                 freeze_llm: bool = True) -> None:
        super().__init__()
        self.encoder = freeze(encoder).eval()
        self.llm = llm
        if freeze_llm:
            freeze(self.llm)
        self.tokenizer = tokenizer
        self.max_target_tokens = max_target_tokens
        self.end_sym = end_sym
        d_vision, d_llm = int(encoder.token_dim), int(llm.config.hidden_size)
        self.projection = nn.Linear(d_vision, d_llm)  # the ONE trainable layer (Sec. 3)
        self.hook_image_features = nn.Identity()  # [B, N, d_vision]
        self.hook_projection = nn.Identity()  # [B, N, d_llm]
        self.hook_inputs_embeds = nn.Identity()  # [B, T, d_llm]
        self.last_image_positions: torch.Tensor | None = None  # [B, N]
        self.chat_system = ""  # system prompt of ChatSession (a run's config.json may set one)

    # ------------------------------------------------------------------ pieces
    @property
    def device(self) -> torch.device:
        return self.projection.weight.device

    def train(self, mode: bool = True) -> "XrayGPT":
        """Only the projection (and an unfrozen LLM) switch to train mode; the encoder stays eval."""
        super().train(mode)
        self.encoder.eval()
        if not any(p.requires_grad for p in self.llm.parameters()):
            self.llm.eval()
        return self

    @property
    def pixel_space(self):
        """The encoder's ``data.readers.images.PixelSpace``: normalisation and how images become squares."""
        return self.encoder.pixel_space

    def image_processor(self, image: Any) -> torch.Tensor:
        """A radiograph (file or grey ``[H, W]`` array) as the encoder reads it: ``[1, C, S, S]`` on the CPU."""
        return self.encoder.image_processor(image)

    @torch.no_grad()
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen encoder tokens for ``pixel_values`` ``[B, 1, S, S]`` → ``[B, N, d_vision]``."""
        return self.encoder.encode_tokens(pixel_values.to(self.device))

    def embed_image(self, pixel_values: torch.Tensor | None = None, features: torch.Tensor | None = None,
                    withhold_image: bool = False) -> torch.Tensor:
        """Image embeddings in the LLM's space: ``[B, N, d_llm]``.

        Give either ``pixel_values`` ``[B, 1, S, S]`` or cached encoder ``features``
        ``[B, N, d_vision]`` (``train.feature_cache``). ``withhold_image`` zeroes the output.
        """
        if (pixel_values is None) == (features is None):
            raise ValueError("give exactly one of pixel_values or features")
        if features is None:
            features = self.encode_image(pixel_values)
        if features.dim() != 3 or features.shape[-1] != self.projection.in_features:
            raise ValueError(f"features must be [batch, tokens, {self.projection.in_features}], "
                             f"got {list(features.shape)}")
        features = self.hook_image_features(features.to(self.device, self.projection.weight.dtype))
        image_embeds = self.hook_projection(self.projection(features))  # [B, N, d_llm]
        if withhold_image:
            image_embeds = torch.zeros_like(image_embeds)
        return image_embeds

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    # ------------------------------------------------------------------ the splice
    def prompt_wrap(self, image_embeds: torch.Tensor | None, prompts: Sequence[str],
                    targets: Sequence[str] | None = None, padding_side: str = "right") -> WrappedPrompt:
        """Splice image embeddings into the prompts and build the loss mask, top to bottom.

        ``image_embeds`` ``[B, N, d_llm]`` (or ``None`` for text-only prompts); each prompt holds
        ``<ImageHere>`` exactly once when images are given, never otherwise. ``targets`` (training)
        get ``end_sym`` appended and are cut at ``max_target_tokens``; only they carry labels.
        Generation uses ``padding_side="left"`` so that every prompt ends at the last position.
        """
        batch = len(prompts)
        if targets is not None and len(targets) != batch:
            raise ValueError(f"{batch} prompts but {len(targets)} targets")
        if image_embeds is not None and image_embeds.shape[0] != batch:
            raise ValueError(f"{batch} prompts but {image_embeds.shape[0]} images")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        embed_tokens = self.llm.get_input_embeddings()
        device, dtype = embed_tokens.weight.device, embed_tokens.weight.dtype
        bos, pad = self.tokenizer.bos_token_id, self.tokenizer.pad_token_id
        rows_embeds, rows_ids, rows_labels, rows_image = [], [], [], []
        for i, prompt in enumerate(prompts):
            # 1. split the prompt at the image slot: "###Patient: <Img>" | image | "</Img> … ###Doctor: "
            parts = prompt.split(IMAGE_PLACEHOLDER)
            if image_embeds is not None and len(parts) != 2:
                raise ValueError(f"prompt {i} must contain {IMAGE_PLACEHOLDER} exactly once: {prompt!r}")
            if image_embeds is None and len(parts) != 1:
                raise ValueError(f"prompt {i} has {IMAGE_PLACEHOLDER} but no image was given")
            before = ([bos] if bos is not None else []) + self._ids(parts[0])
            after = self._ids(parts[1]) if len(parts) == 2 else []
            # 2. the target: answer + end symbol, cut at max_txt_len (160) tokens as XrayGPT does
            target = self._ids(targets[i] + self.end_sym)[: self.max_target_tokens] if targets else []
            # 3. embeddings: text | image | text | target, one sequence
            image = image_embeds[i].to(device, dtype) if image_embeds is not None else None  # [N, d_llm]
            n_image = 0 if image is None else image.shape[0]
            text_ids = torch.tensor(before + after + target, dtype=torch.long, device=device)
            text_embeds = embed_tokens(text_ids)  # [L, d_llm]
            pieces = [text_embeds[: len(before)]]
            if image is not None:
                pieces.append(image)
            pieces.append(text_embeds[len(before):])
            rows_embeds.append(torch.cat(pieces, dim=0))  # [L + N, d_llm]
            # 4. ids (image slots shown as pad) and labels: -100 on BOS, prompt and image
            ids = before + [pad] * n_image + after + target
            rows_ids.append(ids)
            rows_labels.append([IGNORE_INDEX] * (len(ids) - len(target)) + target)
            rows_image.append(list(range(len(before), len(before) + n_image)))
        # 5. pad to the longest row
        length = max(r.shape[0] for r in rows_embeds)
        d_llm = rows_embeds[0].shape[1]
        inputs_embeds = torch.zeros(batch, length, d_llm, device=device, dtype=rows_embeds[0].dtype)
        attention_mask = torch.zeros(batch, length, dtype=torch.long, device=device)
        input_ids = torch.full((batch, length), pad, dtype=torch.long, device=device)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long, device=device)
        image_positions = []
        for i, row in enumerate(rows_embeds):
            n = row.shape[0]
            start = length - n if padding_side == "left" else 0
            inputs_embeds[i, start:start + n] = row
            attention_mask[i, start:start + n] = 1
            input_ids[i, start:start + n] = torch.tensor(rows_ids[i], device=device)
            labels[i, start:start + n] = torch.tensor(rows_labels[i], device=device)
            image_positions.append([start + p for p in rows_image[i]])
        positions = torch.tensor(image_positions, dtype=torch.long, device=device) if image_embeds is not None else None
        self.last_image_positions = positions
        return WrappedPrompt(
            inputs_embeds=self.hook_inputs_embeds(inputs_embeds),
            attention_mask=attention_mask,
            labels=labels if targets is not None else None,
            image_positions=positions,
            input_ids=input_ids,
        )

    # ------------------------------------------------------------------ training
    def forward(self, prompts: Sequence[str], targets: Sequence[str] | None = None,
                pixel_values: torch.Tensor | None = None, features: torch.Tensor | None = None,
                withhold_image: bool = False) -> XrayGPTOutput:
        """Teacher-forced pass; ``loss`` is the mean cross-entropy on target tokens.

        ``prompts`` are full prompt strings (see :func:`conversation.xraygpt_prompt`).
        """
        image_embeds = self.embed_image(pixel_values, features, withhold_image)  # [B, N, d_llm]
        wrapped = self.prompt_wrap(image_embeds, prompts, targets)
        out = self.llm(inputs_embeds=wrapped.inputs_embeds, attention_mask=wrapped.attention_mask,
                       labels=wrapped.labels, use_cache=False)
        return XrayGPTOutput(loss=out.loss, logits=out.logits, wrapped=wrapped)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, prompts: Sequence[str] | str, pixel_values: torch.Tensor | None = None,
                 features: torch.Tensor | None = None, *, max_new_tokens: int = MAX_TARGET_TOKENS,
                 num_beams: int = 1, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 0.9, repetition_penalty: float = 1.0, streamer: Any = None,
                 use_cache: bool = True, withhold_image: bool = False,
                 stop_string: str | None = None, static_cache: bool | None = None) -> list[str]:
        """Generate one answer per prompt from ``inputs_embeds``, stopping at ``###``.

        ``prompts``: full prompt strings with ``<ImageHere>`` (or an instruction, wrapped with the
        training template when it has no ``###``). ``streamer`` (e.g. ``TextIteratorStreamer``)
        receives tokens as they come (batch of one). ``use_cache=False`` recomputes the whole
        sequence at every step (greedy / sampling only) — for benchmarking the KV cache.
        ``static_cache`` (default: on a GPU, for one prompt without beam search) decodes with a
        static KV cache and a captured CUDA graph per step (``models.static_decode``): the same
        tokens, several times faster per token on a GPU.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        has_image = pixel_values is not None or features is not None
        prompts = [p if END_SYM in p else xraygpt_prompt(p, with_image=has_image) for p in prompts]
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self._generation_kwargs(do_sample, temperature, top_p, repetition_penalty)  # bad settings first
        if streamer is not None and len(prompts) != 1:
            raise ValueError("a streamer needs a batch of exactly one prompt")
        stop_string = stop_string or self.end_sym
        was_training = self.training
        self.eval()
        try:
            image_embeds = None
            if has_image:
                image_embeds = self.embed_image(pixel_values, features, withhold_image)
            wrapped = self.prompt_wrap(image_embeds, prompts, padding_side="left")
            self.check_context(int(wrapped.inputs_embeds.shape[1]), max_new_tokens)
            embeds = wrapped.inputs_embeds.to(self.llm.dtype)
            if static_cache is None:
                static_cache = self.device.type == "cuda" and use_cache and num_beams == 1 and len(prompts) == 1
            if static_cache:
                if not use_cache or num_beams != 1 or len(prompts) != 1:
                    raise ValueError("static_cache decodes one prompt with the KV cache and num_beams=1")
                out_ids = self._generate_static(embeds, max_new_tokens, do_sample, temperature, top_p,
                                                repetition_penalty, streamer, stop_string)
            elif use_cache:
                out_ids = self._generate_cached(embeds, wrapped.attention_mask, max_new_tokens, num_beams,
                                                do_sample, temperature, top_p, repetition_penalty,
                                                streamer, stop_string)
            else:
                if num_beams != 1:
                    raise ValueError("use_cache=False supports greedy or sampling (num_beams=1) only")
                out_ids = self._generate_uncached(embeds, wrapped.attention_mask, max_new_tokens, do_sample,
                                                  temperature, top_p, repetition_penalty, streamer, stop_string)
        finally:
            self.train(was_training)
        texts = self.tokenizer.batch_decode(out_ids, skip_special_tokens=False)
        return [self.clean_answer(t, stop_string) for t in texts]

    def clean_answer(self, text: str, stop_string: str | None = None) -> str:
        """Cut generated text at the stop string and drop padding / special tokens."""
        stop_string = stop_string or self.end_sym
        text = text.split(stop_string)[0]
        for special in (self.tokenizer.pad_token, self.tokenizer.eos_token, self.tokenizer.bos_token):
            if special:
                text = text.replace(special, "")
        return text.split("Patient:")[0].strip()

    def _generation_kwargs(self, do_sample: bool, temperature: float, top_p: float,
                           repetition_penalty: float) -> dict[str, Any]:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        kwargs: dict[str, Any] = {"do_sample": do_sample, "repetition_penalty": repetition_penalty}
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        return kwargs

    def _generate_cached(self, embeds, attention_mask, max_new_tokens, num_beams, do_sample,
                         temperature, top_p, repetition_penalty, streamer, stop_string) -> torch.Tensor:
        """Hugging Face ``generate`` from ``inputs_embeds`` (always with KV cache)."""
        import warnings

        kwargs = self._generation_kwargs(do_sample, temperature, top_p, repetition_penalty)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "repetition_penalty with inputs_embeds" notice
            return self.llm.generate(
                inputs_embeds=embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                num_beams=num_beams, streamer=streamer, stop_strings=[stop_string],
                tokenizer=self.tokenizer, pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id, **kwargs,
            )  # [B, new_tokens]

    def _generate_uncached(self, embeds, attention_mask, max_new_tokens, do_sample, temperature,
                           top_p, repetition_penalty, streamer, stop_string) -> torch.Tensor:
        """Token-by-token decoding that re-reads the whole sequence each step (no KV cache)."""
        processors = self._logits_processors(do_sample, temperature, top_p, repetition_penalty)
        embed_tokens = self.llm.get_input_embeddings()
        batch = embeds.shape[0]
        pad = self.tokenizer.pad_token_id
        generated = torch.empty(batch, 0, dtype=torch.long, device=embeds.device)  # [B, t]
        done = torch.zeros(batch, dtype=torch.bool, device=embeds.device)
        for _ in range(max_new_tokens):
            full = torch.cat([embeds, embed_tokens(generated)], dim=1)  # [B, T + t, d_llm]
            mask = torch.cat([attention_mask, torch.ones_like(generated)], dim=1)
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding → positions from 0
            logits = self.llm(inputs_embeds=full, attention_mask=mask, position_ids=position_ids,
                              use_cache=False).logits[:, -1, :].float()  # [B, vocab]
            scores = processors(generated, logits)
            if do_sample:
                token = torch.multinomial(torch.softmax(scores, dim=-1), 1).squeeze(1)
            else:
                token = scores.argmax(dim=-1)
            token = torch.where(done, torch.full_like(token, pad), token)
            generated = torch.cat([generated, token[:, None]], dim=1)
            if streamer is not None:
                streamer.put(token.cpu())
            tails = self.tokenizer.batch_decode(generated[:, -8:], skip_special_tokens=False)
            done |= torch.tensor([stop_string in t for t in tails], device=done.device)
            done |= token == self.tokenizer.eos_token_id
            if bool(done.all()):
                break
        if streamer is not None:
            streamer.end()
        return generated

    def _generate_static(self, embeds, max_new_tokens, do_sample, temperature, top_p,
                         repetition_penalty, streamer, stop_string) -> torch.Tensor:
        """Batch-1 decoding with a static KV cache (+ a CUDA graph per step on a GPU)."""

        processors = self._logits_processors(do_sample, temperature, top_p, repetition_penalty)
        decoder = decoder_for(self.llm, embeds.shape[1] + max_new_tokens)
        logits = decoder.prefill(embeds)  # [1, vocab]
        tokens: list[int] = []
        generated = torch.empty(1, 0, dtype=torch.long, device=self.device)  # [1, t] (for the processors)
        for i in range(max_new_tokens):
            scores = processors(generated, logits) if len(processors) else logits
            if do_sample:
                token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1))
            else:
                token = int(scores.argmax(dim=-1))
            tokens.append(token)
            if len(processors):
                generated = torch.cat([generated, generated.new_tensor([[token]])], dim=1)
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if token == self.tokenizer.eos_token_id or stop_string in self.tokenizer.decode(tokens[-8:]):
                break
            if i + 1 < max_new_tokens:
                logits = decoder.step(token)
        if streamer is not None:
            streamer.end()
        return torch.tensor([tokens], dtype=torch.long)  # [1, new_tokens]

    def _logits_processors(self, do_sample: bool, temperature: float, top_p: float, repetition_penalty: float):
        """Hugging Face logits processors for the hand-run decoding loops (sampling and penalty)."""
        from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                  TemperatureLogitsWarper, TopPLogitsWarper)

        self._generation_kwargs(do_sample, temperature, top_p, repetition_penalty)  # validate
        processors = LogitsProcessorList()
        if repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
        if do_sample:
            processors.append(TemperatureLogitsWarper(temperature))
            processors.append(TopPLogitsWarper(top_p))
        return processors

    # ------------------------------------------------------------------ convenience
    def describe(self, pixel_values: torch.Tensor | None = None, features: torch.Tensor | None = None,
                 instruction: str = "Describe the given chest x-ray image in detail.",
                 **generate_kwargs: Any) -> list[str]:
        """One generated report per image (XrayGPT's first alignment instruction by default)."""
        n = (pixel_values if pixel_values is not None else features).shape[0]
        return self.generate([xraygpt_prompt(instruction)] * n, pixel_values=pixel_values,
                             features=features, **generate_kwargs)

    @property
    def context_length(self) -> int:
        """Longest sequence the LLM accepts (``max_position_embeddings``)."""
        return int(getattr(self.llm.config, "max_position_embeddings", 2048))

    def check_context(self, prompt_tokens: int, max_new_tokens: int = 0, what: str = "the prompt") -> None:
        """Raise :class:`ContextLengthError` unless ``prompt_tokens + max_new_tokens`` fit the context.

        ``prompt_tokens`` counts BOS, text and image tokens (the spliced sequence). The message
        states the context and the room left, whichever of the two does not fit.
        """
        context = self.context_length
        if prompt_tokens + (1 if max_new_tokens else 0) > context:
            raise ContextLengthError(
                f"{what} is too long: it needs {prompt_tokens} tokens (image included) but the model's "
                f"context holds {context}; shorten it")
        if prompt_tokens + max_new_tokens > context:
            raise ContextLengthError(
                f"{max_new_tokens} new tokens do not fit: the model's context holds {context} tokens and "
                f"{what} takes {prompt_tokens}, so at most {context - prompt_tokens} new tokens fit")

    @property
    def num_image_tokens(self) -> int:
        n = getattr(self.encoder, "num_tokens", None)
        return int(n) if n is not None else 0


class ChatInputError(XrayGPTLabError, ValueError):
    """A question the chat cannot use (empty, too long for the context); the message says why."""


@dataclass
class ChatReply:
    """One answer of a :class:`ChatSession`."""

    text: str
    dropped_turns: int = 0  # oldest question/answer pairs dropped for this answer (context full)
    prompt_tokens: int = 0  # tokens the LLM read (BOS + text + image tokens)
    max_new_tokens: int = 0  # answer budget actually used (lowered when the context was tight)


@dataclass
class ChatTurn:
    """A planned answer (:meth:`ChatSession.plan`): the trimmed conversation ending in the open answer."""

    conversation: Conversation  # a copy of the history, trimmed, + the question and an open answer
    dropped_turns: int  # oldest question/answer pairs removed to fit the context
    prompt_tokens: int  # tokens the LLM reads for ``prompt``
    max_new_tokens: int  # answer budget: the one asked for, lowered when the context is tight

    @property
    def prompt(self) -> str:
        return self.conversation.get_prompt()


class ChatSession:
    """Multi-turn chat about one image (XrayGPT's demo), in the ``###Patient/###Doctor`` template.

    The one chat session of the toolkit: the terminal ``xraygpt-lab chat`` uses it directly, the
    notebook chat panel wraps it (``widgets.session.ChatSession`` adds threads and the page).

    * The image (``pixel_values`` ``[1, 1, S, S]``, encoded once into ``features``
      ``[1, N, d_vision]``) goes into the first question as ``<Img><ImageHere></Img>``; without an
      image the chat is text-only.
    * ``system`` is the text in front of the first ``###`` (default: the run's ``chat_system``;
      ``""`` reproduces the training prompt exactly, which the tiny model needs).
    * When prompt + image + ``max_new_tokens`` exceed the LLM's context, the oldest question/answer
      pairs are dropped (the image slot moves to the oldest kept question, so the image is never
      dropped); when even the newest question alone leaves less room, the answer budget is
      lowered; a question that leaves no room at all raises :class:`ChatInputError`.
    * The history only changes once an answer exists: a failed generation leaves it as it was.
    * :meth:`ask` = :meth:`plan` → :meth:`generate` → :meth:`commit`; ``streamer``, ``stop_string``
      (the conversation's) and every other ``XrayGPT.generate`` keyword (``static_cache``,
      ``num_beams``, sampling …) pass through.
    """

    def __init__(self, model: XrayGPT, pixel_values: torch.Tensor | None = None, system: str | None = None,
                 max_new_tokens: int = MAX_TARGET_TOKENS, *, features: torch.Tensor | None = None) -> None:
        self.model = model
        self.system = str(getattr(model, "chat_system", "") or "") if system is None else system
        self.max_new_tokens = max_new_tokens
        self.pixel_values: torch.Tensor | None = None  # [1, 1, S, S]
        self.features: torch.Tensor | None = None  # [1, N, d_vision] frozen encoder tokens
        self.set_image(pixel_values, features)

    # ------------------------------------------------------------------ image and history
    def set_image(self, pixel_values: torch.Tensor | None = None, features: torch.Tensor | None = None) -> None:
        """Chat about another image from now on (``None``: no image) and start a new conversation."""
        if features is None and pixel_values is not None:
            features = self.model.encode_image(pixel_values)  # [1, N, d_vision], once per image
        self.pixel_values, self.features = pixel_values, features
        self.reset()

    def reset(self, pixel_values: torch.Tensor | None = None) -> None:
        """Forget the conversation (and switch image when one is given)."""
        if pixel_values is not None:
            self.set_image(pixel_values)
            return
        self.conversation = Conversation(system=self.system)
        self.dropped_turns = 0  # all turns dropped since the last reset
        self.last_prompt: str | None = None  # the prompt that produced the last answer
        self.last_answer: str | None = None

    @property
    def turns(self) -> int:
        """Completed question/answer pairs the model still sees."""
        return sum(1 for role, text in self.conversation.messages
                   if role == self.conversation.roles[1] and text is not None)

    # ------------------------------------------------------------------ context budget
    def prompt_tokens(self, prompt: str) -> int:
        """Tokens the LLM reads for ``prompt``: BOS + text pieces + image tokens, as ``prompt_wrap``."""
        tokenizer = self.model.tokenizer
        parts = prompt.split(IMAGE_PLACEHOLDER)
        n = 1 if tokenizer.bos_token_id is not None else 0
        for part in parts:
            if part:
                n += len(tokenizer(part, add_special_tokens=False)["input_ids"])
        if len(parts) == 2:
            n += int(self.features.shape[1]) if self.features is not None else self.model.num_image_tokens
        return n

    def plan(self, question: str, max_new_tokens: int | None = None) -> ChatTurn:
        """The conversation to send for ``question``, after dropping the oldest turns until it fits.

        Does not change the session. Raises :class:`ChatInputError` for an empty question or one
        that leaves no room for even one answer token.
        """
        question = (question or "").strip()
        if not question:
            raise ChatInputError("The question is empty: please type a question first.")
        max_new_tokens = int(self.max_new_tokens if max_new_tokens is None else max_new_tokens)
        if max_new_tokens < 1:
            raise ChatInputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        context = int(self.model.context_length)
        conversation = self.conversation.copy()
        conversation.ask(question, image=self.features is not None and not conversation.messages)
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
        return ChatTurn(conversation, dropped, tokens, min(max_new_tokens, room))

    # ------------------------------------------------------------------ answering
    def generate(self, turn: ChatTurn, streamer: Any = None, **generate_kwargs: Any) -> str:
        """Generate the answer of a planned ``turn`` (``XrayGPT.generate``; the session is unchanged)."""
        prompt = turn.prompt
        if streamer is not None:
            generate_kwargs["streamer"] = streamer
        features = self.features if IMAGE_PLACEHOLDER in prompt else None
        return self.model.generate(prompt, features=features, max_new_tokens=turn.max_new_tokens,
                                   stop_string=turn.conversation.stop_string, **generate_kwargs)[0]

    def commit(self, turn: ChatTurn, text: str) -> ChatReply:
        """Record ``text`` (also a partial, stopped answer) as the answer of ``turn``."""
        prompt = turn.prompt
        turn.conversation.answer(text)
        self.conversation = turn.conversation
        self.dropped_turns += turn.dropped_turns
        self.last_prompt, self.last_answer = prompt, text
        return ChatReply(text=text, dropped_turns=turn.dropped_turns, prompt_tokens=turn.prompt_tokens,
                         max_new_tokens=turn.max_new_tokens)

    def ask(self, question: str, streamer: Any = None, **generate_kwargs: Any) -> ChatReply:
        """Ask one question; the reply says how many old turns were dropped and the budget used.

        ``max_new_tokens`` (default: the session's) and the other keywords go to ``XrayGPT.generate``.
        """
        turn = self.plan(question, generate_kwargs.pop("max_new_tokens", None))
        return self.commit(turn, self.generate(turn, streamer, **generate_kwargs))
