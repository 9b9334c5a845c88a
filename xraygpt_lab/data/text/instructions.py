"""Instructions the model is trained and asked with.

XrayGPT (arXiv 2306.07971, Sec. 3; ``prompts/alignment.txt`` in their repository) samples one of
15 alignment instructions per training image. Their file has no licence, so these 15 are our own
wording in the same spirit (detail, key findings, abnormalities, lungs and heart, most prominent
feature, impression, heart size, normal vs abnormal, infection, lymph nodes, complications).
"""
from __future__ import annotations

import random

ALIGNMENT_INSTRUCTIONS: tuple[str, ...] = (
    "Describe the given chest x-ray image in detail.",
    "What are the key findings in this chest x-ray image?",
    "Look at this chest x-ray and report any abnormalities or concerns.",
    "Describe the features of the lungs and the heart in this chest x-ray.",
    "What is the most prominent feature in this chest x-ray, and what does it indicate?",
    "Give the findings and the overall impression of this chest radiograph.",
    "Comment on the size and shape of the heart in this chest x-ray.",
    "Is this chest x-ray normal or abnormal overall? Explain what you see.",
    "Are there signs of infection or inflammation in this chest x-ray?",
    "Do you see any enlarged lymph nodes or masses in this chest x-ray?",
    "What complications or risks does this chest x-ray suggest?",
    "Summarise this chest radiograph as a radiologist would.",
    "Walk me through what you see in this chest x-ray, structure by structure.",
    "Write a short radiology report for this chest x-ray.",
    "What would you tell a referring doctor about this chest x-ray?",
)
assert len(ALIGNMENT_INSTRUCTIONS) == 15

#: Plain-language name used in a yes/no question about each rendered observation.
_QUESTION_NOUN: dict[str, str] = {
    "Cardiomegaly": "cardiomegaly (an enlarged heart)",
    "Pleural Effusion": "a pleural effusion",
    "Pneumothorax": "a pneumothorax",
    "Consolidation": "consolidation",
    "Lung Lesion": "a lung nodule or mass",
    "Edema": "pulmonary edema",
    "Atelectasis": "atelectasis",
    "Support Devices": "any support device, tube or line",
    "Fracture": "a rib fracture",
}


def finding_question(observation: str) -> str:
    """A yes/no question about one observation, e.g. ``"Is there a pleural effusion?"``."""
    if observation == "No Finding":
        return "Is this chest x-ray normal?"
    try:
        noun = _QUESTION_NOUN[observation]
    except KeyError:
        raise ValueError(f"no question for observation {observation!r}") from None
    return f"Is there {noun}?"


def random_instruction(rng: random.Random) -> str:
    """One alignment instruction drawn uniformly, as XrayGPT does per training sample."""
    return rng.choice(ALIGNMENT_INSTRUCTIONS)
