"""Wall time of the whole notebook suite on the tiny profile (goal: <= 8 min, each <= 90 s).

Executes each notebook with nbclient exactly as nbval does (fresh kernel, cwd = notebooks/).
The tiny run is trained beforehand (``ensure_tiny_run``), as `make test` does, so the
figure is the notebooks' own time.
"""
from __future__ import annotations

import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run() -> dict:
    import nbformat
    from nbclient import NotebookClient

    from xraygpt_lab.runs import ensure_tiny_run

    ensure_tiny_run()
    per_notebook = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        per_notebook[path.name] = round(time.perf_counter() - start, 1)
        print(f"  {path.name}: {per_notebook[path.name]} s", flush=True)
    return {"notebooks_s": round(sum(per_notebook.values()), 1), "per_notebook": per_notebook,
            "slowest_s": max(per_notebook.values(), default=0.0)}


if __name__ == "__main__":
    print(run())
