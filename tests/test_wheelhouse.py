"""``make wheelhouse`` (scripts/make_wheelhouse.sh) never writes into a folder it did not make.

The build itself (about 1 minute with a warm pip cache, 400 MB) and the offline install from it
are checked by ``scripts/check_wheelhouse.sh``, which CI runs after the tests.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_wheelhouse.sh"


def build(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), sys.executable, str(folder)], capture_output=True,
                          text=True, timeout=60)


def test_a_folder_holding_other_files_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = build(folder)
    assert result.returncode == 2 and "refusing" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me"


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    target = tmp_path / "wheelhouse"
    target.write_text("not a folder")
    result = build(target)
    assert result.returncode == 2 and "not a folder" in result.stderr
    assert target.read_text() == "not a folder"
