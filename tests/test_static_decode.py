"""Static-cache decoding (models/static_decode.py): the same tokens as Hugging Face ``generate``.

On the CPU the decoder runs the static cache without a CUDA graph; the CUDA tests (skipped
without a GPU) check that the captured graph replays to the same logits as eager steps.
"""
from __future__ import annotations

import pytest
import torch

from xraygpt_lab.models.conversation import xraygpt_prompt
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.llm import tiny_llm, train_tokenizer
from xraygpt_lab.models.static_decode import CACHE_BLOCK, StaticDecoder, decoder_for, greedy_tokens
from xraygpt_lab.models.xraygpt import ChatSession, XrayGPT

REPORTS = ["There is a small left pleural effusion.", "The heart is enlarged.", "Lungs are clear.",
           "No pneumothorax. Moderate cardiomegaly."]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model(device: str = "cpu") -> XrayGPT:
    tok = train_tokenizer(REPORTS * 20 + [xraygpt_prompt("Describe the image.")] * 5, vocab_size=330)
    llm = tiny_llm(tok, seed=3, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   max_position_embeddings=512)
    torch.manual_seed(0)
    enc = VisionEncoder(EncoderConfig(image_size=32, patch_size=8, embed_dim=16, depths=[1, 1],
                                      num_heads=[2, 2], window_size=2, projection_dim=16))
    model = XrayGPT(enc, llm, tok).eval()
    with torch.no_grad():  # a projection with some signal, so that images change the answer
        model.projection.weight.normal_(0, 0.5)
    return model.to(device)


@pytest.fixture(scope="module")
def model() -> XrayGPT:
    return _model()


def pixels(n: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))  # [B, 1, S, S]


def test_static_cache_gives_the_tokens_of_the_dynamic_cache(model):
    for seed in range(4):
        px = pixels(1, seed)
        dynamic = model.describe(pixel_values=px, max_new_tokens=40, static_cache=False)
        static = model.describe(pixel_values=px, max_new_tokens=40, static_cache=True)
        assert static == dynamic


def test_step_logits_match_a_full_forward(model):
    """Every static-cache step gives the logits of re-reading the whole sequence."""
    wrapped = model.prompt_wrap(model.embed_image(pixels(1)), [xraygpt_prompt("Describe the image.")])
    embeds = wrapped.inputs_embeds  # [1, T, d]
    decoder = StaticDecoder(model.llm, max_cache_len=CACHE_BLOCK)
    logits = decoder.prefill(embeds)
    sequence = embeds
    for _ in range(6):
        full = model.llm(inputs_embeds=sequence, use_cache=False).logits[:, -1].float()  # [1, vocab]
        torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-4)
        token = int(logits.argmax(-1))
        sequence = torch.cat([sequence, model.llm.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
        logits = decoder.step(token)
    assert decoder.position == embeds.shape[1] + 6


def test_a_new_prompt_resets_the_cache(model):
    """The decoder is reused between calls (a chat pays the setup once) without leaking the old sequence."""
    px_a, px_b = pixels(1, 1), pixels(1, 2)
    first_b = model.describe(pixel_values=px_b, max_new_tokens=20, static_cache=True)
    model.describe(pixel_values=px_a, max_new_tokens=30, static_cache=True)
    again_b = model.describe(pixel_values=px_b, max_new_tokens=20, static_cache=True)
    assert again_b == first_b
    assert decoder_for(model.llm, 10) is decoder_for(model.llm, 100)  # same block of 256: reused


def test_sampling_penalty_stop_and_streamer(model):
    px = pixels(1, 5)
    kwargs = dict(do_sample=True, temperature=0.8, top_p=0.9, repetition_penalty=1.2, max_new_tokens=15)
    torch.manual_seed(0)
    a = model.describe(pixel_values=px, static_cache=True, **kwargs)
    torch.manual_seed(0)
    b = model.describe(pixel_values=px, static_cache=True, **kwargs)
    assert a == b
    # the stop string ends decoding on the static path too
    stop = model.tokenizer.convert_tokens_to_ids("###")
    bias = torch.zeros(len(model.tokenizer))
    bias[stop] = 1e4
    handle = model.llm.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    try:
        assert model.generate([xraygpt_prompt("x")], pixel_values=px, max_new_tokens=10, static_cache=True) == [""]
    finally:
        handle.remove()
    streamer = _Collect()
    text = model.describe(pixel_values=px, max_new_tokens=12, streamer=streamer, static_cache=True)
    assert streamer.ended and streamer.ids
    assert model.clean_answer(model.tokenizer.decode(streamer.ids)) == text[0]


class _Collect:
    """A streamer that keeps the token ids it is given (the interface of transformers' streamers)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.ids += value.reshape(-1).tolist()

    def end(self) -> None:
        self.ended = True


def test_static_cache_refuses_what_it_cannot_do(model):
    with pytest.raises(ValueError, match="one prompt"):
        model.describe(pixel_values=pixels(2), max_new_tokens=4, static_cache=True)
    with pytest.raises(ValueError, match="num_beams"):
        model.describe(pixel_values=pixels(1), max_new_tokens=4, static_cache=True, num_beams=2)
    with pytest.raises(ValueError, match="context"):
        decoder_for(model.llm, 10_000)
    with pytest.raises(ValueError, match="CUDA"):
        StaticDecoder(model.llm, 64, use_graph=True) if not torch.cuda.is_available() else \
            StaticDecoder(model.llm.cpu(), 64, use_graph=True)


def test_chat_session_on_the_static_path(model):
    session = ChatSession(model, pixels(1, 7), max_new_tokens=12)
    first = session.ask("Describe the image.", static_cache=True)
    second = session.ask("Is there an effusion?", static_cache=True)
    reference = ChatSession(model, pixels(1, 7), max_new_tokens=12)
    assert reference.ask("Describe the image.", static_cache=False).text == first.text
    assert reference.ask("Is there an effusion?", static_cache=False).text == second.text


@CUDA
def test_cuda_graph_replays_the_eager_step():
    """On a GPU the captured step gives the eager step's logits and the dynamic cache's tokens."""
    model = _model("cuda")
    embeds = model.prompt_wrap(model.embed_image(pixels(1)), [xraygpt_prompt("Describe the image.")]).inputs_embeds
    graph, eager = StaticDecoder(model.llm, CACHE_BLOCK), StaticDecoder(model.llm, CACHE_BLOCK, use_graph=False)
    a, b = list(greedy_tokens(graph, embeds, 30)), list(greedy_tokens(eager, embeds, 30))
    assert graph.graph_error is None and graph._graph is not None
    assert a == b
    for seed in range(3):
        px = pixels(1, seed)
        assert model.describe(pixel_values=px, max_new_tokens=40) == \
            model.describe(pixel_values=px, max_new_tokens=40, static_cache=False)
