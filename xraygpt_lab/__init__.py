"""xraygpt-lab: rebuild XrayGPT (arXiv 2306.07971) step by step, on a laptop.

Frozen MedCLIP-style vision encoder -> one trainable linear layer -> a LLaMA-family LLM.
Two profiles share one code path: ``tiny`` (toy sizes, CPU, minutes) and ``full``
(MedCLIP + Vicuna-7B from local folders on a GPU). See ``xraygpt_lab.config``.
"""
from __future__ import annotations

from xraygpt_lab.errors import ImageLoadError, XrayGPTLabError

__version__ = "0.1.0"
__all__ = ["ImageLoadError", "XrayGPTLabError", "load_image", "__version__"]


def __getattr__(name: str):  # lazy: keep `import xraygpt_lab` light (no torch import)
    if name == "load_image":
        from xraygpt_lab.data.readers.images import load_image

        return load_image
    raise AttributeError(f"module 'xraygpt_lab' has no attribute {name!r}")
