"""``ChatPanel``: talk with XrayGPT about a radiograph, in JupyterLab or as a Voilà web page.

The panel rebuilds XrayGPT's Gradio demo (arXiv 2306.07971, Sec. 3.2; MiniGPT-4's ``demo.py``)
with ipywidgets: choose an image (upload, dataset browser, path, or a synthetic case), then a
multi-turn conversation in the ``###Patient: … ###Doctor: …`` template, the answer streamed word
by word, with the demo's sliders (temperature, top-p, max new tokens, beams, repetition penalty),
"New image" and "Reset", and an "Explain" action that draws which pixels raised the last answer
or a phrase from it (:mod:`xraygpt_lab.widgets.explain`). Each image is checked against the run's
training films (:mod:`xraygpt_lab.models.ood`); one unlike them gets a red warning under its
thumbnail and a note in the transcript (:attr:`familiarity` holds the verdict).

Threads: a button click only starts a worker thread and returns, so the kernel keeps serving the
page while the model generates; inside :meth:`ChatPanel.send` a second thread runs ``generate``
and the first turns streamed words into transcript updates. One lock serialises generations,
Explain and image changes.

Safety: every string shown goes through :func:`xraygpt_lab.widgets.html.escape_text`; bad input
(empty question, no image, an unreadable file, a question longer than the context) shows an
inline message in the transcript and the panel keeps working; a run folder missing a file or
holding an unreadable one shows which and why (or raises
:class:`~xraygpt_lab.errors.RunFolderError` with ``strict=True``).

Workshop page (``data_root``, :mod:`xraygpt_lab.widgets.app`): the Path tab and the dataset
browser reach only files inside the data folder the instructor chose when starting the server;
any other path is refused with a message in the panel. Uploads and synthetic cases always work.

Programmatic face (tests, scripted demos, notebook 04): :meth:`set_image`, :meth:`send`,
:meth:`reset`, :meth:`new_image`, :meth:`explain`, and :attr:`transcript` (the ``ipywidgets.HTML``
showing the conversation).
"""
from __future__ import annotations

import os
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..errors import ImageLoadError, PathOutsideError, RunFolderError, XrayGPTLabError, one_line
from .browser import DatasetBrowser
from .explain import PANEL_METHODS, Explanation, explain_answer
from .html import (DOCTOR, ERROR, NOTICE, PATIENT, Entry, render_banner, render_familiarity, render_reference,
                   render_status, render_transcript)
from .offered import OfferedFiles
from .pictures import overlay_png, set_picture, thumbnail_png
from .session import ChatInputError, ChatSession, GenerationSettings

#: Largest upload accepted (bytes); a 16-bit 4,300 x 3,500 DICOM is about 30 MB.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


def load_model(run_dir: str | os.PathLike) -> Any:
    """An ``XrayGPT`` from a trained run folder or ``"reference"`` (``xraygpt_lab.runs.load_run``)."""
    from ..runs import load_run

    return load_run(run_dir)


def image_from_array(array: Any) -> np.ndarray:
    """Validate an in-memory picture and bring it to the contract: float32 ``[H, W]`` in ``[0, 1]``.

    Accepts ``[H, W]`` grey or ``[H, W, 3|4]`` colour (averaged); integers are scaled by their
    type's maximum (uint8 → /255, uint16 → /65535); floats must already lie in ``[0, 1]``.
    Raises :class:`ImageLoadError` with the reason.
    """
    image = np.asarray(array)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = image[..., :3].astype(np.float64).mean(axis=-1).astype(image.dtype)
    if image.ndim != 2 or min(image.shape) < 2:
        raise ImageLoadError(f"image array must be [H, W] (or [H, W, 3]) with H, W >= 2, got shape {list(image.shape)}")
    if image.dtype == np.bool_:
        image = image.astype(np.float32)
    elif np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float64) / float(np.iinfo(image.dtype).max)
    elif not np.issubdtype(image.dtype, np.floating):
        raise ImageLoadError(f"image array has unsupported dtype {image.dtype}")
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise ImageLoadError("image array contains NaN or infinite values")
    low, high = float(image.min()), float(image.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ImageLoadError(f"float image values must lie in [0, 1], got [{low:.3g}, {high:.3g}]")
    return np.clip(image, 0.0, 1.0)


def image_from_bytes(content: bytes, name: str) -> np.ndarray:
    """Decode uploaded file bytes with ``data.images.load_image`` (PNG, JPEG, DICOM …)."""
    from ..data.readers.images import load_image

    if len(content) > MAX_UPLOAD_BYTES:
        raise ImageLoadError(f"{name}: {len(content)} bytes is more than the {MAX_UPLOAD_BYTES} byte upload limit")
    suffix = Path(name).suffix.lower()[:10]
    with tempfile.TemporaryDirectory(prefix="xraygpt-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(content)
        try:
            return load_image(path)
        except ImageLoadError as exc:
            raise ImageLoadError(str(exc).replace(str(path), name)) from None


class ChatPanel:
    """The chat widget. ``ChatPanel(run_dir)``, ``ChatPanel("reference")`` or ``ChatPanel(model)`` (an ``XrayGPT``).

    ``system``: text in front of the first ``###`` (see :class:`~.session.ChatSession`; default:
    the run's ``chat_system``, ``""`` = the training template);
    ``dataset``: a folder to open in the browser tab; ``strict``: raise when the run cannot be
    loaded instead of showing the reason in the panel; ``data_root``: the only folder whose files
    the Path tab and the dataset browser may open (the workshop page; default: any path).

    The panel *holds* its ``ipywidgets.VBox`` (:attr:`widget`) rather than being one, so that its
    ``send`` does not shadow ``Widget.send``; displaying the panel displays that box.
    """

    def __init__(self, run_dir_or_model: Any, *, system: str | None = None, dataset: str | os.PathLike | None = None,
                 settings: GenerationSettings | None = None, strict: bool = False,
                 data_root: str | os.PathLike | None = None) -> None:
        self.offered = OfferedFiles(data_root)
        self.model: Any = None
        self.load_error: str | None = None
        self.run_dir: Path | None = None
        if isinstance(run_dir_or_model, (str, os.PathLike)):
            self.run_dir = Path(run_dir_or_model)
            try:
                self.model = load_model(run_dir_or_model)  # a folder, or "reference"
                self.run_dir = Path(getattr(self.model, "run_dir", None) or self.run_dir)
            except Exception as exc:  # the page stays up and says why (a bad file is a one-line RunFolderError)
                if strict:
                    raise
                reason = str(exc) if isinstance(exc, XrayGPTLabError) else one_line(exc)
                self.load_error = f"Could not load the run folder {self.run_dir}: {reason}"
        else:
            self.model = run_dir_or_model
        if system is None:
            system = str(getattr(self.model, "chat_system", "") or "")
        self.session = ChatSession(self.model, system=system) if self.model is not None else None
        self.entries: list[Entry] = []
        self.reference: str | None = None  # the dataset's report for the current image, if known
        self.familiarity: Any = None  # models.ood.Verdict of the current image (None: no image, or no check)
        self.last_explanation: Explanation | None = None
        self._lock = threading.RLock()  # one generation / explanation / image change at a time
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._last_traceback: str | None = None  # of an unexpected error in a worker, for debugging
        self._build(settings or GenerationSettings(), dataset)
        if self.load_error:
            self._add(Entry(ERROR, self.load_error))
        self._set_enabled(True)

    # ------------------------------------------------------------------ layout
    def _build(self, settings: GenerationSettings, dataset: str | os.PathLike | None) -> None:
        """Create the panel's widgets (image sources, settings, conversation, explain) and lay them out."""
        self.banner = widgets.HTML(render_banner())
        self.info = widgets.HTML(self._info_text())
        self._build_sources(dataset)
        self._build_settings(settings)
        self._build_conversation()
        self._build_explain()
        layout = widgets.Layout
        left = widgets.VBox([self.sources, self.thumbnail, self.image_caption, self.ood_box, self.reference_box,
                             self.new_image_button,
                             self.controls], layout=layout(width="380px", min_width="320px"))
        right = widgets.VBox([
            self.transcript,
            widgets.HBox([self.question, self.send_button, self.stop_button]),
            widgets.HBox([self.reset_button, self.status]),
            widgets.HBox([self.phrase, self.method, self.explain_button]),
            widgets.HBox([self.explanation_image, self.explanation_caption]),
        ], layout=layout(flex="1 1 auto", min_width="360px"))
        self.widget = widgets.VBox([self.banner, self.info, widgets.HBox([left, right])])
        self.widget.add_class("xg-chat-panel")


    def _build_sources(self, dataset: str | os.PathLike | None) -> None:
        """Upload, dataset browser and path box; the thumbnail and the reference report."""
        layout = widgets.Layout
        size = self.session.image_size if self.session is not None else 128
        self.upload = widgets.FileUpload(accept="image/*,.dcm,.dicom", multiple=False,
                                         description="Upload", layout=layout(width="200px"))
        self.upload.observe(self._on_upload, names="value")
        self.path = widgets.Text(placeholder="image path in the workshop data, e.g. image/<id>.png"
                                 if self.offered.restricted else "/path/to/radiograph.png",
                                 layout=layout(width="100%"))
        self.path_button = widgets.Button(description="Load", icon="image", layout=layout(width="80px"))
        self.path.add_class("xg-path")
        self.path_button.add_class("xg-load-path")
        self.path_button.on_click(lambda _: self._in_background(self.set_image, self.path.value))
        self.browser = DatasetBrowser(self._on_browser_choice, folder=dataset, synthetic_size=size,
                                      offered=self.offered)
        self.sources = widgets.Tab(children=[
            widgets.VBox([self.upload, widgets.HTML("<small>PNG, JPEG or DICOM</small>")]),
            self.browser,
            widgets.HBox([self.path, self.path_button]),
        ])
        for i, title in enumerate(("Upload", "Dataset", "Path")):
            self.sources.set_title(i, title)
        self.thumbnail = widgets.Image(format="png", layout=layout(width="192px", height="auto"))
        self.thumbnail.add_class("xg-thumbnail")
        set_picture(self.thumbnail, b"")
        self.image_caption = widgets.HTML("<small>No image yet.</small>")
        self.ood_box = widgets.HTML()  # is the image like the training films (models.ood)
        self.reference_box = widgets.HTML()  # the dataset's own report, to compare with the answers
        self.new_image_button = widgets.Button(description="New image", icon="file-image-o",
                                               tooltip="forget the image and the conversation")
        self.new_image_button.on_click(lambda _: self._in_background(self.new_image))

    def _build_settings(self, settings: GenerationSettings) -> None:
        """The generation sliders of XrayGPT's demo."""
        context = int(self.model.context_length) if self.model is not None else 2048
        style = {"description_width": "110px"}
        self.temperature = widgets.FloatSlider(value=settings.temperature, min=0.0, max=2.0, step=0.05,
                                               description="temperature", style=style,
                                               tooltip="0 = greedy (deterministic)")
        self.top_p = widgets.FloatSlider(value=settings.top_p, min=0.05, max=1.0, step=0.05,
                                         description="top-p", style=style)
        self.max_new_tokens = widgets.IntSlider(value=min(settings.max_new_tokens, context), min=1,
                                                max=max(context // 2, settings.max_new_tokens),
                                                description="max new tokens", style=style)
        self.num_beams = widgets.IntSlider(value=settings.num_beams, min=1, max=5, description="beams",
                                           style=style, tooltip="beam search shows the answer when complete")
        self.repetition_penalty = widgets.FloatSlider(value=settings.repetition_penalty, min=1.0, max=2.0,
                                                      step=0.05, description="repetition pen.", style=style)
        self.controls = widgets.Accordion(children=[widgets.VBox([
            self.temperature, self.top_p, self.max_new_tokens, self.num_beams, self.repetition_penalty,
            widgets.HTML("<small>temperature 0 = greedy decoding; beams &gt; 1 cannot stream.</small>"),
        ])])
        self.controls.set_title(0, "Generation settings")

    def _build_conversation(self) -> None:
        """Transcript, question box and the send / stop / reset buttons."""
        layout = widgets.Layout
        self.transcript = widgets.HTML(render_transcript(self.entries))
        self.question = widgets.Text(placeholder="Ask about the radiograph\u2026",
                                     layout=layout(flex="1 1 auto", width="auto"))
        self.question.add_class("xg-question")
        self.send_button = widgets.Button(description="Send", icon="paper-plane", button_style="primary",
                                          layout=layout(width="90px"))
        self.send_button.add_class("xg-send")
        self.send_button.on_click(self._on_send_clicked)
        self.stop_button = widgets.Button(description="Stop", icon="stop", layout=layout(width="80px"),
                                          disabled=True)
        self.stop_button.on_click(lambda _: self._stop.set())
        self.reset_button = widgets.Button(description="Reset", icon="refresh",
                                           tooltip="clear the conversation, keep the image")
        self.reset_button.add_class("xg-reset")
        self.reset_button.on_click(lambda _: self._in_background(self.reset))
        self.status = widgets.HTML()

    def _build_explain(self) -> None:
        """Phrase box, method menu and the explanation picture."""
        layout = widgets.Layout
        self.phrase = widgets.Text(placeholder="phrase from the last answer (empty = whole answer)",
                                   layout=layout(flex="1 1 auto", width="auto"))
        self.method = widgets.Dropdown(options=list(PANEL_METHODS), value=PANEL_METHODS[0],
                                       layout=layout(width="120px"))
        self.explain_button = widgets.Button(description="Explain", icon="eye", layout=layout(width="100px"))
        self.explain_button.add_class("xg-explain")
        self.phrase.add_class("xg-phrase")
        self.explain_button.on_click(lambda _: self._in_background(self.explain, self.phrase.value or None))
        self.explanation_image = widgets.Image(format="png", layout=layout(width="256px", min_width="256px",
                                                                            height="auto"))
        self.explanation_image.add_class("xg-explanation")
        set_picture(self.explanation_image, b"")
        self.explanation_caption = widgets.HTML()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        """Display as the widget (JupyterLab, Voilà), with a short text form for plain outputs."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:  # ipywidgets' repr would list every child trait (image bytes too)
        return f"ChatPanel(run={str(self.run_dir) if self.run_dir else 'in-memory model'}, turns={len(self.entries)})"

    def _info_text(self) -> str:
        if self.model is None:
            return render_status("No model loaded.", ERROR)
        run = self.run_dir.name if self.offered.restricted and self.run_dir else self.run_dir  # no server paths
        source = f"run {run}" if self.run_dir else "in-memory model"
        return render_status(f"Model: {source} \u00b7 context {self.model.context_length} tokens \u00b7 "
                             f"{self.model.num_image_tokens} image tokens")

    # ------------------------------------------------------------------ transcript helpers
    def _render(self) -> None:
        self.transcript.value = render_transcript(self.entries)

    def _add(self, entry: Entry) -> Entry:
        self.entries.append(entry)
        self._render()
        return entry

    def _say(self, text: str, kind: str = NOTICE, in_transcript: bool = True) -> None:
        """A message for the user: in the status line and (by default) in the transcript."""
        self.status.value = render_status(text, kind)
        if in_transcript:
            self._add(Entry(kind, text))

    def _set_enabled(self, idle: bool) -> None:
        usable = idle and self.model is not None
        for button in (self.send_button, self.reset_button, self.explain_button, self.path_button,
                       self.new_image_button):
            button.disabled = not usable
        self.upload.disabled = not usable
        self.stop_button.disabled = idle

    @property
    def busy(self) -> bool:
        """True while a background action (answer, explanation, image change) runs."""
        return self._worker is not None and self._worker.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background action started by a button; True when none is running."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return not self.busy

    def _in_background(self, action: Any, *args: Any) -> None:
        """Run ``action(*args)`` on a worker thread so the kernel keeps serving the page."""
        if self.busy:
            self._say("Still working on the last request \u2014 please wait (or press Stop).",
                      in_transcript=False)
            return

        def run() -> None:
            try:
                action(*args)
            except Exception as exc:  # never let a worker die silently: show what happened
                self._say(f"Unexpected error: {type(exc).__name__}: {self.offered.hide(str(exc))}", ERROR)
                self._last_traceback = traceback.format_exc()

        self._worker = threading.Thread(target=run, name="xraygpt-chat-panel", daemon=True)
        self._worker.start()

    def _no_model(self) -> bool:
        if self.model is None:
            self._say(self.load_error or "No model loaded.", ERROR)
            return True
        return False

    # ------------------------------------------------------------------ images
    def set_image(self, image: Any, name: str | None = None, reference: str | None = None) -> bool:
        """Use ``image`` (a path, file bytes, or an array) and start a new conversation.

        Returns False (with an inline message, previous image and chat kept) when it cannot be read.
        """
        from ..data.readers.images import load_image

        if self._no_model():
            return False
        with self._lock:
            try:
                if isinstance(image, (str, os.PathLike)):
                    if not str(image).strip():
                        raise ImageLoadError("type the path of an image file first")
                    path = self.offered.resolve(image)
                    array, name = load_image(path), name or path.name
                elif isinstance(image, (bytes, bytearray, memoryview)):
                    array = image_from_bytes(bytes(image), name or "upload")
                    name = name or "upload"
                elif isinstance(image, np.ndarray) or hasattr(image, "__array__"):
                    array, name = image_from_array(image), name or "array"
                else:
                    raise ImageLoadError(f"cannot read an image from a {type(image).__name__}; "
                                         "give a path, file bytes or an [H, W] array")
            except (ImageLoadError, PathOutsideError, OSError, ValueError) as exc:  # OSError, ValueError:
                # a path the system refuses (a name too long, a NUL byte); the data folder stays hidden
                self._say(f"Could not load the image: {self.offered.hide(str(exc))}", ERROR)
                return False
            self.session.set_image(array, name)
            self.reference = reference
            self.entries = []
            self.last_explanation = None
            set_picture(self.explanation_image, b"")
            self.explanation_caption.value = ""
            set_picture(self.thumbnail, thumbnail_png(array))
            height, width = array.shape
            self.image_caption.value = render_status(f"{name} ({width}\u00d7{height} px)")
            self.reference_box.value = render_reference(reference)
            self._check_familiarity(array)
            self._say(f"New image: {name}. Ask a question about it.")
            if self.familiarity is not None and not self.familiarity.in_distribution:
                self._add(Entry(NOTICE, f"Warning: this image is {self.familiarity.warning()}."))
            return True

    def _check_familiarity(self, array: np.ndarray) -> None:
        """Check the current image against the run's training films (``runs.ood_detector``; the first
        image of a run without a calibration calibrates it, about 20 s) and show the verdict."""
        from ..runs import ood_detector

        self.familiarity, self.ood_box.value = None, ""
        try:
            if getattr(self.model, "ood", None) is None and getattr(self.model, "run_dir", None) is not None:
                self._say("Checking the image against the training films (the first image of a run may "
                          "calibrate the check, about 20 s)\u2026", in_transcript=False)
            detector = ood_detector(self.model)
            if detector is None:  # an in-memory model, or the released one: no check
                return
            self.familiarity = detector.check(self.model.encoder, self.session.pixel_values, [array.shape])[0]
        except (XrayGPTLabError, OSError) as exc:
            self._say(f"Could not check whether the image is like the training films: {one_line(exc)}", ERROR)
            return
        self.ood_box.value = render_familiarity(self.familiarity.summary(), not self.familiarity.in_distribution)

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0]
        content, name = bytes(item["content"]), str(item.get("name") or "upload")
        self.upload.value = ()  # so that the same file can be uploaded again
        self._in_background(self.set_image, content, name)

    def _on_browser_choice(self, image: Any, name: str, reference: str | None) -> None:
        self._in_background(self.set_image, image, name, reference)

    def new_image(self) -> None:
        """Forget the image and the conversation; the next question needs a new image."""
        if self._no_model():
            return
        with self._lock:
            self.session.clear_image()
            self.entries, self.reference, self.last_explanation = [], None, None
            set_picture(self.thumbnail, b"")
            set_picture(self.explanation_image, b"")
            self.explanation_caption.value = ""
            self.image_caption.value = "<small>No image yet.</small>"
            self.ood_box.value, self.familiarity = "", None
            self.reference_box.value = ""
            self._say("Choose a new image (upload, dataset or path).")

    def reset(self) -> None:
        """Clear the conversation and the explanation; keep the image."""
        if self._no_model():
            return
        with self._lock:
            self.session.reset()
            self.entries, self.last_explanation = [], None
            set_picture(self.explanation_image, b"")
            self.explanation_caption.value = ""
            self._say("Conversation reset." + (" Same image; ask a new question." if self.session.features is not None
                                               else " Choose an image to start."))

    # ------------------------------------------------------------------ chat
    def settings(self) -> GenerationSettings:
        """The generation settings currently shown by the sliders."""
        return GenerationSettings(temperature=self.temperature.value, top_p=self.top_p.value,
                                  max_new_tokens=self.max_new_tokens.value, num_beams=self.num_beams.value,
                                  repetition_penalty=self.repetition_penalty.value)

    def _on_send_clicked(self, _button: Any = None) -> None:
        text = self.question.value
        if self.busy:
            self._say("Still answering \u2014 please wait (or press Stop).", in_transcript=False)
            return
        self.question.value = ""
        self._in_background(self._send_or_give_back, text)

    def _send_or_give_back(self, text: str) -> None:
        """:meth:`send`; a question it refuses (too long, no image, …) goes back into the box to edit."""
        if not self.send(text) and not self.question.value:
            self.question.value = text

    def _mark_forgotten(self, turns: int) -> None:
        """Grey out the ``turns`` oldest question/answer pairs the model still saw."""
        for entry in self.entries:
            if turns <= 0:
                break
            if entry.forgotten or entry.kind not in (PATIENT, DOCTOR):
                continue
            entry.forgotten = True
            if entry.kind == DOCTOR:
                turns -= 1

    def send(self, text: str) -> str:
        """Ask ``text`` about the current image; returns the whole answer once streaming is done.

        The transcript shows the question at once and the answer growing as words arrive.
        Problems (empty question, no image, too long, a model error) give an inline message
        and return ``""``.
        """
        if self._no_model():
            return ""
        with self._lock:
            self._stop.clear()
            self._set_enabled(False)
            try:
                return self._send(text)
            finally:
                self._set_enabled(True)

    def _send(self, text: str) -> str:
        question = (text or "").strip()
        settings = self.settings()
        try:
            settings.validate()
            _, dropped, _, budget = self.session.plan(question, settings.max_new_tokens)
        except ChatInputError as exc:
            self._say(str(exc), ERROR)
            return ""
        if dropped:
            self._mark_forgotten(dropped)
            self._add(Entry(NOTICE, (
                f"The conversation no longer fits the model's context ({self.model.context_length} "
                f"tokens): the oldest {dropped} turn{'s' if dropped > 1 else ''} "
                f"{'were' if dropped > 1 else 'was'} dropped. The model no longer sees the greyed messages "
                "(the image stays).")))
        self._add(Entry(PATIENT, question))
        answer_entry = self._add(Entry(DOCTOR, "", streaming=True))
        self.status.value = render_status("Answering\u2026" if settings.streams
                                          else "Beam search: the answer appears when it is complete\u2026")

        def on_text(partial: str) -> None:
            answer_entry.text = partial
            self._render()

        try:
            result = self.session.answer(question, settings, on_text=on_text, stop=self._stop)
        except ChatInputError as exc:
            self.entries.remove(answer_entry)
            self._say(str(exc), ERROR)
            return ""
        except Exception as exc:  # the model failed: say so in place of the answer, keep the panel
            self.entries.remove(answer_entry)
            self._say(f"The model failed to answer: {type(exc).__name__}: {exc}", ERROR)
            return ""
        answer_entry.text, answer_entry.streaming = result.text, False
        self._render()
        notes = []
        if result.stopped:
            notes.append("Stopped early.")
        if not result.text:
            notes.append("The model gave an empty answer; try another question or a higher temperature.")
        if budget < settings.max_new_tokens:
            notes.append(f"The answer was limited to {budget} tokens by the model's context.")
        for note in notes:
            self._add(Entry(NOTICE, note))
        self.status.value = render_status(
            f"Answered ({result.prompt_tokens} prompt tokens, {self.session.turns} turn"
            f"{'s' if self.session.turns != 1 else ''} in context).")
        return result.text

    # ------------------------------------------------------------------ explain
    def explain(self, phrase: str | None = None, method: str | None = None) -> Explanation | None:
        """Show which pixels raised the last answer (or ``phrase`` from it); returns the map.

        Gives an inline message and returns None when there is no answer yet or the phrase is
        not in the last answer.
        """
        if self._no_model():
            return None
        method = method or self.method.value
        with self._lock:
            session = self.session
            if session.last_answer is None or session.pixel_values is None:
                self._say("Ask a question first: Explain works on the last answer.", ERROR)
                return None
            if not session.last_answer.strip():
                self._say("The last answer is empty: there is nothing to explain.", ERROR)
                return None
            if phrase is not None and phrase.strip() and phrase.strip().lower() not in session.last_answer.lower():
                self._say(f"\u201c{phrase.strip()}\u201d does not occur in the last answer; "
                          "pick words from it (or leave the box empty for the whole answer).", ERROR)
                return None
            self.status.value = render_status("Explaining\u2026")
            try:
                result = explain_answer(self.model, session.pixel_values, session.last_prompt,
                                        session.last_answer, phrase, method)
            except (ValueError, XrayGPTLabError) as exc:
                self._say(f"Could not explain: {exc}", ERROR)
                return None
            self.last_explanation = result
            set_picture(self.explanation_image, overlay_png(result.model_view, result.heatmap))
            self.explanation_caption.value = render_status(result.caption())
            what = f"\u201c{result.phrase}\u201d" if result.phrase else "the last answer"
            self._say(f"Explained {what} with {result.method}: see the map under the chat.")
            return result
