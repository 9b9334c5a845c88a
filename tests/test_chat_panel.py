"""The chat panel driven programmatically: streaming, turns, reset, explain, and every bad input.

A small randomly initialised XrayGPT (4 image tokens, a one-layer LLaMA) keeps each test fast;
its answers are gibberish but real generations, streamed by the real ``TextIteratorStreamer``.
"""
from __future__ import annotations

import io
import json
import threading
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from xraygpt_lab.errors import RunFolderError
from xraygpt_lab.models.conversation import IMAGE_SLOT
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.llm import tiny_llm, train_tokenizer
from xraygpt_lab.models.ood import FILE_NAME, calibrate
from xraygpt_lab.models.xraygpt import XrayGPT
from xraygpt_lab.widgets import ChatInputError, ChatPanel, GenerationSettings
from xraygpt_lab.widgets.html import DOCTOR, Entry, escape_text, render_entry
from xraygpt_lab.widgets.session import Answer

REPORTS = [
    "There is a small left pleural effusion. The heart size is normal.",
    "The heart is enlarged. No pleural effusion or pneumothorax.",
    "Lungs are clear. No acute cardiopulmonary process.",
    "There is a right pneumothorax. No effusion.",
]
XSS = ['<script>alert("x")</script>', "<img src=x onerror=alert(1)>", "a & b 'quoted' \"double\""]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(REPORTS * 10 + ["###Patient: <Img><ImageHere></Img> Describe. ###Doctor: "],
                           vocab_size=320)


def small_model(tokenizer, context: int = 256, seed: int = 1) -> XrayGPT:
    torch.manual_seed(0)
    encoder = VisionEncoder(EncoderConfig(image_size=32, patch_size=8, embed_dim=16, depths=[1, 1],
                                          num_heads=[2, 2], window_size=2, projection_dim=16))
    llm = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, max_position_embeddings=context, seed=seed)
    torch.manual_seed(seed)
    return XrayGPT(encoder, llm, tokenizer)


def write_small_run(folder: Path, tokenizer, context: int = 256) -> Path:
    """A complete run folder (the layout ``runs.load_run`` reads) holding :func:`small_model`."""
    from xraygpt_lab.models.llm import save_llm
    from xraygpt_lab.run_folder import save_weights

    model = small_model(tokenizer, context)
    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(folder / "encoder")
    save_llm(model.llm, tokenizer, folder / "llm")
    save_weights(folder / "projection.safetensors", dict(model.projection.state_dict()))
    (folder / "config.json").write_text(json.dumps({"profile": "tiny", "image_size": 32, "chat_system": ""}))
    calibrate(model.encoder, 3000, 4000, n_fit=30, n_threshold=20).save(folder / FILE_NAME)  # small, not lazily
    return folder


@pytest.fixture()
def panel(tokenizer) -> ChatPanel:
    chat = ChatPanel(small_model(tokenizer))
    chat.max_new_tokens.value = 24
    return chat


def radiograph(seed: int = 0, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size + 8), dtype=np.float32)  # [H, W]


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((image * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Markup(HTMLParser):
    """Collects every tag, attribute and text run of an HTML string."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data):
        self.text.append(data)


def parse(markup: str) -> _Markup:
    parser = _Markup()
    parser.feed(markup)
    return parser


def entries_of(panel: ChatPanel, kind: str) -> list[Entry]:
    return [e for e in panel.entries if e.kind == kind]


# --------------------------------------------------------------------------- streaming and turns
def test_answer_streams_into_the_transcript_before_it_completes(panel):
    assert panel.set_image(radiograph())
    snapshots: list[tuple[bool, str]] = []

    def watch(change):
        doctors = entries_of(panel, DOCTOR)
        if doctors:
            snapshots.append((doctors[-1].streaming, doctors[-1].text))

    panel.transcript.observe(watch, names="value")
    answer = panel.send("Describe the given chest x-ray image in detail.")
    assert answer, "the random model should still produce some text"
    partial = [text for streaming, text in snapshots if streaming and text]
    assert len(partial) >= 2, f"expected several streamed updates, got {snapshots}"
    assert len(set(partial)) >= 2, "the streamed text should grow"
    assert all(len(text) < len(answer) for text in partial[:-1])
    assert answer.startswith(partial[0].split()[0]), (partial[0], answer)
    assert snapshots[-1] == (False, answer), "the last update shows the complete answer"
    assert "xg-streaming" not in panel.transcript.value
    assert escape_text(answer) in panel.transcript.value


def test_send_button_returns_at_once_and_the_answer_arrives_on_a_worker(panel):
    panel.set_image(radiograph())
    release = threading.Event()

    def slow_step(_module, _args):  # each LLM step waits until the test lets it go
        release.wait(timeout=30)

    handle = panel.model.llm.register_forward_pre_hook(slow_step)
    try:
        panel.question.value = "Is there an effusion?"
        panel.send_button.click()  # what the browser's click runs in the kernel
        assert panel.busy, "the click handler must hand the generation to a worker thread"
        assert panel.question.value == "", "the box is cleared for the next question"
        assert panel.send_button.disabled and not panel.stop_button.disabled
        panel.send_button.click()  # a second click while busy only says so
        assert "Still answering" in panel.status.value
    finally:
        release.set()
        handle.remove()
    assert panel.wait(timeout=60)
    assert [e.text for e in entries_of(panel, "patient")] == ["Is there an effusion?"]
    assert entries_of(panel, DOCTOR)[-1].text and not entries_of(panel, DOCTOR)[-1].streaming
    assert not panel.send_button.disabled


def test_three_turns_keep_the_history_and_one_image_slot(panel):
    panel.set_image(radiograph())
    questions = ["Describe the image.", "Is the heart enlarged?", "Any effusion?"]
    answers = [panel.send(q) for q in questions]
    assert panel.session.turns == 3
    prompt = panel.session.last_prompt
    assert prompt.count(IMAGE_SLOT) == 1 and prompt.index(IMAGE_SLOT) < prompt.index(questions[0])
    for question, answer in zip(questions[:2], answers[:2]):
        assert f"###Patient: " in prompt and question in prompt and answer in prompt
    assert prompt.endswith(f"{questions[2]} ###Doctor: ")
    assert [e.text for e in entries_of(panel, "patient")] == questions
    assert [e.text for e in entries_of(panel, DOCTOR)] == answers


def test_reset_keeps_the_image_and_new_image_forgets_it(panel):
    panel.set_image(radiograph())
    panel.send("First question?")
    panel.reset()
    assert panel.session.turns == 0 and panel.session.features is not None
    assert not entries_of(panel, "patient") and "Conversation reset" in panel.transcript.value
    panel.send("Second question?")
    assert "First question?" not in panel.session.last_prompt
    assert panel.session.last_prompt.count(IMAGE_SLOT) == 1
    panel.new_image()
    assert panel.session.features is None and panel.thumbnail.value == b""
    assert panel.thumbnail.layout.display == "none", "no broken-image icon"
    assert panel.send("Third question?") == ""
    assert "choose an image" in panel.transcript.value.lower()


def test_sliders_reach_generate_and_beam_search_answers_whole(panel, monkeypatch):
    panel.set_image(radiograph())
    seen = {}
    original = panel.model.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(panel.model, "generate", spy)
    panel.temperature.value, panel.top_p.value, panel.repetition_penalty.value = 0.7, 0.8, 1.3
    panel.max_new_tokens.value, panel.num_beams.value = 12, 1
    assert panel.send("Describe.")
    assert seen["do_sample"] and seen["temperature"] == pytest.approx(0.7)
    assert seen["top_p"] == pytest.approx(0.8) and seen["repetition_penalty"] == pytest.approx(1.3)
    assert seen["max_new_tokens"] == 12 and seen["streamer"] is not None
    seen.clear()
    panel.temperature.value, panel.num_beams.value = 0.0, 2
    answer = panel.send("Describe again.")
    assert seen["num_beams"] == 2 and not seen["do_sample"] and "streamer" not in seen
    assert answer == entries_of(panel, DOCTOR)[-1].text


def test_generation_settings_reject_values_out_of_range():
    cases = [(dict(temperature=-1), "temperature"), (dict(top_p=0), "top-p"),
             (dict(max_new_tokens=0), "max new tokens"), (dict(num_beams=0), "beams"),
             (dict(repetition_penalty=0), "repetition penalty")]
    for bad, name in cases:
        with pytest.raises(ChatInputError, match=name):
            GenerationSettings(**bad).validate()
    assert GenerationSettings(temperature=0).generate_kwargs()["do_sample"] is False


def test_stop_ends_the_answer_early(panel):
    panel.set_image(radiograph())
    panel.max_new_tokens.value = 60
    original = panel.session.answer

    def answer_and_stop(question, settings, on_text=None, stop=None):
        def stop_after_first_word(text):
            on_text(text)
            stop.set()
        return original(question, settings, on_text=stop_after_first_word, stop=stop)

    panel.session.answer = answer_and_stop
    text = panel.send("Describe.")
    assert "Stopped early" in panel.transcript.value
    assert len(panel.model.tokenizer(text)["input_ids"]) < 60
    assert panel.session.turns == 1, "a stopped answer still counts as the turn"


# --------------------------------------------------------------------------- explain
def test_explain_shows_a_map_for_the_answer_and_for_a_phrase(panel):
    panel.set_image(radiograph())
    answer = panel.send("Describe the given chest x-ray image in detail.")
    assert panel.explanation_image.layout.display == "none"
    whole = panel.explain()
    assert panel.explanation_image.layout.display == ""
    size = panel.session.image_size
    assert whole is not None and whole.heatmap.shape == (size, size)
    assert whole.heatmap.min() >= 0 and whole.heatmap.max() == pytest.approx(1.0)
    assert bytes(panel.explanation_image.value).startswith(b"\x89PNG")
    assert "whole last answer" in panel.explanation_caption.value
    phrase = answer[: max(2, len(answer) // 3)].strip()  # the random model's answer: its first third
    if phrase.upper().lower() == phrase.lower():
        phrase = phrase.upper()  # phrases are found case-insensitively
    part = panel.explain(phrase)
    assert part is not None and part.phrase == phrase
    assert not np.allclose(part.heatmap, whole.heatmap), "a phrase has its own evidence"
    assert escape_text(f"\u201c{phrase}\u201d") in panel.explanation_caption.value


def test_explain_without_an_answer_or_with_a_foreign_phrase_says_so(panel):
    assert panel.explain() is None  # no image, no answer
    panel.set_image(radiograph())
    assert panel.explain() is None
    assert "Ask a question first" in panel.transcript.value
    panel.send("Describe.")
    assert panel.explain("<b>zebra</b>") is None
    assert escape_text("\u201c<b>zebra</b>\u201d does not occur") in panel.transcript.value
    assert panel.explain() is not None, "the panel keeps working"


# --------------------------------------------------------------------------- safety
def test_every_string_in_the_transcript_is_escaped(panel):
    panel.set_image(radiograph(), name=XSS[1], reference=XSS[0])
    for question in XSS:
        panel.send(question)

    def fake_answer(question, settings, on_text=None, stop=None):
        for piece in ("<img", "<img src=x onerror=alert(2)>", "<img src=x onerror=alert(2)> <script>"):
            on_text(piece)
        return Answer(text="<img src=x onerror=alert(2)> <script>bad()</script>")

    panel.session.answer = fake_answer
    panel.send("one more")
    markup = parse(panel.transcript.value)
    assert markup.tags <= {"div", "span", "b", "br"}, markup.tags
    assert markup.attributes <= {"class", "style", "title"}, markup.attributes
    text = "".join(markup.text)
    for question in XSS:
        assert question in text, "shown as text, character for character"
    assert "<img src=x onerror=alert(2)> <script>bad()</script>" in text
    assert XSS[1] in "".join(parse(panel.image_caption.value).text)
    assert "<img" not in panel.image_caption.value
    reference = parse(panel.reference_box.value)
    assert XSS[0] in "".join(reference.text) and reference.tags <= {"div", "b"}


def test_render_entry_escapes_and_rejects_unknown_kinds():
    markup = render_entry(Entry(DOCTOR, "x\"><script>alert(1)</script>\nnext\x07line"))
    assert "<script>" not in markup and "&lt;script&gt;" in markup and "<br>next" in markup
    assert "\x07" not in markup
    with pytest.raises(ValueError, match="unknown transcript entry kind"):
        Entry("<b>", "text")


def test_empty_question_and_no_image_give_inline_messages(panel):
    assert panel.send("hello") == ""
    assert "choose an image" in panel.transcript.value.lower()
    panel.set_image(radiograph())
    assert panel.send("   ") == ""
    assert "type a question" in panel.transcript.value.lower()
    assert not entries_of(panel, "patient"), "nothing is sent for a bad question"
    assert panel.send("Now a real question?"), "and the panel keeps working"


def test_images_that_fail_to_load_keep_the_previous_image(panel, tmp_path):
    first = radiograph(1)
    assert panel.set_image(first, name="first")
    panel.send("Describe.")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is not a PNG")
    cases = [tmp_path / "missing.png", not_an_image, "", b"\x89PNG broken", np.full((8, 8), np.nan),
             np.ones((4, 4)) * 3.0, np.ones(5), object()]
    for bad in cases:
        assert panel.set_image(bad, name="upload.png" if isinstance(bad, bytes) else None) is False
        assert "Could not load the image" in panel.status.value
    text = panel.transcript.value
    assert "missing.png: file does not exist" in text and "notes.png" in text and "upload.png" in text
    assert "[0, 1]" in text and "Traceback" not in text
    assert panel.session.image_name == "first" and np.array_equal(panel.session.image, first)
    assert panel.session.turns == 1
    assert panel.send("Still there?"), "the conversation goes on with the old image"


def test_paths_the_system_refuses_say_so_without_the_data_folder(tokenizer, tmp_path):
    """A name too long for the file system or with a NUL byte is one inline message, and the
    server's own folder is never shown on a page restricted to it."""
    offered = tmp_path / "offered"
    offered.mkdir()
    chat = ChatPanel(small_model(tokenizer), data_root=offered)
    for bad in ("a" * 300 + ".png", "chest.png\x00"):
        assert chat.set_image(bad) is False
        assert "Could not load the image" in chat.status.value, chat.status.value
    assert str(offered) not in chat.transcript.value and "Unexpected error" not in chat.transcript.value


def test_a_refused_question_goes_back_into_the_box(panel):
    panel.set_image(radiograph())
    panel.question.value = "Is there an effusion? " * 600  # longer than the model's context
    panel.send_button.click()
    assert panel.wait(timeout=60)
    assert panel.question.value.startswith("Is there an effusion?"), "the user can shorten it and send again"
    assert not entries_of(panel, DOCTOR)


def test_upload_widget_and_integer_images_are_accepted(panel):
    image = radiograph(2)
    panel.upload.value = ({"name": "chest.png", "type": "image/png", "size": 1,
                           "content": memoryview(png_bytes(image)),
                           "last_modified": datetime.now(timezone.utc)},)
    assert panel.wait(timeout=30)
    assert panel.session.image_name == "chest.png" and bytes(panel.thumbnail.value).startswith(b"\x89PNG")
    np.testing.assert_allclose(panel.session.image, np.round(image * 255 - 0.5 + 0.5) / 255, atol=1 / 255)
    assert panel.set_image((image * 65535).astype(np.uint16), name="sixteen-bit")
    np.testing.assert_allclose(panel.session.image, image, atol=1e-4)
    assert panel.set_image(np.stack([image] * 3, axis=-1), name="rgb")


def test_a_long_conversation_drops_the_oldest_turns_with_a_notice(tokenizer):
    panel = ChatPanel(small_model(tokenizer, context=72))
    panel.max_new_tokens.value = 12
    panel.set_image(radiograph())
    for i in range(6):
        panel.send(f"Question number {i}: is there a pleural effusion?")
    session = panel.session
    assert "no longer fits the model" in panel.transcript.value
    forgotten = [e for e in panel.entries if e.forgotten]
    assert forgotten and forgotten[0].text.startswith("Question number 0"), "the oldest go first"
    assert "xg-forgotten" in panel.transcript.value
    prompt = session.last_prompt
    assert "Question number 0" not in prompt and "Question number 5" in prompt
    assert prompt.count(IMAGE_SLOT) == 1, "the image is never dropped"
    assert session.prompt_tokens(prompt) + 12 <= panel.model.context_length
    assert panel.send("word " * 200) == ""
    assert "too long" in panel.transcript.value


def test_model_errors_are_shown_and_the_panel_recovers(panel, monkeypatch):
    panel.set_image(radiograph())

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(panel.model, "generate", broken)
    assert panel.send("Describe.") == ""
    assert "The model failed to answer: RuntimeError: CUDA out of memory" in panel.transcript.value
    assert not entries_of(panel, DOCTOR) and panel.session.turns == 0
    monkeypatch.undo()
    assert panel.send("Describe.")


# --------------------------------------------------------------------------- run folders, browser
def test_a_run_folder_loads_and_one_missing_a_file_says_which(tokenizer, tmp_path):
    run = write_small_run(tmp_path / "run", tokenizer)
    panel = ChatPanel(run)
    assert panel.load_error is None and panel.session.image_size == 32
    assert str(run) in panel.info.value
    panel.set_image(radiograph())
    assert panel.send("Describe.")
    (run / "projection.safetensors").unlink()
    panel = ChatPanel(run)
    assert panel.model is None and "projection.safetensors" in panel.load_error
    assert panel.send("Describe.") == "" and panel.send_button.disabled
    assert escape_text(panel.load_error) in panel.transcript.value
    assert panel.set_image(radiograph()) is False and panel.explain() is None
    with pytest.raises(RunFolderError, match="projection.safetensors"):
        ChatPanel(run, strict=True)
    assert "does not exist" in ChatPanel(tmp_path / "nowhere").load_error


def test_dataset_browser_and_synthetic_cases_feed_the_panel(panel, tmp_path):
    from xraygpt_lab.data.synthetic.export import export_dataset

    export_dataset(tmp_path / "synth", n=3, size=32, seed=3, progress=False)
    browser = panel.browser
    assert browser.open_folder(tmp_path / "synth") == 3
    assert bytes(browser.preview.value).startswith(b"\x89PNG") and "Reference" in browser.reference.value
    browser.records.value = 1
    browser.use()
    assert panel.wait(timeout=30)
    record = browser._listed[1]
    assert panel.session.image_name == record.image_id and panel.reference == record.summary
    assert browser.open_folder(tmp_path / "nowhere") == 0 and "Could not open" in browser.status.value
    browser.draw(7)
    assert panel.wait(timeout=30)
    assert panel.session.image_name == "synthetic case 7" and panel.session.image.shape == (32, 32)
    assert panel.send("Describe.")


def test_the_panel_displays_as_a_widget_with_a_short_text_form(panel):
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("ChatPanel(") and len(bundle["text/plain"]) < 200
    assert "not for clinical use" in panel.banner.value
