"""Benchmark: label 4,000 reports with the rule-based CheXpert labeler (target <= 20 s).

Also times one 90 KB text without punctuation (10,000 mentions in one clause; linear since
each mention's cues are read within ``labeler.CUE_WINDOW`` characters; about 3 s on 2 cores).

Goal: "4,000 reports in well under a minute". Uses the 3,955 OpenI reports when
they are cached (``xraygpt-lab data openi-reports``), else synthetic reports. Run
``python benchmarks/labeler_speed.py``; prints one line, ``run()`` returns a dict.
"""
from __future__ import annotations

import json
import os
import time

TARGET_S = 20.0


def _texts(n: int) -> tuple[list[str], str]:
    from xraygpt_lab.data.text.openi_reports import OpenIError, obtain_openi_reports, read_openi_reports

    try:
        reports, _ = read_openi_reports(obtain_openi_reports(allow_download=False))
        texts, source = [r.text for r in reports], "openi"
    except OpenIError:
        from xraygpt_lab.data.synthetic.world import generate_cases

        texts, source = [c.report for c in generate_cases(200, size=32, seed=0)], "synthetic"
    return [texts[i % len(texts)] for i in range(n)], source


def run(n: int = 4000) -> dict:
    """Label ``n`` reports and time it (the text loading is not timed)."""
    from xraygpt_lab.data.text.labeler import label_reports

    texts, source = _texts(n)
    t0 = time.perf_counter()
    label_reports(texts)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()  # 90 KB without punctuation: 10,000 mentions in one "clause"
    label_reports(["effusion " * 10_000])
    long_text = time.perf_counter() - t0
    return {"benchmark": "labeler_speed", "reports": n, "source": source,
            "seconds": round(seconds, 2), "reports_per_s": round(n / seconds, 1),
            "unpunctuated_90kb_s": round(long_text, 2),
            "target_s": TARGET_S, "meets_target": seconds <= TARGET_S,
            "load_avg_1m": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    print(json.dumps(run()))
