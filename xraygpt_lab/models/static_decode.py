"""Batch-1 decoding at GPU speed: a static KV cache and one CUDA graph per decode step.

Chat decodes one token at a time. On a GPU each step of a 7B LLaMA launches about 1,500 small
kernels, and Python launching them one by one takes several times longer than the GPU needs to
run them (the step is bound by the host, not by reading the 14 GB of weights). Two kept tools
remove that overhead:

* ``transformers.StaticCache`` keeps keys and values in tensors allocated once, at fixed
  addresses, written in place (``index_copy_`` at the cache's own position counter);
* ``torch.cuda.CUDAGraph`` records one decode step (embedding → 32 layers → logits) once and
  replays it with a single launch; the step's inputs (token id, position) live in fixed buffers
  that are overwritten before each replay.

The prefill (prompt + image tokens) runs eagerly; only the fixed-shape decode step is captured.
On the CPU (or when capture fails) the same static cache is used without a graph, so results are
identical to Hugging Face ``generate`` with its dynamic cache (greedy), which the tests check.
This is the recipe of the Hugging Face "static cache + compile" guide and of gpt-fast
(PyTorch Labs, 2023), done with a captured graph instead of ``torch.compile`` so that there is
no compile wait.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

#: Cache lengths are rounded up to a multiple of this, so one captured graph serves many prompts.
CACHE_BLOCK = 256


def cache_argument(llm: nn.Module) -> str:
    """The forward argument that takes the KV cache: ``cache`` (transformers ≥ 5.2x) or ``past_key_values``."""
    params = inspect.signature(llm.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class StaticDecoder:
    """Greedy or sampled batch-1 decoding of a Hugging Face causal LM with a static KV cache.

    ``logits = decoder.prefill(inputs_embeds)`` (``[1, T, d]`` → ``[1, vocab]``) starts a
    sequence; ``decoder.step(token_id)`` (an int) appends one token and returns the next logits.
    ``use_graph`` (default: on CUDA) captures the step as a CUDA graph on the first call.
    ``max_cache_len`` bounds prompt + generated tokens.
    """

    def __init__(self, llm: nn.Module, max_cache_len: int, use_graph: bool | None = None) -> None:
        from transformers import StaticCache

        self.llm = llm
        self.device = next(llm.parameters()).device
        self.dtype = llm.get_input_embeddings().weight.dtype
        self.max_cache_len = int(max_cache_len)
        self.use_graph = self.device.type == "cuda" if use_graph is None else bool(use_graph)
        if self.use_graph and self.device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.cache = StaticCache(config=llm.config, max_cache_len=self.max_cache_len)
        self._cache_arg = cache_argument(llm)
        self._takes_cache_position = "cache_position" in inspect.signature(llm.forward).parameters
        self.position = 0  # tokens in the cache
        # fixed-address inputs and output of the captured step
        self._ids = torch.zeros(1, 1, dtype=torch.long, device=self.device)  # [1, 1]
        self._pos = torch.zeros(1, 1, dtype=torch.long, device=self.device)  # [1, 1]
        self._logits: torch.Tensor | None = None  # [1, vocab]
        self._graph: torch.cuda.CUDAGraph | None = None
        self.graph_error: str | None = None  # why capture failed, if it did (then steps run eagerly)

    # ------------------------------------------------------------------ one forward
    def _forward(self, ids: torch.Tensor | None, embeds: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {self._cache_arg: self.cache, "use_cache": True, "position_ids": positions}
        if self._takes_cache_position:
            kwargs["cache_position"] = positions[0]
        out = self.llm(input_ids=ids, inputs_embeds=embeds, logits_to_keep=1, **kwargs)
        return out.logits[:, -1, :]  # [1, vocab]

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def prefill(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Reset the cache and read the prompt ``[1, T, d]``; returns the logits of the next token ``[1, vocab]``."""
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[0] != 1:
            raise ValueError(f"the static decoder reads one prompt [1, T, d], got {list(inputs_embeds.shape)}")
        length = inputs_embeds.shape[1]
        if length >= self.max_cache_len:
            raise ValueError(f"prompt of {length} tokens does not fit a cache of {self.max_cache_len}")
        self.cache.reset()  # in place: the captured graph keeps pointing at the same tensors
        positions = torch.arange(length, device=self.device)[None]  # [1, T]
        logits = self._forward(None, inputs_embeds.to(self.device, self.dtype), positions)
        self.position = length
        return logits.float()

    @torch.no_grad()
    def step(self, token_id: int) -> torch.Tensor:
        """Append ``token_id`` at the next position; returns the next token's logits ``[1, vocab]``."""
        if self.position >= self.max_cache_len:
            raise ValueError(f"the cache of {self.max_cache_len} tokens is full")
        self._ids.fill_(int(token_id))
        self._pos.fill_(self.position)
        if self.use_graph and self._graph is None and self.graph_error is None:
            self._capture()
        if self._graph is not None:
            self._graph.replay()
            logits = self._logits
        else:
            logits = self._forward(self._ids, None, self._pos)
        self.position += 1
        return logits.float()

    def _layer_counters(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each cache layer's small position tensors, with a copy to restore after warm-up."""
        saved = []
        for layer in getattr(self.cache, "layers", []):
            for value in vars(layer).values():
                if isinstance(value, torch.Tensor) and value.numel() <= 8:
                    saved.append((value, value.clone()))
        return saved

    def _capture(self) -> None:
        """Record one decode step as a CUDA graph (after warm-up runs on a side stream)."""
        counters = self._layer_counters()
        try:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up: lazy allocations and library handles happen here
                    for tensor, value in counters:
                        tensor.copy_(value)
                    self._forward(self._ids, None, self._pos)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            for tensor, value in counters:  # the warm-up advanced the cache's position: undo it
                tensor.copy_(value)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._logits = self._forward(self._ids, None, self._pos)
            self._graph = graph
        except RuntimeError as exc:  # e.g. an op that syncs with the host: decode eagerly instead
            self.graph_error = str(exc).splitlines()[0]
            self._graph = None
            torch.cuda.synchronize(self.device)
            for tensor, value in counters:
                tensor.copy_(value)


def decoder_for(llm: nn.Module, needed: int, use_graph: bool | None = None) -> StaticDecoder:
    """A :class:`StaticDecoder` for ``llm`` with room for ``needed`` tokens, reused between calls.

    The decoder (cache + captured graph) is kept on the model and rebuilt only when a longer
    sequence is needed, so a chat pays the capture once.
    """
    limit = int(getattr(llm.config, "max_position_embeddings", needed))
    length = min(limit, -(-needed // CACHE_BLOCK) * CACHE_BLOCK)
    if needed > length:
        raise ValueError(f"{needed} tokens exceed the model's context of {limit}")
    current: StaticDecoder | None = getattr(llm, "_xraygpt_static_decoder", None)
    want_graph = (next(llm.parameters()).device.type == "cuda") if use_graph is None else use_graph
    if current is None or current.max_cache_len < length or current.use_graph != want_graph \
            or current.device != next(llm.parameters()).device:
        current = StaticDecoder(llm, length, use_graph=want_graph)
        object.__setattr__(llm, "_xraygpt_static_decoder", current)  # not a submodule: kept out of state_dict
    return current


def greedy_tokens(decoder: StaticDecoder, inputs_embeds: torch.Tensor, max_new_tokens: int) -> Iterator[int]:
    """Greedy token ids, one at a time, from ``inputs_embeds`` ``[1, T, d]`` (for benchmarks)."""
    logits = decoder.prefill(inputs_embeds)
    for i in range(max_new_tokens):
        token = int(logits.argmax(-1))
        yield token
        if i + 1 < max_new_tokens:
            logits = decoder.step(token)
