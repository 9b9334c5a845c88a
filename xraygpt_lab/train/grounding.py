"""Teach a tiny LLM to read its image slot: "grounded" domain fine-tuning examples.

XrayGPT aligns images to a frozen Vicuna-7B, an LLM general enough to read whatever soft tokens
the linear layer writes into ``<Img>…</Img>`` (arXiv 2306.07971, Sec. 3). A 1 M-parameter LLaMA
trained from scratch on report text never sees anything in that slot, so a linear layer into it
has nothing to steer: measured, CE macro-F1 of the aligned tiny model ≈ the image-blind baseline.

The tiny profile therefore adds *grounded* conversations to the domain fine-tuning (the
MedVicuna/RadVicuna step): the slot holds one **concept token** per finding (e.g.
``<pleural_effusion_left>``, repeated 1–3 times) among ``<blank>`` fillers, as many slots as the
encoder has image tokens, shuffled; the target is the case's summary. The LLM learns to read the
slot; alignment (LLM frozen, only the linear layer trained) then learns to write image tokens
that the LLM reads like those concepts. With true concepts in the slot this LLM reaches CE
macro-F1 0.94 (``docs/design-notes.md``). It is a stand-in for the in-context
ability a 7B model brings, and it is text-only: no image reaches the LLM's training.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from ..data.text.instructions import ALIGNMENT_INSTRUCTIONS
from ..data.synthetic.lesions import DRAWABLE, SEVERITIES
from .label_supervision import finding_columns
from ..models.conversation import DOCTOR, END_SYM, IMAGE_END, IMAGE_START, PATIENT, xraygpt_prompt

#: Observations whose concept token carries the side (the synthetic world lateralises them).
LATERAL: tuple[str, ...] = ("Pleural Effusion", "Pneumothorax", "Consolidation", "Lung Lesion",
                            "Atelectasis", "Fracture")
BLANK_TOKEN = "<blank>"
#: Observations whose concept token can also carry the grade (``LLMStage.graded_concepts``): the
#: synthetic world draws each of these grades about equally often and the report names it.
GRADED: dict[str, tuple[str, ...]] = {o: SEVERITIES[o] for o in
                                      ("Pleural Effusion", "Pneumothorax", "Edema", "Cardiomegaly")}


def concept_token(observation: str, side: str | None = None, grade: str | None = None) -> str:
    """``"<pleural_effusion_left>"`` for a lateral finding, ``"<cardiomegaly>"`` otherwise; with a
    ``grade`` of a :data:`GRADED` observation, ``"<pleural_effusion_left_large>"``."""
    name = observation.lower().replace(" ", "_")
    if observation in LATERAL and side in ("left", "right"):
        name += f"_{side}"
    if grade is not None and observation in GRADED:
        if grade not in GRADED[observation]:
            raise ValueError(f"{observation}: grade must be one of {list(GRADED[observation])}, got {grade!r}")
        name += f"_{grade}"
    return f"<{name}>"


def finding_token(finding: Any, graded: bool = False) -> str:
    """The concept token of one finding (with its grade when ``graded`` and the finding has one)."""
    return concept_token(finding.observation, finding.side, finding.severity if graded else None)


def concept_columns() -> list[tuple[str, str | None]]:
    """``(observation, side)`` of every concept: lateral findings split by side (side None: not split).
    The encoder's label columns (``train.walkthrough.laterality_labels``) use the same list."""
    return [(o, s) for o in DRAWABLE for s in (("left", "right") if o in LATERAL else (None,))]


#: Every concept token, plus the filler: add them to the tokenizer as special tokens.
CONCEPT_TOKENS: tuple[str, ...] = tuple(concept_token(o, s) for o, s in concept_columns()) + (BLANK_TOKEN,)
#: The graded concept tokens (``<pleural_effusion_left_large>``), added after :data:`CONCEPT_TOKENS`
#: when a recipe grades its concepts, so that an ungraded run's tokenizer is unchanged.
GRADED_TOKENS: tuple[str, ...] = tuple(concept_token(o, s, g) for o, s in concept_columns() if o in GRADED
                                       for g in GRADED[o])


def concept_tokens(graded: bool = False) -> tuple[str, ...]:
    """The special tokens a tiny LLM's tokenizer gets: :data:`CONCEPT_TOKENS` (+ :data:`GRADED_TOKENS`)."""
    return CONCEPT_TOKENS + (GRADED_TOKENS if graded else ())


def slot_text(findings: Sequence[Any], rng: random.Random, n_slots: int, layout: Any = None,
              graded: bool = False) -> str:
    """The image slot of one grounded example: concepts and blanks.

    Without ``layout``: each finding's concept 1–3 times among blanks, shuffled. With ``layout``
    (``[n_slots, L]`` per-token targets over :func:`concept_columns`, e.g. ``label_supervision.
    token_targets`` of the case's masks): slot ``k`` holds the concept of a finding whose region
    covers token cell ``k`` (one drawn at random where several do), a blank where none does — the
    layout of the encoder tokens the linear layer will project; a finding that covers no cell
    still gets one random slot. ``graded``: graded findings' concepts carry their grade
    (:func:`finding_token`).
    """
    if layout is None:
        tokens = [finding_token(f, graded) for f in findings for _ in range(rng.randint(1, 3))]
        tokens = tokens[:n_slots] + [BLANK_TOKEN] * max(0, n_slots - len(tokens))
        rng.shuffle(tokens)
        return "".join(tokens)
    columns = concept_columns()
    if len(layout) != n_slots or any(len(row) != len(columns) for row in layout):
        raise ValueError(f"layout must be [{n_slots}, {len(columns)}] (slots × concept columns)")
    by_column = {j: finding_token(f, graded) for f in findings for j in finding_columns(f, columns)}
    tokens = []
    for row in layout:
        hits = [j for j, on in enumerate(row) if float(on) > 0]
        if not hits:
            tokens.append(BLANK_TOKEN)
            continue
        j = rng.choice(hits)
        tokens.append(by_column.get(j, concept_token(*columns[j])))
    for f in findings:
        token = finding_token(f, graded)
        if token not in tokens:
            blanks = [k for k, t in enumerate(tokens) if t == BLANK_TOKEN] or list(range(n_slots))
            tokens[rng.choice(blanks)] = token
    return "".join(tokens)


def grounded_examples(findings: Sequence[Sequence[Any]], summaries: Sequence[str], n_slots: int,
                      seed: int, per_case: int = 8,
                      instructions: Sequence[str] = ALIGNMENT_INSTRUCTIONS,
                      layouts: Sequence[Any] | None = None, graded: bool = False) -> list[tuple[str, str]]:
    """``(prompt, target)`` pairs: concept tokens in the image slot → the case summary + ``###``.
    ``layouts``: one per case, for spatial slots; ``graded``: graded concepts (:func:`slot_text`)."""
    if len(findings) != len(summaries):
        raise ValueError(f"{len(findings)} finding lists but {len(summaries)} summaries")
    layouts = _layouts(layouts, len(findings))
    if n_slots < 1:
        raise ValueError(f"n_slots must be >= 1, got {n_slots}")
    rng = random.Random(seed)
    out = []
    for case, summary, layout in zip(findings, summaries, layouts):
        for _ in range(per_case):
            prompt = xraygpt_prompt(rng.choice(instructions)).replace("<ImageHere>",
                                                                       slot_text(case, rng, n_slots, layout, graded))
            out.append((prompt, summary + END_SYM))
    return out


def _layouts(layouts: Sequence[Any] | None, n: int) -> Sequence[Any]:
    if layouts is None:
        return [None] * n
    if len(layouts) != n:
        raise ValueError(f"{len(layouts)} layouts for {n} cases")
    return layouts


def mix(conversations: list[tuple[str, str]], grounded: list[tuple[str, str]], grounded_share: float,
        seed: int) -> list[tuple[str, str]]:
    """Conversations plus grounded examples so that ``grounded_share`` of the list is grounded."""
    if not 0 <= grounded_share < 1:
        raise ValueError(f"grounded_share must be in [0, 1), got {grounded_share}")
    if grounded_share == 0 or not grounded:
        return list(conversations)
    want = round(len(conversations) * grounded_share / (1 - grounded_share))
    rng = random.Random(seed)
    picked = [grounded[i % len(grounded)] for i in range(want)]
    rng.shuffle(picked)
    return list(conversations) + picked


def grounded_conversations(findings: Sequence[Sequence[Any]], conversations: Sequence[Sequence[dict]],
                           n_slots: int, seed: int, per_case: int = 8, max_turns: int = 3,
                           yes_weight: float = 4.0, layouts: Sequence[Any] | None = None,
                           graded: bool = False) -> list[tuple[str, str]]:
    """Grounded *chats*: the concept slot in the first question, then 1–``max_turns`` turns of the
    case's own conversation; the target is the last answer + ``###``.

    Laid out exactly as ``ChatSession`` prompts the model (``###Patient: <Img>…</Img> q1 ###Doctor:
    a1 ###Patient: q2 ###Doctor: ``), so that follow-up questions ("Is there a pleural
    effusion?") are answered from the image slot, not from the words alone. The last question is
    drawn so that each yes/no question is answered "Yes" as often as "No" over the cases
    (:func:`yes_no_weights`), times ``yes_weight`` for a "Yes": most yes/no answers are "No",
    and without the balance the LLM learns to say "No" (or, balanced over all questions at once,
    a per-question habit) whatever the slot holds. ``layouts``: one per case, for spatial slots;
    ``graded``: graded concepts (:func:`slot_text`).
    """
    if len(findings) != len(conversations):
        raise ValueError(f"{len(findings)} finding lists but {len(conversations)} conversations")
    layouts = _layouts(layouts, len(findings))
    if n_slots < 1 or max_turns < 1:
        raise ValueError(f"n_slots and max_turns must be >= 1, got {n_slots} and {max_turns}")
    rng = random.Random(seed)
    weigh = yes_no_weights(conversations, yes_weight)
    out = []
    for case, turns, layout in zip(findings, conversations, layouts):
        if not turns:
            continue
        weights = [weigh(t) for t in turns]
        for _ in range(per_case):
            last = rng.choices(range(len(turns)), weights=weights)[0]
            others = [t for j, t in enumerate(turns) if j != last]
            chain = rng.sample(others, min(len(others), rng.randint(0, max_turns - 1))) + [turns[last]]
            prompt = ""
            for i, turn in enumerate(chain):
                image = f"{IMAGE_START}{slot_text(case, rng, n_slots, layout, graded)}{IMAGE_END} " if i == 0 else ""
                prompt += f"{END_SYM}{PATIENT}: {image}{turn['question'].strip()} {END_SYM}{DOCTOR}: "
                if i < len(chain) - 1:
                    prompt += f"{turn['answer'].strip()} "
            out.append((prompt, chain[-1]["answer"].strip() + END_SYM))
    return out


def polarity(answer: str) -> str | None:
    """An answer's polarity: "yes" or "no" when it starts with that word, else None."""
    first = answer.lstrip().lower()
    return "yes" if first.startswith("yes") else "no" if first.startswith("no") else None


def yes_no_weights(conversations: Sequence[Sequence[dict]], yes_weight: float = 1.0,
                   rounds: int = 20, case_weights: Sequence[float] | None = None) -> Callable[[dict], float]:
    """Weight of a turn as the last one of a grounded chat (drawn in proportion to the weights of
    its case's turns): one weight per yes/no question and answer, fitted so that each question
    is expected to end a chat as often with "Yes" (times ``yes_weight``) as with "No" over all
    cases, whatever else the cases hold (iterative proportional fitting, ``rounds`` rounds). The
    question alone then tells the LLM nothing about the answer: it has to read the slot. Other
    turns weigh 1. ``case_weights``: how often each case is drawn (None: equally often)."""
    keys = [[(t["question"].strip().lower(), polarity(t["answer"])) for t in turns] for turns in conversations]
    drawn = [1.0] * len(keys) if case_weights is None else [float(c) for c in case_weights]
    if len(drawn) != len(keys):
        raise ValueError(f"{len(keys)} cases but {len(drawn)} case weights")
    w: dict[tuple[str, str], float] = {k: 1.0 for ks in keys for k in ks if k[1] is not None}
    target = {"yes": yes_weight / (1.0 + yes_weight), "no": 1.0 / (1.0 + yes_weight)}
    for _ in range(rounds):
        expected: dict[tuple[str, str], float] = dict.fromkeys(w, 0.0)
        for ks, often in zip(keys, drawn):
            total = sum(w.get(k, 1.0) for k in ks)
            for k in ks:
                if k in w:
                    expected[k] += often * w[k] / total
        for (question, said), got in expected.items():
            other = expected.get((question, "no" if said == "yes" else "yes"), 0.0)
            if other > 0:  # a question only ever answered one way keeps its weight
                w[(question, said)] *= (target[said] * (got + other) / got) ** 0.5

    def weight(turn: dict) -> float:
        return w.get((turn["question"].strip().lower(), polarity(turn["answer"])), 1.0)

    return weight


def oracle_prompts(findings: Sequence[Sequence[Any]], n_slots: int, seed: int,
                   instruction: str = ALIGNMENT_INSTRUCTIONS[0], layouts: Sequence[Any] | None = None,
                   graded: bool = False) -> list[str]:
    """Prompts whose image slot holds the *true* concept tokens of each case: the reports a
    perfect encoder + projection would let this LLM write (an upper bound for alignment)."""
    rng = random.Random(seed)
    return [xraygpt_prompt(instruction).replace("<ImageHere>", slot_text(case, rng, n_slots, layout, graded))
            for case, layout in zip(findings, _layouts(layouts, len(findings)))]
