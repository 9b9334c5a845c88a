"""The one record type every dataset reader yields."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Record:
    """One radiograph with its text.

    ``labels`` maps CheXpert observation names to 1 / 0 / -1 / None (not mentioned) when known.
    ``summary`` is the XrayGPT-style summary (findings + impression merged), the training target.
    """

    image_id: str
    image_path: Path | None
    summary: str | None = None
    report: str | None = None
    labels: dict[str, int | None] | None = None
    split: str | None = None
    meta: dict = field(default_factory=dict)
