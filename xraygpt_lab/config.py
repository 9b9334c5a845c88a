"""Profiles: the only place where sizes differ between ``tiny`` (CPU) and ``full`` (GPU).

Nothing else in the code branches on the profile name; modules read the numbers here.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    """Sizes and paths of one profile.

    ``image_size`` is the side of the square radiograph the encoder sees (MedCLIP: 224).
    Model-specific settings live in the ``encoder``/``llm``/``train`` dicts so that each model
    module owns its own keys (documented in that module).
    """

    name: str
    image_size: int
    device: str = "cpu"
    encoder: dict = field(default_factory=dict)
    llm: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


TINY = Profile(name="tiny", image_size=128)
FULL = Profile(name="full", image_size=224, device="cuda")

PROFILES: dict[str, Profile] = {"tiny": TINY, "full": FULL}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name`` (``tiny`` or ``full``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
