"""On-disk cache of the frozen encoder's tokens: each image is encoded once.

The encoder is frozen during alignment (XrayGPT, Sec. 3), so its output for an image never
changes while training the projection. Features are stored as one safetensors file per image
under ``<root>/<encoder hash>/<image hash>.safetensors``:

* the image hash is SHA-256 of the *preprocessed* float32 tensor (so the size and transform are
  part of the key), and
* the encoder hash is SHA-256 of every weight of the encoder (so retraining the encoder never
  serves stale features).

A cached file that cannot be read (empty or cut off by a power cut, not the expected tensor) is
encoded again and replaced; :attr:`FeatureCache.unreadable` lists what was wrong with each.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CorruptFileError
from ..run_folder import load_weights, save_weights


def tensor_hash(tensor: torch.Tensor | np.ndarray) -> str:
    """SHA-256 (hex, 24 chars) of a tensor's dtype, shape and bytes."""
    array = tensor.detach().cpu().numpy() if torch.is_tensor(tensor) else np.asarray(tensor)
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:24]


def module_hash(module: nn.Module) -> str:
    """SHA-256 (hex, 16 chars) over every named tensor of ``module.state_dict()``."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        array = value.detach().cpu().float().numpy() if value.is_floating_point() else value.cpu().numpy()
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


class FeatureCache:
    """Encoder tokens ``[N, d]`` per preprocessed image, computed once and kept on disk."""

    def __init__(self, root: str | Path, encoder: nn.Module, batch_size: int = 32) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.encoder_hash = module_hash(encoder)
        self.folder = Path(root) / self.encoder_hash
        self.hits = 0
        self.misses = 0
        self.unreadable: list[CorruptFileError] = []  # cached files found unreadable and replaced

    def path(self, pixels: torch.Tensor) -> Path:
        """Where the features of one preprocessed image ``[1, S, S]`` live."""
        return self.folder / f"{tensor_hash(pixels)}.safetensors"

    @torch.no_grad()
    def features(self, pixels: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Tokens for preprocessed images (``[M, 1, S, S]`` or a list of ``[1, S, S]``) → ``[M, N, d]``."""
        items = list(pixels)
        if not items:
            raise ValueError("no images given")
        out: list[torch.Tensor | None] = [None] * len(items)
        todo: list[int] = []
        for i, px in enumerate(items):
            path = self.path(px)
            if path.is_file():
                try:
                    out[i] = self._read(path)
                    self.hits += 1
                    continue
                except CorruptFileError as exc:
                    self.unreadable.append(exc)
            todo.append(i)
        self.encoder.eval()
        device = next(self.encoder.parameters()).device
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            batch = torch.stack([items[i] for i in chunk]).to(device)  # [b, 1, S, S]
            tokens = self.encoder.encode_tokens(batch).float().cpu()  # [b, N, d]
            for i, t in zip(chunk, tokens):
                save_weights(self.path(items[i]), {"tokens": t.clone()})
                out[i] = t
                self.misses += 1
        return torch.stack(out)  # [M, N, d]

    def _read(self, path: Path) -> torch.Tensor:
        """One cached ``[N, d]`` token tensor; ``CorruptFileError`` when unreadable or not one."""
        tokens = load_weights(path)[0].get("tokens")
        shape = (getattr(self.encoder, "num_tokens", None), getattr(self.encoder, "token_dim", None))
        if tokens is None or tokens.dim() != 2 or not torch.isfinite(tokens).all() \
                or any(want is not None and got != want for got, want in zip(tokens.shape, shape)):
            raise CorruptFileError(path, f"does not hold the encoder's finite {list(shape)} token features")
        return tokens
