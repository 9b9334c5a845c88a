"""What we explain: scalar functions of the input pixels, one value per image.

Every attribution method asks "which pixels raise THIS number?". Three kinds of number
(XrayGPT arXiv 2306.07971, Sec. 3 for the prompt and splice):

* :class:`TextTarget` with :func:`answer_target` — ``log P(answer | image, prompt)``, the summed
  log-probability of every answer token (the end symbol ``###`` excluded), teacher-forced;
* :class:`TextTarget` with :func:`phrase_target` — the same sum over the tokens of one phrase
  inside the answer (``"left pleural effusion"``), conditioned on the image, the prompt and the
  answer text before the phrase;
* :class:`ZeroShotTarget` — the encoder's zero-shot score for an observation (MedCLIP prompt
  ensembles, ``models.zero_shot``): ``scale · (cos(img, positive) − cos(img, negative))``, the logit
  of the two-way softmax (``output="probability"`` gives the softmax itself, which saturates).

A target is a plain callable ``pixels [B, 1, S, S] → [B]`` that keeps the autograd graph, which is
exactly what Captum's ``forward_func`` wants. Text targets splice the image embeddings into a
prompt prepared once (``XrayGPT.prompt_wrap`` on a batch of one), so a batch of ``B`` perturbed
images costs one encoder and one LLM pass; ``tests/test_attribution.py`` checks the splice equals
``XrayGPT.forward``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..models.conversation import IMAGE_PLACEHOLDER, xraygpt_prompt
from ..models.xraygpt import ContextLengthError
from ..models.zero_shot import DEFAULT_PROMPTS, prompt_embedding

DEFAULT_INSTRUCTION = "Describe the given chest x-ray image in detail."


def find_phrase(text: str, phrase: str) -> tuple[int, int] | None:
    """Character span ``(start, end)`` of ``phrase`` in ``text`` (case-insensitive), or ``None``."""
    phrase = phrase.strip()
    if not phrase:
        raise ValueError("phrase is empty or only whitespace")
    start = text.lower().find(phrase.lower())
    return None if start < 0 else (start, start + len(phrase))


def token_spans(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (no BOS, as ``XrayGPT.prompt_wrap`` tokenises targets) and their
    character offsets; needs a fast tokenizer (``return_offsets_mapping``)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


@dataclass
class TextTarget:
    """``Σ log P(token_t | image, prompt, answer<t)`` over the selected answer tokens.

    Build it with :func:`answer_target` or :func:`phrase_target`. ``token_mask`` ``[L]`` marks the
    answer tokens that count; ``description`` names the target in plots and JSON.
    """

    model: nn.Module  # models.xraygpt.XrayGPT
    prompt: str
    answer: str
    token_mask: torch.Tensor  # [L] bool over the target tokens (answer + end symbol, cut at 160)
    description: str
    phrase: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    def _prepared(self) -> dict[str, torch.Tensor]:
        """Prompt embeddings with an empty image slot, positions and label ids (computed once)."""
        if self._cache:
            return self._cache
        model = self.model
        n, d_llm = model.num_image_tokens, model.projection.out_features
        with torch.no_grad():
            dummy = torch.zeros(1, n, d_llm, device=model.device, dtype=model.projection.weight.dtype)
            wrapped = model.prompt_wrap(dummy, [self.prompt], [self.answer])
        labels = wrapped.labels[0]  # [T]
        target_positions = torch.nonzero(labels != -100).flatten()  # [L]
        if target_positions.numel() != self.token_mask.numel():
            raise ValueError(f"target has {target_positions.numel()} tokens but the mask has {self.token_mask.numel()}")
        keep = target_positions[self.token_mask.to(target_positions.device)]  # [K] positions of counted tokens
        image_positions = wrapped.image_positions[0]  # [N], contiguous
        self._cache.update(
            embeds=wrapped.inputs_embeds.detach(),  # [1, T, d_llm]
            attention_mask=wrapped.attention_mask,  # [1, T]
            image_start=int(image_positions[0]),
            n_image=int(image_positions.numel()),
            predict_positions=keep - 1,  # [K] the logits at t-1 predict the token at t
            token_ids=labels[keep],  # [K]
            target_positions=keep,
        )
        return self._cache

    def splice(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Put ``image_embeds`` ``[B, N, d_llm]`` into the prepared prompt: ``[B, T, d_llm]``."""
        cache = self._prepared()
        base = cache["embeds"].to(image_embeds.dtype)  # [1, T, d_llm]
        start, n = cache["image_start"], cache["n_image"]
        if image_embeds.shape[1] != n:
            raise ValueError(f"expected {n} image tokens, got {image_embeds.shape[1]}")
        b = image_embeds.shape[0]
        embeds = torch.cat([base[:, :start].expand(b, -1, -1), image_embeds,
                            base[:, start + n:].expand(b, -1, -1)], dim=1)  # [B, T, d_llm]
        return self.model.hook_inputs_embeds(embeds)

    def from_image_embeds(self, image_embeds: torch.Tensor, output_attentions: bool = False) -> Any:
        """Selected log-probability ``[B]`` from projected image embeddings ``[B, N, d_llm]``."""
        cache = self._prepared()
        # causal LM: tokens after the last counted one cannot change its probability, so cut there
        length = int(cache["target_positions"].max()) + 1
        embeds = self.splice(image_embeds)[:, :length]  # [B, T', d_llm]
        mask = cache["attention_mask"][:, :length].expand(embeds.shape[0], -1)  # [B, T']
        out = self.model.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False,
                             logits_to_keep=cache["predict_positions"], output_attentions=output_attentions)
        logprobs = torch.log_softmax(out.logits.float(), dim=-1)  # [B, K, vocab]
        ids = cache["token_ids"].to(logprobs.device)
        picked = logprobs.gather(-1, ids[None, :, None].expand(embeds.shape[0], -1, 1))[..., 0]  # [B, K]
        total = picked.sum(dim=-1)  # [B]
        return (total, out) if output_attentions else total

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixels [B, 1, S, S]`` → ``[B]``, differentiable (the encoder runs with autograd)."""
        tokens = self.model.encoder.encode_tokens(pixel_values)  # [B, N, d_vision]
        image_embeds = self.model.embed_image(features=tokens)  # [B, N, d_llm]
        return self.from_image_embeds(image_embeds)

    @property
    def target_token_texts(self) -> list[str]:
        """The counted tokens, decoded one by one (for labels in plots)."""
        ids = self._prepared()["token_ids"].tolist()
        return [self.model.tokenizer.decode([i]) for i in ids]


def target_device(target: Any) -> torch.device | None:
    """The device a target computes on: its XrayGPT model's, else its encoder's (or its own)
    parameters'; ``None`` for a plain callable, whose inputs are then left where they are.

    Attribution methods put the pixels there once, so that Captum's scaled copies, baselines and
    noise are made on the model's device (CUDA on a GPU machine) rather than moved at every step.
    """
    model = getattr(target, "model", None)
    if model is not None and isinstance(getattr(model, "device", None), torch.device):
        return model.device
    for module in (getattr(target, "encoder", None), target):
        if isinstance(module, nn.Module):
            param = next(module.parameters(), None)
            if param is not None:
                return param.device
    return None


def _target_ids(model: nn.Module, answer: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and offsets of the training target ``answer + end_sym``, cut at ``max_target_tokens``."""
    ids, offsets = token_spans(model.tokenizer, answer + model.end_sym)
    cut = model.max_target_tokens
    return ids[:cut], offsets[:cut]


def _check_fits(model: nn.Module, prompt: str, answer: str, span: tuple[int, int] | None = None) -> None:
    """Refuse a phrase cut by the answer limit, or prompt + image + answer beyond the LLM's context.

    ``span``: the phrase's characters in ``answer``; every token overlapping them must lie within
    the first ``max_target_tokens`` answer tokens (XrayGPT's ``max_txt_len``, 160).
    """

    _, offsets = token_spans(model.tokenizer, answer + model.end_sym)
    cut = model.max_target_tokens
    if span is not None:
        last = max((i for i, (s, e) in enumerate(offsets) if s < span[1] and e > span[0]), default=-1)
        if last >= cut:
            raise ContextLengthError(
                f"the phrase ends at answer token {last + 1}, but the model reads at most {cut} answer tokens "
                f"(context {model.context_length} tokens); give a shorter phrase")
    text = prompt.replace(IMAGE_PLACEHOLDER, "")
    prompt_tokens = 1 + len(model.tokenizer(text, add_special_tokens=False)["input_ids"]) \
        + int(getattr(model, "num_image_tokens", 0))
    check = getattr(model, "check_context", None)
    if check is not None:
        check(prompt_tokens + min(len(offsets), cut), what="the prompt, image and answer")


def _full_prompt(prompt: str | None) -> str:
    prompt = DEFAULT_INSTRUCTION if prompt is None else prompt
    return prompt if "###" in prompt else xraygpt_prompt(prompt)


def answer_target(model: nn.Module, answer: str, prompt: str | None = None) -> TextTarget:
    """``log P(answer | image, prompt)`` summed over the answer's tokens (not the end symbol).

    ``prompt`` is an instruction (wrapped with the XrayGPT template) or a full prompt string.
    """
    if not answer.strip():
        raise ValueError("answer is empty or only whitespace")
    _check_fits(model, _full_prompt(prompt), answer)
    ids, offsets = _target_ids(model, answer)
    mask = torch.tensor([s < len(answer) for s, _ in offsets], dtype=torch.bool)
    return TextTarget(model, _full_prompt(prompt), answer, mask, description=f"log P(answer) [{int(mask.sum())} tokens]")


def phrase_target(model: nn.Module, phrase: str, answer: str | None = None,
                  prompt: str | None = None) -> TextTarget:
    """``log P(phrase tokens | image, prompt, answer before the phrase)``.

    The phrase is found case-insensitively in ``answer``; every token overlapping its characters
    counts (a byte-level BPE token may carry the leading space). Without ``answer`` the phrase
    itself is the whole answer. Raises ``ValueError`` when the phrase is missing from the answer,
    and ``ContextLengthError`` when it reaches past the 160-token target cut or the whole does not
    fit the LLM's context.
    """
    if not isinstance(phrase, str) or not phrase.strip():
        raise ValueError("phrase is empty or only whitespace")
    phrase = phrase.strip()
    answer = phrase if answer is None else answer
    span = find_phrase(answer, phrase)
    if span is None:
        raise ValueError(f"phrase {phrase!r} does not occur in the answer {answer[:80]!r}")
    _check_fits(model, _full_prompt(prompt), answer, span)
    ids, offsets = _target_ids(model, answer)
    start, end = span
    mask = torch.tensor([s < end and e > start for s, e in offsets], dtype=torch.bool)
    return TextTarget(model, _full_prompt(prompt), answer, mask, phrase=phrase,
                      description=f"log P({phrase!r} | image, prompt, answer so far)")


class ZeroShotTarget(nn.Module):
    """The encoder's zero-shot score for one observation (CLIP Sec. 3.1.4; MedCLIP prompt ensembles).

    ``output="logit"``: ``scale · (cos(img, pos) − cos(img, neg))``; ``"probability"``: its sigmoid,
    i.e. the two-way softmax of ``models.zero_shot.zero_shot_probabilities`` (saturates near 0/1,
    which starves gradients: prefer the logit for attributions).
    """

    def __init__(self, encoder: nn.Module, text_encoder: nn.Module | None = None, observation: str = "",
                 prompts: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
                 scale: float = 100.0, output: str = "logit",
                 class_embeddings: torch.Tensor | None = None) -> None:
        super().__init__()

        if output not in ("logit", "probability"):
            raise ValueError(f"output must be 'logit' or 'probability', got {output!r}")
        if class_embeddings is None:
            if text_encoder is None:
                raise ValueError("give a text_encoder (or precomputed class_embeddings [2, p])")
            table = DEFAULT_PROMPTS if prompts is None else prompts
            if observation not in table:
                raise ValueError(f"no zero-shot prompts for {observation!r}; choose one of {sorted(table)}")
            positive, negative = table[observation]
            was_training = text_encoder.training
            text_encoder.eval()
            class_embeddings = torch.stack([prompt_embedding(text_encoder, positive),
                                            prompt_embedding(text_encoder, negative)])  # [2, p]
            text_encoder.train(was_training)
        if class_embeddings.dim() != 2 or class_embeddings.shape[0] != 2:
            raise ValueError(f"class_embeddings must be [2, p] (positive, negative), got {list(class_embeddings.shape)}")
        self.encoder = encoder
        self.observation = observation
        self.scale = float(scale)
        self.output = output
        self.register_buffer("class_embeddings", class_embeddings.detach().clone())
        self.description = f"zero-shot {output} of {observation or 'observation'}"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embedding = self.encoder(pixel_values).embedding  # [B, p], unit length
        logits = self.scale * embedding @ self.class_embeddings.to(embedding).T  # [B, 2]
        margin = logits[:, 0] - logits[:, 1]  # [B]
        return margin if self.output == "logit" else torch.sigmoid(margin)
