"""The committed notebooks open in JupyterLab in a real headless Chromium and render without error.

JupyterLab serves a copy of the notebooks (nothing in the repository is touched); each notebook is
opened as a learner opens it, and the test waits until every cell is drawn, then checks that every
figure decoded, no output is a Python error, and the page logged no error. Needs Debian's
``chromium`` and the ``playwright`` package (skipped with the reason otherwise).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_chat_browser import CHROMIUM_ARGS, chromium_path, free_port

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
SERVER_START_S = 90
OPEN_MS = 60_000
TOKEN = "render-test"


def _skip_without_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"playwright is not installed ({exc}); pip install playwright")
    if chromium_path() is None:
        pytest.skip("no Chromium (apt-get install -y chromium, or set $CHROMIUM)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a copy of the notebooks; yields its base URL."""
    _skip_without_browser()
    root = tmp_path_factory.mktemp("lab")
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, root / name)
    settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # draw every cell at once (JupyterLab otherwise defers cells outside the window)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port = free_port()
    log = open(root / "lab.log", "wb")
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
               f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
               "--ServerApp.open_browser=False", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
               "jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:  # containers and CI machines run as root
        command.append("--allow-root")
    env = {"JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
           "HOME": str(root), "JUPYTER_CONFIG_DIR": str(root / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_renders_in_jupyterlab(lab, browser, name) -> None:
    cells = json.loads((ROOT / "notebooks" / name).read_text())["cells"]
    n_images = sum(1 for c in cells for o in c.get("outputs", []) if {"image/png", "image/jpeg"} & set(o.get("data", {})))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    try:
        page.goto(f"{lab}/lab/tree/{name}?token={TOKEN}&reset", timeout=OPEN_MS)
        page.wait_for_function(f"document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length >= {len(cells)}",
                               timeout=OPEN_MS)
        page.wait_for_function(
            f"""() => {{ const imgs = [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output img')];
                  return imgs.length >= {n_images} && imgs.every(i => i.complete); }}""", timeout=OPEN_MS)
        broken = page.evaluate("[...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output img')]"
                               ".filter(i => i.naturalWidth === 0).length")
        tracebacks = page.evaluate("document.querySelectorAll('.jp-NotebookPanel [data-mime-type=\"application/"
                                   "vnd.jupyter.error\"]').length")
        dialogs = page.evaluate("document.querySelectorAll('.jp-Dialog').length")
    finally:
        page.close()
    assert broken == 0, f"{name}: {broken} figures did not decode"
    assert tracebacks == 0, f"{name}: {tracebacks} cells show a Python error"
    assert dialogs == 0, f"{name}: JupyterLab opened a dialog (an error or a prompt)"
    # the server's own messages (kernel start, the workspace) are not the notebook's
    rendering = [e for e in errors if "favicon" not in e and "/api/" not in e and "kernel" not in e.lower()]
    assert not rendering, f"{name}: {rendering[:3]}"
