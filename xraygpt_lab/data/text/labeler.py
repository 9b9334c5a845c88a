"""A rule-based CheXpert-style labeler: report text -> 14 observations, 1 / 0 / -1 / None.

Follows the three stages of the CheXpert labeler (Irvin et al. 2019, Sec. 3.1), with regular
expressions where CheXpert used NegBio's dependency parses:

1. **Mention extraction**: each observation has a list of phrases (``MENTIONS``), matched sentence
   by sentence. Statements of normality ("heart size is normal") are negative mentions
   (``NORMAL_STATEMENTS``).
2. **Classification** of each mention inside its clause (clauses end at ``;``, "but", "however",
   "although", "which", ", the", "and there"...):
   * a double negative of uncertainty ("cannot be excluded", "not ruled out") -> uncertain (-1),
     for the finding it names ("atelectasis, cannot exclude pneumonia" doubts the pneumonia);
     "not well seen" -> uncertain;
   * a negation cue before it ("no", "without", "free of", "negative for", "resolution of") or
     after it ("is not seen", "has resolved", "removed") -> negative (0);
   * an uncertainty cue before it ("may", "possible", "likely", "suspicious for", "versus") or
     right after it ("is possible", "versus") -> uncertain (-1);
   * otherwise positive (1).

   A negation ends where a verb closes it ("no effusion seen, dense nodule": the nodule is
   positive) and before a new finding told by its size after a comma ("no pneumothorax, small
   left effusion"), though not inside a list ("no consolidation, large effusion, or
   pneumothorax"); a hedge on what a finding is or on its size ("opacity is likely atelectasis",
   "the effusion is likely small") leaves the finding positive; uncertain adjectives ("questionable", "borderline") reach only the words right
   after them; a hedge on a cause ("opacity may be due to scarring") leaves the finding positive.
   Phrases that name something else are dropped (``_not_this_finding``): calcified, bony or
   metallic densities and densities the report attributes to nipples, soft tissue, stents...;
   lesions of a bone; fractured wires, screws or catheters.
3. **Aggregation** per observation: positive if any mention is positive, else uncertain if any
   is uncertain, else negative if any is negative, else None (not mentioned). "No Finding" is 1
   exactly when no observation other than Support Devices is positive or uncertain and the report
   names no other abnormality (``OTHER_ABNORMALITIES``: emphysema, a hernia, a granuloma, a
   degenerative spine...), else None.

When the report has section headings, only FINDINGS and IMPRESSION are read (an INDICATION
such as "eval for pneumonia" is not a finding); otherwise the whole text. Sentences are split
also where one starts in lower case ("no effusion . the heart is enlarged .").
"""
from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from xraygpt_lab.data.findings import CHEXPERT_OBSERVATIONS, NEGATIVE, POSITIVE, UNCERTAIN
from xraygpt_lab.data.text.summary import extract_sections, split_sentences

Labels = dict[str, "int | None"]

_BE = r"(?:is|are|was|were|appears?|remains?|seems?|looks?)"

#: Phrases that mention each observation (lower-case text; CheXpert's observation definitions).
MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"enlarged cardiomediastin\w*",
        r"cardiomediastinal (?:silhouette|contours?|shadow|width)s?[^.;]{0,25}?\b(?:enlarge\w*|"
        r"widen\w*|prominen\w*|increased)",
        r"(?:enlarge\w*|widen\w*|prominen\w*) (?:of )?(?:the )?(?:superior |upper |anterior )?(?:cardio)?mediastin\w*",
        r"mediastin\w* (?:silhouette |contours? |shadow )?" + _BE + r" (?:\w+ ){0,2}?"
        r"(?:enlarged|widened|prominent)",
        r"mediastinal (?:widening|enlargement|prominence|mass)",
    ),
    "Cardiomegaly": (
        r"cardiomegaly",
        r"cardiac (?:enlargement|silhouette enlargement)",
        r"(?:heart|cardiac (?:silhouette|shadow|contour|size)|heart (?:size|silhouette|shadow))\s+"
        r"(?:blank (?:at blank )?(?:" + _BE + r" )?|" + _BE + r" |(?:may|might|could) (?:be|appear) )"
        r"(?:\w+ ){0,3}?(?:enlarged|large|increased|prominent)",
        r"(?:heart|cardiac silhouette)(?: size)? (?:(?:mildly|moderately|markedly|severely|slightly) )?"
        r"enlarged\b",
        r"(?:enlarged|large|prominent) (?:heart|cardiac silhouette|cardiac shadow)",
        r"enlargement of the (?:heart|cardiac silhouette)|heart enlargement",
        r"increase\w* (?:in |of )?(?:the )?(?:(?:heart|cardiac) size|size of the (?:heart|cardiac "
        r"silhouette))",
        r"(?:heart|cardiac) size (?:\w+ ){0,2}?(?:enlarged|increased)",
        r"(?:heart|cardiac)(?: size| silhouette)? (?:\w+ ){0,3}?borderline",
        r"borderline (?:cardiomegaly|heart size|enlarged heart|cardiac (?:size|enlargement))",
    ),
    "Lung Opacity": (
        r"opaci(?:ty|ties|fication|fications|fied)",
        r"infiltrat\w*",
        r"air[- ]?space (?:disease|opacit\w*|process)",
        r"(?<!bone )(?<!bony )(?<!calcified )(?<!tissue )densit(?:y|ies)",
        r"haz(?:e|iness|y)",
        r"ground[- ]glass",
    ),
    "Lung Lesion": (
        r"nodul(?:e|es|ar (?:opacit\w*|densit\w*|lesions?))",
        r"\bmass(?:es)?\b(?! effect)|masslike",
        r"tumou?rs?",
        r"neoplas\w*",
        r"carcinoma",
        r"metasta\w*",
        r"(?<!lytic )(?<!blastic )(?<!bony )(?<!bone )(?<!sclerotic )(?<!osseous )(?<!skin )"
        r"(?<!soft tissue )lesions?\b",
        r"\blump\b",
    ),
    "Edema": (
        r"(?<!tissue )(?<!soft-tissue )edema",
        r"(?:vascular|pulmonary|venous|interstitial) (?:congestion|engorgement)",
        r"congestive heart failure|\bchf\b|heart failure",
        r"fluid overload",
        r"(?:pulmonary )?vascular (?:redistribution|indistinctness|prominence)",
        r"cephalization",
        r"(?:prominen\w*|engorge\w*|indistinct\w*) (?:of )?(?:the )?(?:central )?(?:pulmonary )?"
        r"(?:vascular\w*|vessels|vasculature)",
        r"(?:vascular\w*|vessels|vasculature) (?:are|is) (?:\w+ ){0,2}?(?:prominent|engorged|"
        r"indistinct)",
        r"engorged|(?<!nasal )congestion",
        r"kerley b",
    ),
    "Consolidation": (r"consolidat\w*",),
    "Pneumonia": (r"pneumonia", r"bronchopneumonia", r"pneumonitis",
                  r"(?<!granulomatous )(?<!tuberculous )(?<!tuberculosis )(?<!fungal )infectio\w*"),
    "Atelectasis": (
        r"atelecta\w*",
        r"(?:lung|lobe|lobar|segmental) collapse",
        r"collapse of the (?:\w+ ){0,3}?(?:lung|lobe)",
        r"collapsed (?:lung|lobe)",
        r"(?:lung|lobe) (?:is |has |remains )?(?:\w+ )?collapsed",
    ),
    "Pneumothorax": (r"(?:hydro|hemo|haemo)?pneumothora\w*", r"pleural air\b(?: collection)?",
                     r"(?:apical|pleural) (?:\w+ )?air collection"),
    "Pleural Effusion": (
        r"(?<!pericardial )(?<!joint )effusions?",
        r"pleural fluid",
        r"hydrothorax",
        r"fluid (?:in|within) the (?:\w+ )?(?:pleural space|fissure)",
        r"blunting of the (?:\w+ ){0,3}?costophrenic (?:angles?|sulc\w*)",
        r"blunted (?:\w+ ){0,2}?costophrenic (?:angles?|sulc\w*)",
    ),
    "Pleural Other": (
        r"pleural (?:thickening|scarring|scar|plaques?|calcification\w*|fibrosis|reaction)",
        r"fibrothorax",
        r"(?:apical )?pleural cap(?:ping)?|(?:bi)?apical cap(?:ping|s)?\b",
        r"pleural[- ]parenchymal scarring",
    ),
    "Fracture": (r"fractur\w*", r"\bfx\b"),
    "Support Devices": (
        r"(?:endotracheal|enteric|nasogastric|orogastric|feeding|chest|dobhoff|tracheostomy|"
        r"gastric|mediastinal|pleural|et|ng|og) tubes?",
        r"\btubes?\b",
        r"\b(?:picc|central|venous|swan[- ]ganz|port|dialysis|jugular|subclavian|ij|catheter)"
        r"\b[^.;]{0,20}?\blines?\b",
        r"\b(?:picc|cvc|port-?a-?cath|mediport|porta?cath|ett|dobhoff|iabp|tavr|tavi)\b",
        r"(?:lines and tubes|tubes and lines|(?:support|monitoring|vascular|venous|arterial) lines)\b",
        r"cannulas?\b|(?:introducer|cordis|vascular) sheath|(?:intra-?aortic )?balloon pump|"
        r"endobronchial valves?|loop recorder",
        r"catheters?",
        r"pacemakers?|\bpacer\b|\b(?:a?icd)\b|defibrillator",
        r"(?:pacing|pacer|icd|cardiac|transvenous) (?:leads?|wires?)",
        r"(?:sternotomy|sternal|cerclage|surgical|epicardial|pacing) (?:wires?|sutures?)",
        r"sternotomy",
        r"(?:surgical |vascular |cholecystectomy )?clips?\b",
        r"stents?\b",
        r"(?:prosthetic|mechanical) (?:\w+ )?valves?|valve (?:replacement|prosthesis)",
        r"hardware",
        r"(?:fixation|orthopedic) (?:plates?|screws?|rods?)|\bscrews?\b",
        r"electrodes?|(?:ecg|ekg|monitoring) (?:leads|wires)",
        r"\bdevices?\b",
        r"\bdrains?\b",
        r"arthroplasty|prosthes[ie]s",
        r"\bcoils?\b",
        r"\bfilter\b",
        r"(?:pulse )?generators?|(?:neuro)?stimulators?|\bshunts?\b|tubing|"
        r"(?:bone |suture )anchors?",
        r"tracheostomy|occluder|internal fixation|prosthetic (?:\w+ )?(?:shoulder|hip|knee|joint)",
        r"(?:overlying|external) (?:\w+ ){0,2}?leads\b|leads? terminat\w*",
        r"(?:atrial|ventricular|cardiac|pacer|pacemaker|pacing|distal|monitor) leads?\b",
        r"(?:right|left)(?:[- ]sided)? chest blank",
        r"\btips? (?:in|at|overl\w+|project\w*|terminat\w*|near|within|located|low|high)\b",
        r"with (?:its |the |their )?tips?\b",
    ),
}

#: Statements of normality, read as negative mentions (e.g. "Normal heart size.").
NORMAL_STATEMENTS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"(?:cardio)?mediastinal (?:silhouette|contours?|shadow|width|size)s?(?: and [a-z ]{0,40}?)?"
        r" " + _BE + r" (?:\w+ ){0,3}?(?:normal|unremarkable|within normal limits|not (?:enlarged|"
        r"widened))",
        r"normal(?: appearing| sized?| size)? (?:cardio)?mediastin\w*",
        r"mediastinum (?:" + _BE + r" (?:\w+ ){0,2}?)?(?:normal|unremarkable|within normal limits)",
        r"(?:cardio)?mediastinal and (?:\w+ ){0,2}?(?:silhouettes?|contours?) " + _BE
        + r" (?:\w+ ){0,3}?(?:normal|unremarkable|within normal limits)",
        r"(?:heart|cardiac) and mediastin\w* (?:\w+ ){0,3}?(?:" + _BE
        + r" )?(?:\w+ ){0,2}?(?:normal|unremarkable|within normal limits)",
    ),
    "Cardiomegaly": (
        r"(?:heart|cardiac)(?: size| silhouette| shadow| contours?)?(?: and [a-z ]{0,40}?)? " + _BE
        + r" (?:\w+ ){0,3}?(?:normal|within normal limits|unremarkable|not enlarged|top normal)",
        r"normal(?:[- ]sized?)? (?:heart|cardiac)",
        r"(?:heart|cardiac)(?: size| silhouette| shadow)?(?: " + _BE + r")?"
        r"(?: (?!above|beyond|over|exceed\w*|enlarged|larger|greater)\w+){0,3}? (?:at |within )?"
        r"(?:the )?upper limits? of normal",
        r"(?:heart|cardiac) and mediastin\w* (?:\w+ ){0,3}?(?:normal|unremarkable|within normal limits)",
        r"(?:heart|cardiac) size (?:is )?(?:normal|within normal limits)",
        r"heart (?:size )?(?:and|,) (?:\w+ ){0,4}?(?:are|is) (?:\w+ ){0,2}?(?:normal|within normal "
        r"limits|unremarkable)",
    ),
}

#: Abnormalities outside the 13 observations (CheXpert's "No Finding" mention list: emphysema,
#: hyperinflation, hernias, calcification, granulomas, degenerative spines...): a report naming
#: one (not negated) has no "No Finding", though it adds no observation.
OTHER_ABNORMALITIES: tuple[str, ...] = (
    r"emphysema\w*", r"hyperinflat\w*", r"hyperexpan\w*", r"bullae|bullous", r"\bcopd\b",
    r"obstructive (?:lung|pulmonary|airways?) disease", r"asthma", r"bronchospasm", r"bronchiti\w*",
    r"bronchiolitis", r"airways? disease", r"bronchiectasis", r"(?:hiatal|hiatus|diaphragmatic) hernia|hernia\b",
    r"eventration", r"elevat\w* (?:of )?(?:the )?(?:left |right )?hemidiaphragm|hemidiaphragm (?:is |remains )?elevated",
    r"(?:dextro|levo)?scolio\w*", r"kyphosis|kyphotic", r"degenerat\w*", r"osteopenia|osteopenic",
    r"osteophyt\w*", r"spondylosis", r"arthropathy", r"osteodystrophy", r"calcifi\w*",
    r"atherosclero\w*", r"granulom\w*", r"pneumomediastinum", r"pneumoperitoneum",
    r"(?:peribronchial )?cuffing", r"interstitial (?:markings|pattern|lung disease|disease|opacit\w*)",
    r"reticula\w*", r"contusions?", r"hemorrhage", r"hematoma", r"aspiration", r"volume loss",
    r"deformit(?:y|ies)", r"bullet|shrapnel", r"pulmonary (?:arterial )?hypertension", r"fibrosis|fibrotic",
    r"scar(?:ring|s)?\b",
)

# --------------------------------------------------------------------------- cues

#: Double negatives that express uncertainty: "cannot be excluded", "not ruled out".
_NEGATED_UNCERTAINTY = re.compile(
    r"\b(?:cannot|can ?not|can't|could not|couldn't|not|unable to|difficult to|may not be)\s+"
    r"(?:be\s+)?(?:entirely\s+|completely\s+|definitely\s+|totally\s+|fully\s+)?"
    r"(?:excluded?|ruled? out|rule out|exclude)\b"
)
#: "nearly resolved", "partially removed": the finding is still there, so no negation.
_PARTIAL = (r"(?<!nearly )(?<!almost )(?<!partially )(?<!partly )(?<!incompletely )(?<!largely )"
            r"(?<!mostly )(?<!not )(?<!nearly completely )(?<!almost completely )"
            r"(?<!not completely )(?<!not entirely )")
#: Negation before the mention ("no", "without", "free of", "negative for", "resolution of").
_PRE_NEGATION = re.compile(
    r"\b(?:no(?! (?:significant |interval |appreciable |substantial )?(?:change|increase(?!d)|"
    r"decrease(?!d)))|not|without(?! (?:significant |interval )?change)|absence of|absent|"
    r"free of|negative for|clear of|resolution of|clearing of|" + _PARTIAL
    + r"(?:resolved|removed)|removal of|neither|nor|never|rather than|instead of|ruled out)\b"
)
#: Negation after the mention ("is not seen", "has resolved", "have been removed").
#: A heading answered "none" ("Support devices: none."); the colon ends the clause, so this reads past it.
_HEADING_NONE = re.compile(r"\s*:\s*(?:none|nil|absent|not (?:seen|present|identified))\b")
_POST_NEGATION = re.compile(
    r"^[^.;]{0,30}?\b(?:appears?|is|are|remains?|seems?)\s+(?:\w+\s+)?(?:within (?:the )?"
    r"(?:limits of )?normal|normal\b|unremarkable)"
    r"|^[^.;]{0,30}?\b(?:(?:is|are|was|were|has been|have been)\s+)?(?:not|no longer)\s+"
    r"(?:\w+[\s-]+)?(?:seen|identified|present|visualized|visible|appreciated|demonstrated|evident|"
    r"noted|detected|apparent|enlarged|widened|definitely seen)\b"
    r"|^[^.;]{0,20}?\b(?:absent|" + _PARTIAL + r"(?:resolved|removed)|has cleared|have cleared|"
    r"ruled out|is negative|are negative)\b"
    # a list of findings sharing one verb: "consolidation, atelectasis and blunting have cleared"
    r"|^(?:(?!\b(?:is|are|was|were|persists?|remains?|present|noted|seen|stable|unchanged|"
    r"improved|increased|decreased|with|that)\b)[^.;]){0,90}?\b(?:has|have)\s+(?:since\s+|now\s+|"
    r"completely\s+|all\s+)?(?:been\s+)?(?:resolved|cleared|removed)\b"
)
#: Uncertainty before the mention. The weak cues (recommend, correlate, evaluation, ...) are
#: about the work-up and are ignored before a finding already named ("evaluation of this nodule").
_STRONG_UNCERTAINTY = (
    r"may|maybe|might|could|possible|possibly|possibility|probable|probably|likely|question of|"
    r"suspicious|suspected|suspect|suspicion|concern(?:ing)? for|worrisome for|suggest\w*|"
    r"differential|versus|vs|favou?r(?:s|ed|ing)?|cannot exclude|can't exclude|evaluate for|"
    r"eval for|rule out|r/o|either|atypical for|not excluded|question|exclude|obscur\w*"
)
_WEAK_UNCERTAINTY = (r"correlat\w*|recommend\w*|(?<!limited )evaluation|consider(?!ing)\w*|if|"
                     r"to identify|detect\w*")
_PRE_UNCERTAINTY = re.compile(rf"\b(?:{_STRONG_UNCERTAINTY}|{_WEAK_UNCERTAINTY})\b|\?")
_PRE_STRONG_UNCERTAINTY = re.compile(rf"\b(?:{_STRONG_UNCERTAINTY})\b|\?")
#: "... of this nodule", "these opacities": the finding was already named.
_ALREADY_NAMED = re.compile(r"\b(?:this|these|that|those)\s+(?:[\w-]+\s+){0,2}$")
#: Uncertain adjectives ("questionable", "borderline") qualify only the words right after them:
#: "heart size borderline enlarged, tracheostomy tube ..." leaves the tube certain.
_NEAR_UNCERTAINTY = re.compile(
    r"\b(?:questionable|borderline|equivocal|presumed|presumably|"
    r"(?<!age-)(?<!age )indeterminate(?! age))\b(?P<gap>(?:\s+[\w./-]+){0,8}\s*)$"
)
_SPAN_UNCERTAINTY = re.compile(rf"\b(?:{_STRONG_UNCERTAINTY}|questionable|borderline|equivocal|"
                               r"presumed|presumably)\b")
#: "not well seen", "not clearly visualized": the finding may be there (CheXpert: uncertain).
_NOT_WELL_SEEN = re.compile(r"^[^.;]{0,30}?\bnot (?:well|clearly|optimally|adequately|fully) (?:seen|"
                            r"visuali[sz]ed|evaluated|assessed|demonstrated|characteri[sz]ed)\b")
#: A finding called definite after a hedge on another one ("possible effusion and definite consolidation").
_DEFINITE = re.compile(r"\b(?:and|with|but) (?:a |an )?(?:definite|definitive|certain|obvious|clear)\b")
#: An active double negative followed by a noun phrase doubts that ("cannot exclude a small
#: pericardial effusion"), not the finding before it.
_TAKES_AN_OBJECT = re.compile(r"\s*(?:a|an|any|some|the|superimposed|underlying|associated|concomitant|"
                              r"additional|developing|early|small|mild|moderate|large|trace|minimal)\b")
#: What limits the reading is there: "evaluation ... limited by overlying effusion".
_CAUSE_OF_A_LIMIT = re.compile(r"\b(?:limited|obscured|degraded|hampered) by(?P<cause>\s+(?:[\w-]+\s+){0,4})$")
#: A negation's scope ends at a verb that closes it: in "no effusion seen, dense nodule" or
#: "densities not seen before, healed rib fracture" the later finding is not negated.
_NEGATION_SCOPE_END = re.compile(
    r"\bnot\s+(?:[\w-]+\s+)?(?:seen|identified|visualized|visible|appreciated|demonstrated|"
    r"evident|noted|detected|apparent)\b"
    r"|\b(?:seen|identified|visualized|appreciated|demonstrated|noted|detected)\s*,"
)
_ANY_MENTION_PATTERN = "|".join(rf"\b(?:{pattern})" for patterns in MENTIONS.values() for pattern in patterns)
#: ... and at a comma before a new finding told by its size or course ("no pneumothorax, small left
#: effusion"), unless the clause goes on as a list: "or", "nor", "/", or a further finding without
#: a size of its own ("no consolidation, large effusion, or pneumothorax"; "..., large effusion,
#: pneumothorax").
_SIZE_OR_COURSE = r"(?:small|mild|moderate|large|severe|minimal|trace|tiny|new|persistent|stable|unchanged)"
_NEW_FINDING_AFTER_COMMA = re.compile(r",\s*(?=" + _SIZE_OR_COURSE + r"\b)")
_LIST_GOES_ON = re.compile(r"\b(?:or|nor)\b|/|(?:,|\band\b)\s*(?:(?!" + _SIZE_OR_COURSE + r"\b)[\w-]+\s+){0,2}?(?:"
                           + _ANY_MENTION_PATTERN + ")")
#: Words that describe a finding already named: "the effusion is likely loculated" doubts the
#: loculation, not the effusion.
_DESCRIPTORS = (r"small|large|tiny|trace|minimal|mild|moderate|severe|loculated|subsegmental|"
                r"chronic|acute|old|new|layering|postoperative|post-?surgical|infectious|inflammatory|"
                r"reactive|benign|malignant|residual")
#: What a post-mention cue may not be followed by: "opacity may be due to atelectasis" doubts
#: the cause, not the opacity; "opacity may be atelectasis", "consolidation is likely pneumonia"
#: doubt the second finding (CheXpert: the first stays positive).
_NOT_A_CAUSE = (r"(?!\s+(?:to\s+)?(?:be\s+)?(?:represent\w*|reflect\w*|due|related|secondary|"
                r"compatible|consistent|attributable|caused|the result|a result|from)\b)"
                r"(?!\s+(?:(?:a|an|the|some|partly|partially|in part)\s+)?(?:[\w-]+\s+){0,2}?"
                rf"(?:{_DESCRIPTORS}|{_ANY_MENTION_PATTERN})(?:\b|\s))")
_POST_CUES = (r"(?:possible|possibly|suspected|questioned|questionable|likely|not excluded|"
              r"considered|a consideration|suggested|favou?red|in the differential)\b")
#: Uncertainty after the mention ("is possible", "versus", "effusions suspected").
_POST_UNCERTAINTY = re.compile(
    r"^[^.;]{0,30}?\b(?:is|are|remains?|would be)\s+(?:\w+\s+)?" + _POST_CUES + _NOT_A_CAUSE
    + r"|^\s*,?\s*(?:(?!" + _ANY_MENTION_PATTERN + r")\w+\s+)?" + _POST_CUES
    + r"(?=\s*(?:[.,;:?)]|$|(?:on|in|at|given|though|but|and|clinically|bilaterally)\b))"
    r"|^[^.;,]{0,25}?\b(?:versus|vs|or less likely|cannot be excluded|is not excluded)\b"
    r"|^[^.;,]{0,25}?\b(?:could be|may be|might be)\b" + _NOT_A_CAUSE
    + r"|^[^.;]{0,90}?\b(?:is|are|would be|remains?)\s+(?:also\s+)?(?:a|an|another)\s+(?:\w+\s+)?"
    r"consideration\b"
    r"|^\s*\?"
)
#: Clause boundaries: cues do not cross them.
_CLAUSE_BREAK = re.compile(
    r";|:|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bexcept\b|\baside from\b|\bapart from\b|"
    r"\bother than\b|\bwhich\b|\bwhereas\b|\bwhile\b|\bwith the exception\b|"
    r",\s*(?:the|there|this|these|it|with|and there|and the)\b|"
    r"\band (?:there|the|a|an)\b|\bthere (?:is|are)\b"
)


@dataclass(frozen=True)
class Mention:
    """One matched phrase: the observation, its value and where it was found (for teaching).

    ``clause`` is the lower-case clause the cues were read in (stage 2's clause bounds).
    """

    observation: str
    value: int
    sentence: str
    phrase: str
    clause: str = ""


def _compile(table: dict[str, tuple[str, ...]]) -> dict[str, re.Pattern[str]]:
    """One alternation per observation; every phrase starts at a word boundary."""
    return {name: re.compile("|".join(rf"\b(?:{p})" for p in patterns)) for name, patterns in
            table.items()}


_MENTION_RE = _compile(MENTIONS)
_OTHER_RE = re.compile("|".join(rf"\b(?:{p})" for p in OTHER_ABNORMALITIES))
_CALLED_NORMAL = re.compile(r"\bnormal\s+(?:[\w-]+\s+)?$")
_STATED_NORMAL = re.compile(r"\s+(?:(?:is|are|appear|appears|remain|remains)\s+)?(?:\w+\s+)?(?:normal|within normal "
                            r"limits|unremarkable)\b")
_ANY_MENTION = re.compile(_ANY_MENTION_PATTERN)
_NORMAL_RE = _compile(NORMAL_STATEMENTS)
_SECTIONS_READ = ("FINDINGS", "FINDING", "IMPRESSION", "IMPRESSIONS", "CONCLUSION",
                  "FINDINGS AND IMPRESSION")


def normalize_text(text: str) -> str:
    """Lower-case, de-identification blanks to a neutral word, one space between words."""
    text = re.sub(r"_{2,}|\bX{2,}\b", " blank ", text)
    return re.sub(r"\s+", " ", text).strip().lower()


def reportable_text(report: str) -> str:
    """FINDINGS + IMPRESSION when the report has headings, else the whole text."""
    sections = extract_sections(report)
    chosen = [sections[name] for name in sections if name in _SECTIONS_READ and sections[name]]
    return " \n\n".join(chosen) if chosen else report


#: Cues are read at most this many characters either side of a mention. The longest reach in
#: OpenI's 3,955 reports is 229 characters before a mention and 207 after; the cap keeps a text
#: without punctuation (thousands of words in one "clause") linear instead of quadratic.
CUE_WINDOW = 400


@functools.lru_cache(maxsize=8)
def _break_ends(sentence: str) -> tuple[int, ...]:
    """Where each clause break of ``sentence`` ends, in order (one scan per sentence)."""
    return tuple(match.end() for match in _CLAUSE_BREAK.finditer(sentence))


def _clause_bounds(sentence: str, start: int, end: int) -> tuple[int, int]:
    """The clause around ``sentence[start:end]``: from the last break before to the next after,
    at most :data:`CUE_WINDOW` characters either side (cut at a space, never inside a word)."""
    ends = _break_ends(sentence)
    at = bisect.bisect_right(ends, start) - 1
    left = ends[at] if at >= 0 else 0
    if start - left > CUE_WINDOW:
        cut = sentence.find(" ", start - CUE_WINDOW, start)
        left = cut + 1 if cut >= 0 else start
    limit = min(len(sentence), end + CUE_WINDOW)
    following = _CLAUSE_BREAK.search(sentence, end, limit)
    if following:
        return left, following.start()
    if limit < len(sentence):
        cut = sentence.rfind(" ", end, limit)
        return left, cut if cut >= 0 else end
    return left, len(sentence)


def _clause(sentence: str, start: int, end: int) -> str:
    """The clause text around ``sentence[start:end]`` (see :func:`_clause_bounds`)."""
    left, right = _clause_bounds(sentence, start, end)
    return sentence[left:right].strip()


def _doubted_after(window: str) -> bool:
    """A double negative of uncertainty after a mention doubts it ("pneumonia cannot be excluded"),
    unless it doubts something else: an active one followed by a finding doubts that one
    ("atelectasis, cannot exclude pneumonia"), and a finding set off by a comma between them takes
    it ("atelectasis, pneumonia not excluded"; but "edema and effusions cannot be excluded" doubts
    both)."""
    for match in _NEGATED_UNCERTAINTY.finditer(window):
        passive = re.search(r"(?:excluded|ruled out)$", match.group(0))
        if not passive and (_ANY_MENTION.search(window, match.end()) or _TAKES_AN_OBJECT.match(window, match.end())):
            continue  # "..., cannot exclude (a small) pneumonia": it doubts what follows it
        closer = list(_ANY_MENTION.finditer(window, 0, match.start()))
        if closer and "," in window[:closer[-1].start()]:
            continue  # "..., pneumonia not excluded": it doubts the finding set off closer to it
        return True
    return False


def classify_mention(sentence: str, start: int, end: int) -> int:
    """Value of the mention ``sentence[start:end]`` (lower-case sentence): 1, 0 or -1."""
    left, right = _clause_bounds(sentence, start, end)
    before, span, after = sentence[left:start], sentence[start:end], sentence[end:right]
    if _NEGATED_UNCERTAINTY.search(before) or _doubted_after(" ".join(after.split()[:8])):
        return UNCERTAIN
    closed = None
    for closed in _NEGATION_SCOPE_END.finditer(before):
        pass
    negation_before = before[closed.end():] if closed else before
    offset = start - len(negation_before)
    for comma in _NEW_FINDING_AFTER_COMMA.finditer(sentence, offset, end):
        if comma.end() > start:
            break
        if not _LIST_GOES_ON.search(sentence, comma.end(), right):
            negation_before = sentence[comma.end():start]
            break
    if _NOT_WELL_SEEN.search(after) and not _PRE_NEGATION.search(negation_before):
        return UNCERTAIN  # "known mass, not well seen" (but "no effusion, the angle not well seen")
    if (_PRE_NEGATION.search(negation_before) or _PRE_NEGATION.search(span)
            or _POST_NEGATION.search(after) or _HEADING_NONE.match(sentence, end)):
        return NEGATIVE
    pre = _PRE_STRONG_UNCERTAINTY if _ALREADY_NAMED.search(before) else _PRE_UNCERTAINTY
    limit = _CAUSE_OF_A_LIMIT.search(before)
    if limit:  # "evaluation ... limited by overlying effusion": only the words after "by" count
        negation_before = limit.group("cause")
    hedges = list(pre.finditer(negation_before))
    if hedges and _DEFINITE.search(negation_before, hedges[-1].end()):
        hedges = []  # "possible small effusion and definite consolidation"
    near = _NEAR_UNCERTAINTY.search(before)
    if ((hedges or (near and "," not in near.group("gap")))
            or _SPAN_UNCERTAINTY.search(span) or _POST_UNCERTAINTY.search(after)):
        return UNCERTAIN
    return POSITIVE


# --------------------------------------------------------------------------- not this finding

#: A density or opacity described as calcified, bony or metallic is not an airspace opacity.
_NON_PULMONARY_ADJECTIVE = re.compile(
    r"\b(?:calcific|calcified|sclerotic|radiopaque|radio-opaque|metallic|metal|bony|bone|osseous|"
    r"cortical|tubular)\s+(?:[\w-]+\s+){0,2}$")
#: ... nor one the report attributes to something outside the lung ("density ... consistent with
#: nipple shadows", "opacities related to overlying soft tissues", "densities ... coronary stents").
_OUTSIDE_THE_LUNG = (
    r"nipples?|breasts?|piercings?|skin ?folds?|soft[- ]tissues?|foreign bod\w*|stents?|"
    r"hiatal hernia|fat pads?|(?:epicardial|pericardial|subpleural|extrapleural) fat|clothing|"
    r"hair|external|artifacts?|artifactual|summation|overlap\w*|pectus|projectile|"
    r"bullet|shrapnel|bony|osseous|skeletal|costochondral|cartilage|healing rib fractures?")
_ATTRIBUTED = (r"^(?:(?!,|\b(?:and|with|as well|rather than|but)\b)[^;]){0,80}?\b(?:represent\w*|"
               r"reflect\w*|consistent with|compatible with|due to|secondary to|related to|attributable to|"
               r"caused by|suggestive of|from|overlying)\s+(?:(?!(?:with|and|but|or|without|rather|not)\b)[\w-]+\s+)"
               r"{0,4}?(?:")
_OUTSIDE_LESION = re.compile(_ATTRIBUTED + _OUTSIDE_THE_LUNG + r")\b")
_OUTSIDE_OPACITY = re.compile(_ATTRIBUTED + _OUTSIDE_THE_LUNG + r"|granulom\w*)\b")
#: A hedged attribution ("density which may be due to a hiatal hernia") leaves the finding
#: uncertain rather than absent.
_HEDGE = re.compile(r"\b(?:may|might|could|possibl\w*|versus|vs|or)\b")
#: A "lesion" of a bone ("expansile lesion of the right 9th rib", "lucent lesion in the humeral
#: head") is not a lung lesion.
_BONE_BEFORE = re.compile(r"\b(?:expansile|lytic|blastic|sclerotic|bony|bone|osseous|"
                          r"cortical|skin|cutaneous)\s+(?:[\w-]+\s+){0,2}$")
_BONE_AFTER = re.compile(
    r"^\s+(?:[\w-]+\s+){0,4}?(?:of|in|within|involving|at)\s+(?:the\s+)?(?:[\w-]+\s+){0,3}?"
    r"(?:ribs?|humer\w*|"
    r"clavic\w*|scapul\w*|spine|spinous|vertebra\w*|bones?|sternum|sternal|glenoid|acromion|"
    r"skull|pelvis|femur|femoral)\b")
#: A broken device ("fractured sternal wires", "catheter fracture", "the screw is fractured")
#: is not a bone fracture.
_DEVICE = (r"(?:screws?|wires?|leads?|catheters?|hardware|rods?|pacemakers?|devices?|stents?|"
           r"ports?|tubes?|coils?|filters?|prosthes[ie]s|sutures?|cerclage)")
_DEVICE_BEFORE = re.compile(rf"\b{_DEVICE}\s+(?:(?:{_BE}|(?:has|have) been)\s+)?(?:\w+ly\s+)?$")
_DEVICE_AFTER = re.compile(rf"^(?!\s+(?:fixation|repair)\b)\s+(?:of\s+)?(?:the\s+|an?\s+)?"
                           rf"(?:(?!(?:with|and|or|from|after|by|near|adjacent|to|at|since|over|in|along|"
                           rf"beside|next|under|below|above|around)\b)[\w-]+\s+){{0,3}}?{_DEVICE}\b")


def _not_this_finding(observation: str, text: str, start: int, end: int) -> int | None:
    """Whether ``text[start:end]`` names something else (the rules above): None when it is the
    finding, NEGATIVE when it is something else, UNCERTAIN when the report hedges that."""
    if observation not in ("Lung Opacity", "Lung Lesion", "Fracture"):
        return None
    before, phrase, after = text[max(0, start - 60):start], text[start:end], text[end:end + 120]
    if observation == "Fracture":
        device = _DEVICE_BEFORE.search(before) or _DEVICE_AFTER.search(after)
        return NEGATIVE if device else None
    if observation == "Lung Opacity" and _NON_PULMONARY_ADJECTIVE.search(before):
        return NEGATIVE
    if (observation == "Lung Lesion" and phrase.startswith("lesion")
            and (_BONE_BEFORE.search(before) or _BONE_AFTER.search(after))):
        return NEGATIVE
    outside = (_OUTSIDE_OPACITY if observation == "Lung Opacity" else _OUTSIDE_LESION).search(after)
    if outside is None:
        return None
    return UNCERTAIN if _HEDGE.search(outside.group(0)) else NEGATIVE


#: A sentence end before a lower-case word ("No effusion. cardiomegaly.", "no effusion . the
#: heart is enlarged ."), which ``split_sentences`` keeps together, but not after an
#: abbreviation ("vs. pneumonia", "e.g. an effusion", "approx. 2 cm") or a list number.
_LOWER_CASE_SENTENCE_END = re.compile(
    r"(?<![0-9])(?<!\bvs)(?<!\bdr)(?<!\bmr)(?<!\bmrs)(?<!\bms)(?<!\bst)(?<!\bno)(?<!\bapprox)"
    r"(?<!\bincl)(?<!\betc)(?<!\bfig)"
    r"(?<!\.[a-z])(?<!^[a-z])(?<!\s[a-z])(?<![.!?])[.!?]+\s+(?=[a-z])", re.IGNORECASE)  # one try per run


def _sentences(text: str) -> list[str]:
    """``split_sentences``, then also split where a sentence starts in lower case."""
    return [part.strip() for sentence in split_sentences(text)
            for part in _LOWER_CASE_SENTENCE_END.split(sentence) if part.strip()]


def _read_sentences(report: str) -> list[tuple[str, str]]:
    """The sentences the labeler reads, each with its normalized lower-case text."""
    return [(sentence, normalize_text(sentence)) for sentence in _sentences(reportable_text(report))]


def find_mentions(report: str, sentences: list[tuple[str, str]] | None = None) -> list[Mention]:
    """Every mention in the report with its value (stages 1-2), in reading order (``sentences``:
    the report already read by ``_read_sentences``)."""
    mentions: list[Mention] = []
    for sentence, text in _read_sentences(report) if sentences is None else sentences:
        for observation in CHEXPERT_OBSERVATIONS:
            normal = _NORMAL_RE.get(observation)
            normal_spans = []
            if normal is not None:
                for match in normal.finditer(text):
                    normal_spans.append(match.span())
                    mentions.append(Mention(observation, NEGATIVE, sentence, match.group(0),
                                            _clause(text, *match.span())))
            pattern = _MENTION_RE.get(observation)
            if pattern is None:
                continue
            for match in pattern.finditer(text):
                if any(a <= match.start() < b for a, b in normal_spans):
                    continue  # "heart size is normal, not enlarged": already read as normal
                elsewhere = _not_this_finding(observation, text, match.start(), match.end())
                if elsewhere == NEGATIVE:
                    continue  # "nodular density ... consistent with a nipple shadow"
                value = classify_mention(text, match.start(), match.end())
                if elsewhere == UNCERTAIN and value == POSITIVE:
                    value = UNCERTAIN
                mentions.append(Mention(observation, value, sentence, match.group(0),
                                        _clause(text, *match.span())))
    return mentions


def names_other_abnormality(report: str, sentences: list[tuple[str, str]] | None = None) -> bool:
    """Whether the report states (or suspects) an abnormality of :data:`OTHER_ABNORMALITIES`."""
    for _, text in _read_sentences(report) if sentences is None else sentences:
        for match in _OTHER_RE.finditer(text):
            if _CALLED_NORMAL.search(text, 0, match.start()) or _STATED_NORMAL.match(text, match.end()):
                continue  # "normal interstitial markings", "interstitial markings within normal limits"
            if classify_mention(text, match.start(), match.end()) != NEGATIVE:
                return True
    return False


def aggregate(mentions: Iterable[Mention], *, other_abnormality: bool) -> Labels:
    """Stage 3: per-observation aggregation and the "No Finding" rule (CheXpert): "No Finding" is
    1 when no observation but Support Devices is positive or uncertain and the report names no
    other abnormality (``other_abnormality``, :func:`names_other_abnormality`)."""
    values: dict[str, set[int]] = {name: set() for name in CHEXPERT_OBSERVATIONS}
    for mention in mentions:
        values[mention.observation].add(mention.value)
    labels: Labels = {}
    for name in CHEXPERT_OBSERVATIONS:
        seen = values[name]
        labels[name] = (POSITIVE if POSITIVE in seen else UNCERTAIN if UNCERTAIN in seen
                        else NEGATIVE if NEGATIVE in seen else None)
    abnormal = any(labels[name] in (POSITIVE, UNCERTAIN) for name in CHEXPERT_OBSERVATIONS
                   if name not in ("No Finding", "Support Devices"))
    labels["No Finding"] = None if abnormal or other_abnormality else POSITIVE
    return labels


def label_report(text: str) -> Labels:
    """Label one report: ``{observation: 1 | 0 | -1 | None}`` keyed by the 14 CheXpert names.

    >>> labels = label_report("No pneumothorax. Possible small left pleural effusion.")
    >>> labels["Pneumothorax"], labels["Pleural Effusion"], labels["No Finding"]
    (0, -1, None)

    An empty or whitespace-only text has no labels (every value ``None``).
    """
    if not isinstance(text, str):
        raise TypeError(f"label_report expects a string, got {type(text).__name__}")
    if not text.strip():  # nothing was reported: no finding either way, not "No Finding"
        return {name: None for name in CHEXPERT_OBSERVATIONS}
    sentences = _read_sentences(text)  # read once, for both
    return aggregate(find_mentions(text, sentences),
                     other_abnormality=names_other_abnormality(text, sentences))


def label_reports(texts: Iterable[str]) -> list[Labels]:
    """Label many reports (same order)."""
    return [label_report(text) for text in texts]
