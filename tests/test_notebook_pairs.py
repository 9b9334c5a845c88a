"""Each notebook is paired with a jupytext ``py:percent`` source, and the two agree.

Reviews read the ``.py`` file; readers open the ``.ipynb``. After editing either, run
``jupytext --sync notebooks/NN_name.ipynb`` (or ``--to ipynb`` from the source) to re-pair them.
"""
from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _cells(notebook) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in notebook.cells if c.source.strip()]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb files"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_an_identical_py_percent_source(path: Path):
    source = path.with_suffix(".py")
    assert source.exists(), f"{path.name} has no paired {source.name} (jupytext --to py:percent)"
    text = source.read_text()
    assert "format_name: percent" in text, f"{source.name} is not in jupytext py:percent format"
    from_py = jupytext.reads(text, fmt="py:percent")
    from_ipynb = jupytext.read(path)
    assert _cells(from_py) == _cells(from_ipynb), (
        f"{path.name} and {source.name} differ; run: jupytext --sync {path}")
