"""Synthetic reports agree with the labels: every positive stated with its side, no
contradictions, negatives only in negated sentences, and conversations grounded in labels."""
from __future__ import annotations

import re

import numpy as np
import pytest

from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS
from xraygpt_lab.data.text.instructions import ALIGNMENT_INSTRUCTIONS, finding_question
from xraygpt_lab.data.synthetic.lesions import DRAWABLE, Finding
from xraygpt_lab.data.synthetic.world import WorldConfig, generate_cases, render_case
from xraygpt_lab.data.synthetic.reports import write_texts

KEYWORDS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("cardiomegaly", "heart is mildly enlarged", "heart is moderately enlarged",
                     "heart is severely enlarged", "silhouette is mildly", "silhouette is moderately",
                     "silhouette is severely"),
    "Pleural Effusion": ("pleural effusion",),
    "Pneumothorax": ("pneumothorax",),
    "Consolidation": ("consolidation",),
    "Lung Lesion": ("nodule", " mass"),
    "Edema": ("edema",),
    "Atelectasis": ("atelectasis",),
    "Support Devices": ("tube", "catheter", "pacemaker", "central line"),
    "Fracture": ("fracture",),
}
NEGATION = re.compile(r"\b(no|not|without)\b")


def sentences(text: str) -> list[str]:
    text = text.replace("FINDINGS:", "").replace("IMPRESSION:", "")
    return [s.strip().lower() for s in re.split(r"(?<=[.;])\s+|\n+|\d\.\s", text) if s.strip()]


def check_report_agrees(report: str, findings: list[Finding]) -> None:
    assert report.startswith("FINDINGS: ") and "\n\nIMPRESSION: " in report
    findings_text, impression = report.split("\n\nIMPRESSION: ")
    present = {f.observation: f for f in findings}
    for obs, words in KEYWORDS.items():
        hits = [s for s in sentences(findings_text) + sentences(impression) if any(w in s for w in words)]
        if obs in present:
            f = present[obs]
            positive = [s for s in hits if not NEGATION.search(s)]
            assert positive, f"{obs} positive but not stated: {report}"
            imp_hits = [s for s in sentences(impression) if any(w in s for w in words)]
            assert imp_hits, f"{obs} missing from the impression: {report}"
            if f.side in ("left", "right"):
                assert any(f.side in s for s in positive), f"{obs} stated without side {f.side}: {report}"
                other = "right" if f.side == "left" else "left"
                assert not any(other in s and f.side not in s for s in positive), report
            if f.side == "bilateral":
                assert any("bilateral" in s for s in positive), report
            if f.severity:
                assert any(f.severity in s or f.severity[:-1] in s for s in positive), report
            assert not any(re.search(rf"\bno [^.]*{w.strip()}", s) for s in hits for w in words), \
                f"{obs} both asserted and negated: {report}"
        else:
            for s in hits:
                assert NEGATION.search(s), f"{obs} negative but mentioned without negation: {s!r}"


@pytest.mark.parametrize("observation", DRAWABLE)
@pytest.mark.parametrize("side", ["left", "right", None])
def test_every_positive_is_stated_with_its_side_and_never_contradicted(observation, side):
    f = Finding(observation, side=side) if side in (None,) or observation in (
        "Pleural Effusion", "Pneumothorax", "Consolidation", "Lung Lesion", "Atelectasis", "Fracture") \
        else Finding(observation)
    for seed in range(4):
        case = render_case(seed, 48, findings=[f])
        check_report_agrees(case.report, case.findings)


def test_reports_of_random_cases_agree_with_labels():
    for case in generate_cases(60, 48, seed=3):
        check_report_agrees(case.report, case.findings)
        if case.labels["No Finding"]:
            assert "no acute" in case.report.lower()


def test_normal_report_states_the_usual_negatives():
    case = render_case(0, 48, findings=[])
    text = case.report.lower()
    for phrase in ("pleural effusion", "pneumothorax", "consolidation", "heart"):
        assert phrase in text


def test_at_least_three_phrasings_per_statement():
    reports = {render_case(s, 32, findings=[Finding("Pleural Effusion", side="left", severity="small")]).report
               for s in range(40)}
    effusion = {next(x for x in sentences(r.split("\n\n")[0]) if "pleural effusion" in x) for r in reports}
    assert len(effusion) >= 3
    normals = {render_case(s, 32, findings=[]).report.split("IMPRESSION: ")[1] for s in range(40)}
    assert len(normals) >= 3


def test_no_hedging_on_positives():
    hedges = ("may ", "possibl", "likely", "cannot be excluded", "suggest", "questionable", "probabl")
    cfg = WorldConfig(normal_fraction=0.0)
    for case in generate_cases(40, 32, seed=8, config=cfg):
        text = (case.report + " " + case.summary).lower()
        assert not any(h in text for h in hedges), text


def test_summary_merges_findings_and_impression():
    case = render_case(2, 48, findings=[Finding("Pneumothorax", side="left", severity="large"),
                                        Finding("Cardiomegaly", severity="mild")])
    s = case.summary.lower()
    assert "findings:" not in s and "impression:" not in s
    assert "large left pneumothorax" in s and "cardiomegaly" in s
    assert len(case.summary.split()) < 120  # fits XrayGPT's 160-token target


def test_conversation_has_all_instructions_and_grounded_yes_no_answers():
    case = render_case(4, 48, findings=[Finding("Pleural Effusion", side="right", severity="large")])
    questions = [t["question"] for t in case.conversation]
    assert questions[:15] == list(ALIGNMENT_INSTRUCTIONS)
    answers = {t["question"]: t["answer"] for t in case.conversation}
    for obs in RENDERED_OBSERVATIONS:
        answer = answers[finding_question(obs)]
        assert answer.startswith("Yes" if case.labels[obs] else "No"), (obs, answer)
    assert "right" in answers[finding_question("Pleural Effusion")]
    assert all(t["answer"].strip() for t in case.conversation)


def test_texts_are_deterministic_given_the_generator():
    f = [Finding("Edema", side="bilateral", zone="perihilar", severity="mild", detail={})]
    a = write_texts(f, np.random.default_rng(1))
    b = write_texts(f, np.random.default_rng(1))
    assert a == b
