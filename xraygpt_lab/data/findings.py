"""Observation vocabulary: the 14 CheXpert observations and the ones the synthetic world renders.

Names are exactly CheXpert's (Irvin et al. 2019, Table 1), so labels from MIMIC-CXR's CheXpert
CSV, our labeler and the synthetic world share one set of column names.
"""
from __future__ import annotations

CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: Observations the synthetic world draws (each positive has a ground-truth pixel mask,
#: except "No Finding", which is positive exactly when no other observation is).
RENDERED_OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Cardiomegaly",
    "Pleural Effusion",
    "Pneumothorax",
    "Consolidation",
    "Lung Lesion",
    "Edema",
    "Atelectasis",
    "Support Devices",
    "Fracture",
)

#: Observations with a compact location (used by the faithfulness benchmarks).
LOCALIZED_OBSERVATIONS: tuple[str, ...] = (
    "Pleural Effusion",
    "Pneumothorax",
    "Lung Lesion",
    "Consolidation",
    "Atelectasis",
)

#: CheXpert label values.
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
