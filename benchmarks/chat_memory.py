"""Memory of one workshop-page participant: the RSS of one chat kernel, as Voilà starts per tab.

Starts a Jupyter kernel (``jupyter_client``), reads its resident memory (``psutil``) bare, after
running the workshop page's code (``widgets.app.workshop_panel``: the panel and the tiny run
loaded) and after one answer. Each browser tab gets such a kernel with its own model copy, so an
instructor sizes a server as ``participants x per_participant_mib`` plus the server itself.

    python benchmarks/chat_memory.py            # prints JSON; --out FILE writes it too
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CODE = """
from xraygpt_lab.widgets.app import workshop_panel
panel = workshop_panel()
"""
ANSWER = """
record = panel.browser._listed[0]
panel.set_image(record.image_path)
panel.send("Describe the given chest x-ray image in detail.")
"""


def _execute(client, code: str, timeout: float = 600.0) -> None:
    reply = client.execute_interactive(code, timeout=timeout, output_hook=lambda msg: None)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"kernel error: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")


def run() -> dict:
    """RSS (MiB) of one kernel: bare, with the panel and model, after one answer."""
    from jupyter_client import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(ROOT), env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        process = psutil.Process(manager.provisioner.process.pid)

        def rss() -> float:
            return process.memory_info().rss / 2**20

        bare = rss()
        _execute(client, CODE)
        loaded = rss()
        _execute(client, ANSWER)
        answered = rss()
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return {"kernel_bare_mib": round(bare, 1), "kernel_with_panel_mib": round(loaded, 1),
            "per_participant_mib": round(answered, 1), "total_ram_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
