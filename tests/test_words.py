"""What users read carries no development history and no machine paths.

Notebooks (sources and committed outputs), the README, tutorials, user docs, the package's
docstrings and messages and the reference run's files are read by learners; "session 5", "the
issue asks", "CI retrain" or a developer's absolute path mean nothing to them.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Words about how the toolkit was built, not what it is (case-insensitive).
PROCESS = [r"\bsession \d", r"\bissue #?\d", r"\bthe issue (asks|says|wants)", r"\bCI retrain", r"\bnotebooks' author",
           r"\bhelper agent", r"\bprevious session", r"\bthis session's"]
#: A developer machine's paths.
MACHINE = [r"/work/(main|wt-)", r"/root/", r"/tmp/ci-check", r"/check/work", r"/home/[a-z]+/"]
PATTERN = re.compile("|".join(PROCESS + MACHINE), re.IGNORECASE)


def _user_facing() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "notebooks").glob("*.py")), *sorted((ROOT / "notebooks").glob("*.ipynb")),
             *sorted((ROOT / "tutorials").rglob("*.md")), *sorted((ROOT / "tutorials").rglob("*.py")),
             *sorted(p for p in (ROOT / "docs").glob("*.md")), *sorted((ROOT / "xraygpt_lab").rglob("*.py")),
             *sorted((ROOT / "xraygpt_lab" / "reference").rglob("*.md")), *sorted((ROOT / "xraygpt_lab" / "reference").rglob("*.json"))]
    return [f for f in files if f.is_file()]


def test_the_scan_sees_the_files_users_read() -> None:
    files = {f.relative_to(ROOT).as_posix() for f in _user_facing()}
    assert {"README.md", "notebooks/05_attribution.ipynb", "xraygpt_lab/cli/explain.py"} <= files
    assert PATTERN.search("as the issue asks, retrain") and PATTERN.search("see /work/main/runs")
    assert not PATTERN.search("the chat session keeps the history; an issue tracker")


@pytest.mark.parametrize("path", _user_facing(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_process_words_or_machine_paths(path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    hits = [(text.count("\n", 0, m.start()) + 1, m.group(0)) for m in PATTERN.finditer(text)]
    assert not hits, f"{path.relative_to(ROOT)}: {hits[:5]}"
