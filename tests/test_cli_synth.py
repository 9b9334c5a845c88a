"""``xraygpt-lab synth``: writes the dataset; bad arguments give one line and a non-zero exit."""
from __future__ import annotations

import json

import pytest

from xraygpt_lab.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors exit directly
        code = exc.code
    out, err = capsys.readouterr()
    return int(code), out, err


def test_synth_writes_the_xraygpt_layout(tmp_path, capsys):
    out = tmp_path / "world"
    code, stdout, _ = run_cli(["synth", "--n", "3", "--size", "40", "--seed", "2", "--out", str(out),
                               "--quiet", "--workers", "1"], capsys)
    assert code == 0 and "wrote 3 images" in stdout
    caps = json.loads((out / "filter_cap.json").read_text())["annotations"]
    assert len(caps) == 3 and all((out / "image" / f"{a['image_id']}.png").exists() for a in caps)
    assert (out / "labels.csv").exists() and (out / "reports.jsonl").exists()


def test_default_size_is_the_tiny_profile(tmp_path, capsys):
    from PIL import Image

    from xraygpt_lab.config import TINY

    code, _, _ = run_cli(["synth", "--n", "1", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    with Image.open(next((tmp_path / "image").glob("*.png"))) as im:
        assert im.size == (TINY.image_size, TINY.image_size)


@pytest.mark.parametrize("args, fragment", [
    (["--n", "0"], "--n"),
    (["--n", "abc"], "--n"),
    (["--n", "2", "--size", "8"], "--size"),
    (["--n", "2", "--seed", "-1"], "--seed"),
    (["--n", "2", "--normal-fraction", "1.5"], "--normal-fraction"),
    (["--n", "2", "--lung-shapes", "mine"], "--lung-shapes"),
    (["--n", "2", "--finding-geometry", "mine"], "--finding-geometry"),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(tmp_path, capsys, args, fragment):
    code, _, err = run_cli(["synth", *args, "--out", str(tmp_path / "o")], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xraygpt-lab") and fragment in lines[0]
    assert not (tmp_path / "o" / "filter_cap.json").exists()


def test_unwritable_out_gives_one_line_and_nonzero_exit(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(["synth", "--n", "2", "--out", str(blocker / "sub"), "--quiet"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xraygpt-lab: error:") and "cannot write" in lines[0]


def test_missing_out_is_an_error(capsys):
    code, _, err = run_cli(["synth", "--n", "2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_real_finding_geometry_without_the_tables_still_exports_with_built_in_geometry(tmp_path, capsys, monkeypatch):
    from xraygpt_lab.data.synthetic import real_findings

    monkeypatch.setenv("XRAYGPT_LAB_CACHE", str(tmp_path / "cache"))
    real_findings.finding_boxes.cache_clear()
    try:
        with pytest.warns(UserWarning, match="finding geometry: built-in"):
            code, _, _ = run_cli(["synth", "--n", "6", "--size", "64", "--finding-geometry", "real",
                                  "--out", str(tmp_path / "real"), "--quiet", "--workers", "1"], capsys)
        assert code == 0
        code, _, _ = run_cli(["synth", "--n", "6", "--size", "64", "--out", str(tmp_path / "builtin"),
                              "--quiet", "--workers", "1"], capsys)
        assert code == 0
        for name in ("labels.csv", "filter_cap.json"):
            assert (tmp_path / "real" / name).read_bytes() == (tmp_path / "builtin" / name).read_bytes()
    finally:
        real_findings.finding_boxes.cache_clear()
