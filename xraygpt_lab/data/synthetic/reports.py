"""Reports for the synthetic world, written from the ground-truth findings.

Three texts per image (XrayGPT, arXiv 2306.07971, Sec. 3.2):

* a MIMIC-CXR style report with ``FINDINGS:`` and ``IMPRESSION:`` sections that states every
  positive with its side/location/severity and the usual negatives;
* an XrayGPT-style *interactive summary*: findings and impression merged into plain prose
  (the caption the model is trained on);
* a conversation: the 15 alignment instructions plus one yes/no question per observation,
  each answered from the labels.

Every kind of statement has at least three phrasings, chosen by a seeded generator, so the text
is not one template. Positives are stated without hedging ("There is a small left pleural
effusion."), negatives with a plain negation ("No pleural effusion or pneumothorax."), so a
rule-based CheXpert labeler can recover the labels exactly.
"""
from __future__ import annotations

import numpy as np

from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS
from xraygpt_lab.data.text.instructions import ALIGNMENT_INSTRUCTIONS, finding_question
from xraygpt_lab.data.synthetic.lesions import Finding

ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth",
            7: "seventh", 8: "eighth", 9: "ninth", 10: "tenth"}
_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}


class _Writer:
    """Chooses among phrasings with one seeded generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def pick(self, *options: str) -> str:
        return options[int(self.rng.integers(len(options)))]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# ----------------------------------------------------------------------------------------------
# Positive statements: (findings sentence, impression phrase, plain-language gloss)
# ----------------------------------------------------------------------------------------------
def _positive_cardiomegaly(w: _Writer, f: Finding) -> tuple[str, str]:
    """Cardiomegaly: findings sentence and impression phrase."""
    sev, d = f.severity, f.detail
    ctr = d.get("ctr")
    sentence = w.pick(
        f"The heart is {_ADVERB[sev]} enlarged.",
        f"There is {sev} cardiomegaly.",
        f"The cardiac silhouette is {_ADVERB[sev]} enlarged, with a cardiothoracic ratio of {ctr:.2f}.",
    )
    return sentence, f"{_cap(sev)} cardiomegaly."


def _positive_pleural_effusion(w: _Writer, f: Finding) -> tuple[str, str]:
    """Pleural Effusion: findings sentence and impression phrase."""
    side, sev = f.side, f.severity
    extra = {"small": "blunting the {s} costophrenic angle",
             "moderate": "with a meniscus, obscuring the {s} hemidiaphragm",
             "large": "obscuring the {s} hemidiaphragm and the lower {s} hemithorax"}[sev].format(s=side)
    sentence = w.pick(
        f"There is a {sev} {side} pleural effusion, {extra}.",
        f"A {sev} {side} pleural effusion is present.",
        f"{_cap(sev)} {side}-sided pleural effusion, {extra}.",
    )
    return sentence, w.pick(f"{_cap(sev)} {side} pleural effusion.", f"{_cap(sev)} {side}-sided pleural effusion.")


def _positive_pneumothorax(w: _Writer, f: Finding) -> tuple[str, str]:
    """Pneumothorax: findings sentence and impression phrase."""
    side, sev = f.side, f.severity
    where = f"{side} apical" if f.zone == "apical" else side
    sentence = w.pick(
        f"There is a {sev} {where} pneumothorax.",
        f"A {sev} {where} pneumothorax is present, with a visible visceral pleural line and absent lung markings beyond it.",
        f"{_cap(sev)} {where} pneumothorax.",
    )
    return sentence, f"{_cap(sev)} {where} pneumothorax."


def _positive_consolidation(w: _Writer, f: Finding) -> tuple[str, str]:
    """Consolidation: findings sentence and impression phrase."""
    side, d = f.side, f.detail
    lobe = d["lobe"]
    sentence = w.pick(
        f"There is consolidation in the {lobe}.",
        f"Consolidation is present in the {lobe}, with air bronchograms.",
        f"Focal consolidation in the {side} {f.zone} lung zone, in the {lobe}.",
    )
    return sentence, w.pick(f"Consolidation in the {lobe}.", f"{_cap(side)}-sided consolidation in the {lobe}.")


def _positive_lung_lesion(w: _Writer, f: Finding) -> tuple[str, str]:
    """Lung Lesion: findings sentence and impression phrase."""
    side, d = f.side, f.detail
    size_mm, kind = d["size_mm"], d["kind"]
    size = f"{size_mm} mm" if kind == "nodule" else f"{size_mm / 10:.1f} cm"
    where = f"{side} {f.zone} lung"
    sentence = w.pick(
        f"There is a {size} {kind} in the {where}.",
        f"A {size} {kind} is seen in the {where}.",
        f"{_cap(size)} {where} {kind}.",
    )
    return sentence, w.pick(f"{_cap(size)} {where} {kind}.", f"{_cap(where)} {kind}, measuring {size}.")


def _positive_edema(w: _Writer, f: Finding) -> tuple[str, str]:
    """Edema: findings sentence and impression phrase."""
    sev = f.severity
    sentence = w.pick(
        f"There is {sev} bilateral pulmonary edema.",
        f"{_cap(sev)} pulmonary edema with bilateral perihilar haziness.",
        f"Bilateral perihilar haziness and indistinct vessels from {sev} pulmonary edema.",
    )
    return sentence, w.pick(f"{_cap(sev)} pulmonary edema, bilateral and perihilar.",
                            f"{_cap(sev)} bilateral pulmonary edema.")


def _positive_atelectasis(w: _Writer, f: Finding) -> tuple[str, str]:
    """Atelectasis: findings sentence and impression phrase."""
    side, sev = f.side, f.severity
    kind = "plate-like" if sev == "mild" else "basilar"
    sentence = w.pick(
        f"{_cap(sev)} {side} basilar atelectasis.",
        f"There is {kind} atelectasis at the {side} lung base.",
        f"{_cap(sev)} atelectasis is seen at the {side} base.",
    )
    return sentence, f"{_cap(sev)} {side} basilar atelectasis."


def _positive_support_devices(w: _Writer, f: Finding) -> tuple[str, str]:
    """Support Devices: findings sentence and impression phrase."""
    d = f.detail
    parts, imp = [], []
    for dev in d["devices"]:
        if dev == "endotracheal tube":
            cm = d["ett_tip_cm"]
            parts.append(w.pick(f"Endotracheal tube terminates {cm} cm above the carina.",
                                f"An endotracheal tube is in place with its tip {cm} cm above the carina.",
                                f"The endotracheal tube tip lies {cm} cm above the carina."))
            imp.append("endotracheal tube in standard position")
        elif dev == "central venous catheter":
            route = d["line_route"]
            parts.append(w.pick(f"{_cap(route)} central venous catheter terminates in the lower SVC.",
                                f"A {route} central venous catheter is present with its tip in the lower superior vena cava.",
                                f"{_cap(route)} central line tip projects over the lower SVC."))
            imp.append(f"{route} central venous catheter in the lower SVC")
        elif dev == "pacemaker":
            parts.append(w.pick("Left chest wall pacemaker with its lead terminating in the right ventricle.",
                                "A left-sided pacemaker is present with the lead in the right ventricle.",
                                "Left pectoral pacemaker generator with a single lead in the right ventricle."))
            imp.append("left-sided pacemaker")
    joined = "; ".join(imp)
    return " ".join(parts), _cap(joined) + "."


def _positive_fracture(w: _Writer, f: Finding) -> tuple[str, str]:
    """Fracture: findings sentence and impression phrase."""
    side, d = f.side, f.detail
    rib = ORDINALS[d["rib"]]
    sentence = w.pick(
        f"There is a displaced fracture of the {side} {rib} posterior rib with an adjacent extrapleural hematoma.",
        f"Acute fracture of the {side} {rib} rib, with a cortical step and an extrapleural hematoma along the lateral chest wall.",
        f"A {side} {rib} rib fracture is seen, with a lenticular extrapleural hematoma laterally.",
    )
    return sentence, f"{_cap(side)} {rib} rib fracture."


#: The wording of each positive observation.
_POSITIVE = {
    "Cardiomegaly": _positive_cardiomegaly,
    "Pleural Effusion": _positive_pleural_effusion,
    "Pneumothorax": _positive_pneumothorax,
    "Consolidation": _positive_consolidation,
    "Lung Lesion": _positive_lung_lesion,
    "Edema": _positive_edema,
    "Atelectasis": _positive_atelectasis,
    "Support Devices": _positive_support_devices,
    "Fracture": _positive_fracture,
}


def _positive(w: _Writer, f: Finding) -> tuple[str, str]:
    """A findings-section sentence and an impression phrase for one positive finding."""
    try:
        wording = _POSITIVE[f.observation]
    except KeyError:
        raise ValueError(f"no report wording for {f.observation!r}") from None
    return wording(w, f)


# Negative statements --------------------------------------------------------------------------
def _neg_pleura(w: _Writer, effusion: bool, ptx: bool) -> str | None:
    if not effusion and not ptx:
        return w.pick("No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax.",
                      "No pleural effusion or pneumothorax is seen.")
    if not effusion:
        return w.pick("No pleural effusion.", "There is no pleural effusion.", "No pleural effusion is seen.")
    if not ptx:
        return w.pick("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen.")
    return None


def _neg_lungs(w: _Writer, present: set[str]) -> str | None:
    airspace = {"Consolidation", "Lung Lesion", "Edema", "Atelectasis"} & present
    if not airspace:
        return w.pick("The lungs are clear without focal consolidation.",
                      "The lungs are clear. No focal consolidation.",
                      "No focal consolidation is seen, and the lungs are well expanded and clear.")
    parts = []
    if "Consolidation" not in present:
        parts.append("focal consolidation")
    if "Edema" not in present:
        parts.append("pulmonary edema")
    if not parts:
        return None
    return w.pick(f"No {' or '.join(parts)}.", f"There is no {' or '.join(parts)}.",
                  f"No {' or '.join(parts)} is seen.")


def _neg_heart(w: _Writer) -> str:
    return w.pick("Heart size is normal.", "The heart is normal in size.", "Normal heart size.")


def _mediastinum(w: _Writer) -> str:
    return w.pick("The mediastinal and hilar contours are normal.", "Mediastinal contours are unremarkable.",
                  "Hilar and mediastinal contours are within normal limits.")


def _neg_bones(w: _Writer) -> str:
    return w.pick("No acute osseous abnormality.", "No displaced rib fracture.",
                  "No acute fracture is seen.")


def _normal_impression(w: _Writer) -> str:
    return w.pick("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
                  "No acute intrathoracic process.")


# ----------------------------------------------------------------------------------------------
# The three texts
# ----------------------------------------------------------------------------------------------
_ORDER = ("Support Devices", "Consolidation", "Lung Lesion", "Edema", "Atelectasis", "Pleural Effusion",
          "Pneumothorax", "Cardiomegaly", "Fracture")
#: Which positive the impression leads with (most urgent first).
_URGENCY = ("Pneumothorax", "Lung Lesion", "Consolidation", "Edema", "Pleural Effusion", "Cardiomegaly",
            "Fracture", "Atelectasis", "Support Devices")


def _sections(w: _Writer, findings: list[Finding]) -> tuple[list[str], list[str], dict[str, str]]:
    by_obs = {f.observation: f for f in findings}
    present = set(by_obs)
    positive = {obs: _positive(w, by_obs[obs]) for obs in _ORDER if obs in present}
    body: list[str] = []
    if "Support Devices" in positive:
        body.append(positive["Support Devices"][0])
    for obs in ("Consolidation", "Lung Lesion", "Edema", "Atelectasis"):
        if obs in positive:
            body.append(positive[obs][0])
    neg = _neg_lungs(w, present)
    if neg:
        body.append(neg)
    for obs in ("Pleural Effusion", "Pneumothorax"):
        if obs in positive:
            body.append(positive[obs][0])
    neg = _neg_pleura(w, "Pleural Effusion" in present, "Pneumothorax" in present)
    if neg:
        body.append(neg)
    body.append(positive["Cardiomegaly"][0] if "Cardiomegaly" in positive else _neg_heart(w))
    body.append(_mediastinum(w))
    body.append(positive["Fracture"][0] if "Fracture" in positive else _neg_bones(w))
    impression = [positive[o][1] for o in _URGENCY if o in positive]
    statements = {o: positive[o][0] for o in positive}
    return body, impression, statements


def write_report(findings: list[Finding], rng: np.random.Generator) -> str:
    """MIMIC-CXR style ``FINDINGS: ...\\n\\nIMPRESSION: ...`` text."""
    return write_texts(findings, rng)[0]


def write_texts(findings: list[Finding], rng: np.random.Generator) -> tuple[str, str, list[dict]]:
    """(report, summary, conversation) for completed findings, all from one generator."""
    w = _Writer(rng)
    body, impression, statements = _sections(w, findings)
    if not impression:
        imp_text = _normal_impression(w)
    elif len(impression) > 1 and w.rng.random() < 0.5:
        imp_text = " ".join(f"{i}. {s}" for i, s in enumerate(impression, 1))
    else:
        imp_text = " ".join(impression)
    report = f"FINDINGS: {' '.join(body)}\n\nIMPRESSION: {imp_text}"
    summary = _summary(w, findings, statements, impression)
    conversation = _conversation(w, findings, body, impression, statements, summary, report)
    return report, summary, conversation


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s[:2] != s[:2].upper() else s


#: The observations a summary always states, positive or negative, and their negative sentences.
_SUMMARY_NEGATIVES: dict[str, tuple[str, ...]] = {
    "Consolidation": ("No focal consolidation.", "There is no focal consolidation.", "No focal consolidation is seen."),
    "Edema": ("No pulmonary edema.", "There is no pulmonary edema.", "No pulmonary edema is seen."),
    "Pleural Effusion": ("No pleural effusion.", "There is no pleural effusion.", "No pleural effusion is seen."),
    "Pneumothorax": ("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen."),
    "Cardiomegaly": ("The heart size is normal.", "The heart is normal in size.", "The cardiac silhouette is normal in size."),
}


def _summary(w: _Writer, findings: list[Finding], statements: dict[str, str], impression: list[str]) -> str:
    """Findings and impression merged into plain prose (XrayGPT's 'interactive summary').

    Every finding is stated once, in the report's order: each present one by its report
    sentence, and each key observation that is absent by its own short negative, at the place
    its positive would take. A normal film ends with a normal impression; an abnormal one does
    not restate its findings. Stating each observation once, where it belongs, is what keeps a
    small LLM consistent: trained on summaries that listed the absent observations in one
    sentence ("No focal consolidation, pleural effusion or pneumothorax") and restated the
    positives at the end ("Overall, the impression is: ..."), the reference LLM contradicted
    itself in 5.5 % of its reports even when given the true findings.
    """
    present = {f.observation for f in findings}
    parts = [] if present else [w.pick("The lungs are clear.", "Both lungs are clear.",
                                       "The lungs are well expanded and clear.")]
    for obs in _ORDER:
        if obs in statements:
            parts.append(statements[obs])
        elif obs in _SUMMARY_NEGATIVES:
            parts.append(w.pick(*_SUMMARY_NEGATIVES[obs]))
    if not impression:
        parts.append(w.pick("Overall, this is a normal chest x-ray with no acute cardiopulmonary process.",
                            "In summary, there is no acute cardiopulmonary abnormality.",
                            "Overall, the chest x-ray is normal."))
    return " ".join(parts)


_MEANING = {
    "Pneumothorax": "air in the pleural space with partial collapse of the lung, which needs prompt attention",
    "Lung Lesion": "a focal lesion that needs further evaluation, for example with CT",
    "Consolidation": "airspace filling, as seen with infection",
    "Edema": "fluid in the lungs, as seen with heart failure or fluid overload",
    "Pleural Effusion": "fluid collecting around the lung",
    "Cardiomegaly": "an enlarged heart, as seen with heart failure or cardiomyopathy",
    "Fracture": "a broken rib, usually from trauma",
    "Atelectasis": "partial collapse of lung tissue at the base",
    "Support Devices": "medical devices in place, whose position should be checked",
}


def _answer_for(obs: str, present: dict[str, Finding], statements: dict[str, str], w: _Writer) -> str:
    if obs == "No Finding":
        if not present:
            return w.pick("Yes. The chest x-ray is normal.", "Yes, there are no acute findings.",
                          "Yes, this chest x-ray is normal.")
        names = ", ".join(o.lower() for o in _URGENCY if o in present)
        return f"No. It shows {names}."
    if obs in present:
        return "Yes. " + statements[obs]
    negatives = {
        "Cardiomegaly": "No. The heart is normal in size.",
        "Pleural Effusion": "No, there is no pleural effusion.",
        "Pneumothorax": "No, there is no pneumothorax.",
        "Consolidation": "No, there is no focal consolidation.",
        "Lung Lesion": "No, there is no lung nodule or mass.",
        "Edema": "No, there is no pulmonary edema.",
        "Atelectasis": "No, there is no atelectasis.",
        "Support Devices": "No, there are no support devices, tubes or lines.",
        "Fracture": "No, there is no rib fracture.",
    }
    return negatives[obs]


def _conversation(w: _Writer, findings: list[Finding], body: list[str], impression: list[str],
                  statements: dict[str, str], summary: str, report: str) -> list[dict]:
    present = {f.observation: f for f in findings}
    imp = " ".join(impression) if impression else "No acute cardiopulmonary process."
    lead = next((o for o in _URGENCY if o in present), None)
    heart = statements.get("Cardiomegaly", "The heart is normal in size and shape.")
    lungs = [statements[o] for o in ("Consolidation", "Lung Lesion", "Edema", "Atelectasis", "Pleural Effusion",
                                     "Pneumothorax") if o in statements] or ["The lungs are clear."]
    infection = (statements["Consolidation"] + " Consolidation like this is often caused by infection."
                 if "Consolidation" in present else "No, there is no focal consolidation to suggest infection.")
    lesion = (statements["Lung Lesion"] if "Lung Lesion" in present
              else "No, there is no lung nodule or mass, and the hila are not enlarged.")
    if present:
        abnormal = "Abnormal. " + " ".join(statements[o] for o in _URGENCY if o in present)
        prominent = f"{statements[lead]} This indicates {_MEANING[lead]}."
        risks = " ".join(f"{statements[o]} This indicates {_MEANING[o]}." for o in _URGENCY if o in present)
    else:
        abnormal = "Normal. The lungs are clear, the heart is normal in size and there is no pleural abnormality."
        prominent = "Nothing abnormal stands out: the lungs, heart, pleura and bones look normal."
        risks = "This chest x-ray shows no complication or acute risk."
    answers = [
        summary,                                              # describe in detail
        imp,                                                  # key findings
        abnormal,                                             # abnormalities or concerns
        " ".join(lungs) + " " + heart,                        # lungs and heart
        prominent,                                            # most prominent feature
        report.replace("FINDINGS: ", "Findings: ").replace("IMPRESSION: ", "Impression: "),
        heart,                                                # heart size and shape
        abnormal,                                             # normal or abnormal
        infection,                                            # infection or inflammation
        lesion,                                               # lymph nodes or masses
        risks,                                                # complications or risks
        imp,                                                  # summarise as a radiologist
        " ".join(body),                                       # structure by structure
        report,                                               # short radiology report
        f"Impression: {imp}",                                 # referring doctor
    ]
    conv = [{"question": q, "answer": a} for q, a in zip(ALIGNMENT_INSTRUCTIONS, answers)]
    for obs in RENDERED_OBSERVATIONS:
        conv.append({"question": finding_question(obs), "answer": _answer_for(obs, present, statements, w)})
    return conv
