"""XrayGPT module: the splice, the loss mask, hooks, generation (KV cache, stop, streamer), chat."""
from __future__ import annotations

import threading

import pytest
import torch

from xraygpt_lab.models.conversation import IMAGE_PLACEHOLDER, xraygpt_prompt
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.llm import tiny_llm, train_tokenizer
from xraygpt_lab.models.xraygpt import IGNORE_INDEX, ChatInputError, ChatSession, XrayGPT

REPORTS = ["There is a small left pleural effusion.", "The heart is enlarged.", "Lungs are clear."]


@pytest.fixture(scope="module")
def model() -> XrayGPT:
    tok = train_tokenizer(REPORTS * 20 + [xraygpt_prompt("Describe the image.")] * 5, vocab_size=320)
    llm = tiny_llm(tok, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   max_position_embeddings=128)
    torch.manual_seed(0)
    enc = VisionEncoder(EncoderConfig(image_size=32, patch_size=8, embed_dim=16, depths=[1, 1],
                                      num_heads=[2, 2], window_size=2, projection_dim=16))
    return XrayGPT(enc, llm, tok).eval()


def pixels(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(n))  # [B, 1, S, S]


def test_only_the_projection_is_trainable(model):
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["projection.weight", "projection.bias"]
    assert model.projection.in_features == model.encoder.token_dim
    assert model.projection.out_features == model.llm.config.hidden_size


def test_splice_puts_image_at_the_placeholder_and_masks_labels(model):
    prompts = [xraygpt_prompt("Describe the image."), xraygpt_prompt("Is it normal?")]
    targets = ["Lungs are clear.", "The heart is enlarged."]
    image = model.embed_image(pixel_values=pixels())  # [B, N, d_llm]
    w = model.prompt_wrap(image, prompts, targets)
    n = image.shape[1]
    tok = model.tokenizer
    before = [tok.bos_token_id] + tok("###Patient: <Img>", add_special_tokens=False)["input_ids"]
    assert w.image_positions[0].tolist() == list(range(len(before), len(before) + n))
    for i in range(2):
        pos = w.image_positions[i]
        assert torch.equal(w.inputs_embeds[i, pos], image[i])  # the image sits at the slot
        target_ids = tok(targets[i] + "###", add_special_tokens=False)["input_ids"]
        labels = w.labels[i]
        assert labels[labels != IGNORE_INDEX].tolist() == target_ids  # loss on target + ### only
        first = int((labels != IGNORE_INDEX).nonzero()[0])
        assert (labels[:first] == IGNORE_INDEX).all()  # BOS, prompt and image masked
        assert tok.decode(w.input_ids[i, pos[-1] + 1:first]) == "</Img> " + ("Describe the image." if i == 0 else "Is it normal?") + " ###Doctor: "
    # right padding: shorter row padded at the end, masked out
    shorter = int(w.attention_mask.sum(1).argmin())
    assert w.attention_mask[shorter, -1] == 0 and w.labels[shorter, -1] == IGNORE_INDEX
    assert model.last_image_positions is w.image_positions


def test_left_padding_for_generation_ends_every_prompt_at_the_last_position(model):
    prompts = [xraygpt_prompt("Hi."), xraygpt_prompt("A much longer question about the heart and lungs?")]
    w = model.prompt_wrap(model.embed_image(pixel_values=pixels()), prompts, padding_side="left")
    assert (w.attention_mask[:, -1] == 1).all() and w.attention_mask[0, 0] == 0
    assert w.labels is None


def test_target_is_cut_at_max_target_tokens(model):
    long = " ".join(["The heart is enlarged."] * 100)
    w = model.prompt_wrap(model.embed_image(pixel_values=pixels(1)), [xraygpt_prompt("x")], [long])
    assert int((w.labels != IGNORE_INDEX).sum()) == model.max_target_tokens == 160


def test_bad_prompts_are_rejected(model):
    image = model.embed_image(pixel_values=pixels(1))
    with pytest.raises(ValueError, match="exactly once"):
        model.prompt_wrap(image, ["###Patient: no slot ###Doctor: "])
    with pytest.raises(ValueError, match="no image"):
        model.prompt_wrap(None, [xraygpt_prompt("x")])
    with pytest.raises(ValueError, match="2 prompts but 1 images"):
        model.prompt_wrap(image, [xraygpt_prompt("x")] * 2)
    with pytest.raises(ValueError, match="features must be"):
        model.embed_image(features=torch.randn(1, 4, 3))


def test_loss_is_finite_and_reaches_only_the_projection(model):
    model.train()
    out = model([xraygpt_prompt("Describe.")] * 2, REPORTS[:2], pixel_values=pixels())
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.projection.weight.grad is not None
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("projection"))
    model.zero_grad(set_to_none=True)
    model.eval()


def test_hooks_see_and_can_replace_the_image(model):
    seen = {}
    h1 = model.hook_projection.register_forward_hook(lambda m, i, o: seen.update(proj=o.shape))
    h2 = model.hook_image_features.register_forward_hook(lambda m, i, o: seen.update(feat=o.shape))
    try:
        model.describe(pixel_values=pixels(1), max_new_tokens=2)
    finally:
        h1.remove(), h2.remove()
    n = model.encoder.num_tokens
    assert seen["feat"] == (1, n, model.encoder.token_dim) and seen["proj"] == (1, n, model.llm.config.hidden_size)
    # zeroing the projection through a hook == withholding the image
    h = model.hook_projection.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    try:
        hooked = model.describe(pixel_values=pixels(1), max_new_tokens=8)
    finally:
        h.remove()
    assert hooked == model.describe(pixel_values=pixels(1), max_new_tokens=8, withhold_image=True)


def test_kv_cache_and_no_cache_generate_the_same_tokens(model):
    px = pixels(2)
    with_cache = model.describe(pixel_values=px, max_new_tokens=12, use_cache=True)
    without = model.describe(pixel_values=px, max_new_tokens=12, use_cache=False)
    assert with_cache == without
    with pytest.raises(ValueError, match="num_beams"):
        model.describe(pixel_values=px, max_new_tokens=2, use_cache=False, num_beams=2)


def test_sampling_parameters_and_beams(model):
    px = pixels(1)
    torch.manual_seed(0)
    a = model.describe(pixel_values=px, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=6)
    torch.manual_seed(0)
    b = model.describe(pixel_values=px, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=6)
    assert a == b
    assert len(model.describe(pixel_values=px, num_beams=2, repetition_penalty=1.3, max_new_tokens=4)) == 1
    with pytest.raises(ValueError, match="temperature"):
        model.describe(pixel_values=px, do_sample=True, temperature=0.0)


def test_generation_stops_at_the_end_symbol(model):
    assert model.clean_answer("Lungs are clear.###Patient: more") == "Lungs are clear."
    assert model.clean_answer("<s>Lungs are clear.<pad><pad>") == "Lungs are clear."
    # force the LLM to emit "###" right after one token: the stop string ends generation there
    stop = model.tokenizer.convert_tokens_to_ids("###")
    bias = torch.zeros(len(model.tokenizer))
    bias[stop] = 1e4
    handle = model.llm.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    try:
        out = model.generate([xraygpt_prompt("x")], pixel_values=pixels(1), max_new_tokens=10)
    finally:
        handle.remove()
    assert out == [""]


def test_streamer_receives_the_answer(model):
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(model.tokenizer, skip_prompt=True)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "text", model.describe(pixel_values=pixels(1), max_new_tokens=6, streamer=streamer)))
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    assert streamed.split("###")[0].strip().startswith(result["text"][0][:5])


def test_chat_drops_oldest_turns_when_context_is_full(model):
    session = ChatSession(model, pixels(1), max_new_tokens=10)
    first = session.ask("Describe the image.")
    assert first.dropped_turns == 0 and IMAGE_PLACEHOLDER in session.conversation.get_prompt()
    dropped = 0
    for _ in range(12):
        dropped += session.ask("Is the heart enlarged? Please explain in detail what you see.").dropped_turns
    assert dropped > 0 and session.dropped_turns == dropped
    prompt = session.conversation.get_prompt()
    assert prompt.count(IMAGE_PLACEHOLDER) == 1  # the image survives
    assert session.prompt_tokens(prompt) + 10 <= model.context_length
    session.reset()
    assert session.conversation.messages == [] and session.dropped_turns == 0
    with pytest.raises(ValueError, match="empty"):
        session.ask("  ")


def test_chat_counts_tokens_as_prompt_wrap_reads_them(model):
    session = ChatSession(model, pixels(1), max_new_tokens=8)
    session.ask("Describe the image.")
    session.ask("Is the heart enlarged?")
    prompt = session.plan("Any effusion?").prompt
    wrapped = model.prompt_wrap(model.embed_image(pixels(1)), [prompt])
    assert session.prompt_tokens(prompt) == wrapped.inputs_embeds.shape[1]
    assert session.turns == 2 and session.last_prompt.count(IMAGE_PLACEHOLDER) == 1


def test_chat_lowers_the_answer_budget_and_refuses_what_cannot_fit(model):
    session = ChatSession(model, pixels(1), max_new_tokens=10)
    question = "Is the heart enlarged? " * 6
    turn = session.plan(question, max_new_tokens=model.context_length)  # a budget the context cannot hold
    assert turn.max_new_tokens == model.context_length - turn.prompt_tokens >= 1
    reply = session.ask(question, max_new_tokens=model.context_length)
    assert reply.max_new_tokens == turn.max_new_tokens and reply.prompt_tokens == turn.prompt_tokens
    with pytest.raises(ChatInputError, match="too long"):
        session.ask("word " * 300)
    assert session.turns == 1, "a refused question leaves the history as it was"


def test_chat_history_is_unchanged_when_generation_fails(model, monkeypatch):
    session = ChatSession(model, pixels(1), max_new_tokens=6)
    session.ask("Describe the image.")
    before = session.conversation.get_prompt()

    def broken(*args, **kwargs):
        raise RuntimeError("simulated")

    monkeypatch.setattr(model, "generate", broken)
    with pytest.raises(RuntimeError):
        session.ask("Is it normal?")
    monkeypatch.undo()
    assert session.conversation.get_prompt() == before and session.turns == 1
    session.ask("Is it normal?")
    assert session.turns == 2, "the session keeps working"


def test_chat_encodes_the_image_once_and_answers_as_generate(model):
    session = ChatSession(model, pixels(1), max_new_tokens=8)
    assert session.features is not None and session.features.shape[1] == model.num_image_tokens
    reply = session.ask("Describe the image.")
    assert reply.text == model.generate([xraygpt_prompt("Describe the image.")], pixel_values=pixels(1),
                                        max_new_tokens=8)[0]
    text_only = ChatSession(model, max_new_tokens=8)
    text_only.ask("Describe the image.")
    assert IMAGE_PLACEHOLDER not in text_only.last_prompt
    session.reset(pixels(2)[:1])
    assert session.turns == 0 and torch.equal(session.pixel_values, pixels(2)[:1])
