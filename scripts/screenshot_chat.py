"""Screenshot the chat panel as a workshop participant sees it (for tutorials/img/).

Serves the Voilà chat app on the tiny run, opens it in Debian's headless Chromium, loads a
held-out synthetic radiograph with a finding, holds a three-turn conversation, presses Explain on
a phrase of the last answer, and saves the page. ``--view settings`` instead draws a case of the
synthetic world from the Dataset tab (``--seed``), asks one question and opens the generation
settings (``tutorials/img/chat_dataset_settings.png``). Reuses the browser test's server and page
helpers (``tests/test_chat_browser.py``), so what the tutorial shows is what CI checks.

    .venv/bin/python scripts/screenshot_chat.py [--out tutorials/img/chat_panel.png]
        [--observation Pneumothorax] [--phrase pneumothorax]
    .venv/bin/python scripts/screenshot_chat.py --view settings [--seed 106]

Needs ``apt-get install -y chromium`` and the ``playwright`` package (``pip install -e '.[test]'``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

#: The last question names the phrase, so that Explain finds it in the last answer.
QUESTIONS = ("Describe the given chest x-ray image in detail.",
             "What are the key findings in this chest x-ray image?", "Is there a pneumothorax?")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--view", choices=("chat", "settings"), default="chat",
                        help="chat: three turns + Explain; settings: Dataset tab + generation settings")
    parser.add_argument("--out", default=None,
                        help="PNG to write (default tutorials/img/chat_panel.png or chat_dataset_settings.png)")
    parser.add_argument("--seed", type=int, default=106, help="synthetic case drawn in the settings view")
    parser.add_argument("--observation", default="Pneumothorax", help="finding the picked image must have")
    parser.add_argument("--phrase", default="pneumothorax", help="phrase to explain (must be in the last answer)")
    parser.add_argument("--index", type=int, default=0, help="which held-out positive to use")
    args = parser.parse_args(argv)

    from PIL import Image
    from test_chat_browser import ask, chromium_page, chromium_path, load_image_by_path, open_panel, voila_server

    from xraygpt_lab.data.synthetic.export import to_uint8
    from xraygpt_lab.interpret.localization import held_out_positives
    from xraygpt_lab.runs import ensure_tiny_run

    if chromium_path() is None:
        print("Chromium not found at /usr/bin/chromium (apt-get install -y chromium)", file=sys.stderr)
        return 1
    run = ensure_tiny_run()
    if args.out is None:
        name = "chat_panel.png" if args.view == "chat" else "chat_dataset_settings.png"
        args.out = str(ROOT / "tutorials" / "img" / name)
    if args.view == "settings":
        return _settings_view(run, args.seed, Path(args.out))
    case, _ = held_out_positives(args.index + 1, 256, observations=(args.observation,))[args.index]
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / f"held_out_{args.observation.lower().replace(' ', '_')}.png"
        Image.fromarray(to_uint8(case.image)).save(image_path)
        with voila_server(run, Path(tmp) / "voila.log") as url, chromium_page(1180, 1120) as page:
            open_panel(page, url)
            load_image_by_path(page, image_path)
            questions = [q.replace("pneumothorax", args.phrase) if "Is there" in q else q for q in QUESTIONS]
            for question in questions:
                print(f"Patient: {question}\nDoctor:  {ask(page, question)}")
            page.locator(".xg-phrase input").fill(args.phrase)
            page.locator(".xg-explain").click()
            page.wait_for_selector(".xg-notice >> text=Explained", timeout=120_000)
            page.wait_for_timeout(1500)  # the overlay image is drawn after the notice
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
    print(f"truth: {case.summary}\nsaved {args.out}")
    return 0


def _settings_view(run: Path, seed: int, out: Path) -> int:
    """Dataset tab: draw synthetic case ``seed``, ask about it, open the generation settings."""
    from test_chat_browser import ask, chromium_page, open_panel, voila_server

    with tempfile.TemporaryDirectory() as tmp:
        # tall enough for the open settings: Voilà scrolls inside its own container, not the page
        with voila_server(run, Path(tmp) / "voila.log") as url, chromium_page(1180, 1380) as page:
            open_panel(page, url)
            page.locator(".xg-chat-panel .lm-TabBar-tab", has_text="Dataset").click()
            page.locator(".widget-inline-hbox", has_text="seed").locator("input").fill(str(seed))
            page.locator("button", has_text="Draw case").click()
            page.wait_for_selector(f".xg-notice >> text=synthetic case {seed}", timeout=60_000)
            question = "Is there a pleural effusion?"
            print(f"Patient: {question}\nDoctor:  {ask(page, question)}")
            page.get_by_text("Generation settings").click()
            page.wait_for_timeout(1000)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
