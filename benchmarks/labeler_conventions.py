"""Benchmark: the labeler against CheXpert's conventions on MIMIC-CXR-style sentences.

The real-report check is notebook 00b (3,955 OpenI reports against their MeSH terms). This one
scores wording that OpenI lacks and MIMIC-CXR uses ("ET tube terminates 4 cm above the carina",
"atelectasis, cannot exclude pneumonia", "hiatal hernia" ruling out "No Finding") with the value
CheXpert's rules give each of the 14 observations (``labeler_conventions_cases.py``). Where MeSH
and CheXpert disagree the labeler follows MeSH (``docs/dev/notes.md``), so full agreement is not
the goal. Run ``python benchmarks/labeler_conventions.py``; prints one line (``--list`` also
prints every disagreement); ``run()`` returns a dict.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _expected(case: dict) -> dict:
    from xraygpt_lab.data.findings import CHEXPERT_OBSERVATIONS

    expected = {name: case["labels"].get(name) for name in CHEXPERT_OBSERVATIONS}
    if "No Finding" not in case["labels"]:
        abnormal = any(v in (1, -1) for name, v in expected.items() if name not in ("No Finding", "Support Devices"))
        expected["No Finding"] = None if abnormal or case["nf"] is False else 1
    return expected


def run(show: bool = False) -> dict:
    """Score every case: how many agree on every observation whose value is not a judgement call."""
    from labeler_conventions_cases import CASES

    from xraygpt_lab.data.text.labeler import label_report

    agree = cells = cells_agree = 0
    for case in CASES:
        expected, got = _expected(case), label_report(case["text"])
        sure = [name for name in expected if name not in case["unsure"]]
        wrong = [name for name in sure if expected[name] != got[name]]
        agree += not wrong
        cells += len(sure)
        cells_agree += len(sure) - len(wrong)
        if show and wrong:
            print({name: (expected[name], got[name]) for name in wrong}, "|", case["text"][:120])
    return {"benchmark": "labeler_conventions", "cases": len(CASES), "cases_agreeing": agree,
            "share_agreeing": round(agree / len(CASES), 3), "cells_agreeing": round(cells_agree / cells, 4)}


if __name__ == "__main__":
    print(json.dumps(run(show="--list" in sys.argv)))
