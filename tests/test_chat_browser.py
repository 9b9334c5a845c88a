"""End to end: Voilà serves the chat page, a real headless Chromium asks a question and reads the
streamed answer in the DOM.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python
package (its own browser download is not used). Without them the test is skipped with the reason.
Every wait is bounded, and the server is stopped whatever happens.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from test_chat_panel import tokenizer, write_small_run  # noqa: F401  (fixture + helper)

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "xraygpt_lab" / "widgets" / "chat_app.ipynb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_START_S = 90  # Voilà up and listening
PAGE_READY_MS = 120_000  # kernel started, notebook executed, model loaded, widgets drawn
ANSWER_MS = 90_000


def chromium_path() -> str | None:
    """Debian's Chromium, or ``$CHROMIUM`` when set."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def voila_server(run_dir: Path, log_path: Path, port: int | None = None,
                 data_dir: Path | None = None) -> Iterator[str]:
    """Serve the chat app for ``run_dir``, offering the images in ``data_dir`` (default: the log's
    folder); yields its URL; stops the server on exit."""
    port = port or free_port()
    voila = Path(sys.executable).with_name("voila")
    command = [str(voila)] if voila.is_file() else [sys.executable, "-m", "voila"]
    command += [str(APP), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1", "--theme=light"]
    env = {**os.environ, "XRAYGPT_CHAT_RUN": str(run_dir), "PYTHONUNBUFFERED": "1",
           "XRAYGPT_CHAT_DATASET": str(data_dir or log_path.parent)}
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"voila exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"voila did not listen on port {port} within {SERVER_START_S} s")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # voila and the kernel it started
        except ProcessLookupError:
            pass
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


@contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator["object"]:
    """A Playwright page in Debian's headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


# JavaScript that records the text of the newest answer at every DOM change of the transcript.
WATCH_ANSWERS = """() => {
  window.__answers = [];
  const box = document.querySelector('.xg-transcript').closest('.widget-html');
  new MutationObserver(() => {
    const answers = document.querySelectorAll('.xg-doctor');
    if (!answers.length) return;
    const last = answers[answers.length - 1];
    window.__answers.push({streaming: last.classList.contains('xg-streaming'),
                           text: last.querySelector('.xg-text').innerText});
  }).observe(box, {childList: true, subtree: true, characterData: true});
}"""


def open_panel(page, url: str) -> None:
    """Load the page and wait until the panel is drawn."""
    page.goto(url, timeout=PAGE_READY_MS, wait_until="domcontentloaded")
    page.wait_for_selector(".xg-chat-panel .xg-transcript", timeout=PAGE_READY_MS)


def load_image_by_path(page, path: Path) -> None:
    page.locator(".xg-chat-panel .lm-TabBar-tab", has_text="Path").click()
    page.locator(".xg-path input").fill(str(path))
    page.locator(".xg-load-path").click()
    page.wait_for_selector(f".xg-notice >> text=New image: {path.name}", timeout=ANSWER_MS)


def upload_image(page, path: Path) -> None:
    """Choose ``path`` in the Upload tab's file input, as a user picking a file would."""
    page.locator(".xg-chat-panel .lm-TabBar-tab", has_text="Upload").click()
    with page.expect_file_chooser(timeout=30_000) as chooser:  # the widget's hidden <input type=file>
        page.locator(".xg-chat-panel .widget-upload").click()
    chooser.value.set_files(str(path))
    page.wait_for_selector(f".xg-notice >> text=New image: {path.name}", timeout=ANSWER_MS)


def ask(page, question: str) -> str:
    """Type ``question``, press Send, wait for the complete answer; returns its DOM text."""
    before = page.locator(".xg-doctor").count()
    page.locator(".xg-question input").fill(question)
    page.locator(".xg-send").click()
    page.wait_for_function(
        """(n) => { const a = document.querySelectorAll('.xg-doctor');
                    return a.length > n && !a[a.length - 1].classList.contains('xg-streaming'); }""",
        arg=before, timeout=ANSWER_MS)
    return page.locator(".xg-doctor .xg-text").last.inner_text()


@pytest.fixture(scope="module")
def browser_ready() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        reason = f"playwright is not installed ({exc}); pip install playwright"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    if chromium_path() is None:
        reason = "Chromium not found at /usr/bin/chromium (apt-get install -y chromium)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


def test_voila_page_streams_an_answer_in_headless_chromium(browser_ready, tokenizer, tmp_path):
    from PIL import Image

    run = write_small_run(tmp_path / "run", tokenizer)
    offered = tmp_path / "offered"
    offered.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (48, 40), dtype=np.uint8)
    uploaded, image_path, private = tmp_path / "uploaded.png", offered / "chest.png", tmp_path / "private.png"
    Image.fromarray(image).save(uploaded)
    Image.fromarray(255 - image).save(image_path)
    Image.fromarray(image).save(private)
    question = "Is there an <img src=x onerror=\"document.title='pwned'\"> effusion?"
    with voila_server(run, tmp_path / "voila.log", data_dir=offered) as url, chromium_page() as page:
        open_panel(page, url)
        assert "not for clinical use" in page.locator(".xg-banner").inner_text()
        upload_image(page, uploaded)
        assert page.locator(".xg-thumbnail").get_attribute("src").startswith("blob:")
        page.locator(".xg-chat-panel .lm-TabBar-tab", has_text="Path").click()
        page.locator(".xg-path input").fill(str(private))  # a server file the instructor did not offer
        page.locator(".xg-load-path").click()
        page.wait_for_selector(".xg-error >> text=only the images offered on this page", timeout=ANSWER_MS)
        assert str(offered) not in page.locator(".xg-transcript").inner_text()
        load_image_by_path(page, image_path)
        page.evaluate(WATCH_ANSWERS)
        answer = ask(page, question)
        seen = page.evaluate("window.__answers")
        transcript = page.locator(".xg-transcript")
        assert answer.strip(), "the answer is in the DOM"
        partial = [s["text"] for s in seen if s["streaming"] and s["text"].strip()]
        assert partial, f"no streamed partial answer was drawn before the end: {seen}"
        assert all(len(text) <= len(answer) for text in partial)
        assert seen[-1] == {"streaming": False, "text": answer}
        assert question in transcript.inner_text(), "the question shows as text"
        assert transcript.locator("img").count() == 0 and page.title() != "pwned"
        assert "Traceback" not in page.content()
