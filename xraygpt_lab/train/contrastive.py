"""MedCLIP contrastive pretraining of the vision encoder (with the text encoder beside it).

MedCLIP (Wang et al. 2022, Sec. 3; repository RyanWangZf/MedCLIP) decouples images and texts and
replaces CLIP's one-hot targets with *semantic matching*: with multi-hot labels ``l_img``/``l_txt``
per image and per text, ``label_sim = l_img @ l_txtᵀ`` and the targets are ``softmax(label_sim)``
row-wise, so two studies with the same findings are not pushed apart as false negatives. The loss
is the soft cross-entropy averaged over image→text and text→image. Without labels it is CLIP's
(Radford et al. 2021) symmetric cross-entropy on the diagonal.

The temperature is a learnable ``logit_scale`` initialised to ``log(1/0.07)`` and clamped to
``[0, 4.6052]`` (``ln 100``), as in MedCLIP's ``MedCLIPModel``.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..models.encoder import VisionEncoder
from ..models.medclip import LogitScale
from ..models.text_encoder import TextEncoder
from .label_supervision import TokenLabelHead, dense_label_loss, label_loss, positive_weights, random_shift

def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i  −Σ_j targets[i, j] · log_softmax(logits)[i, j]`` for ``[B, B']`` inputs."""
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy; pair ``i`` ↔ ``i`` is the positive. ``logits`` ``[B, B]``."""
    target = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return 0.5 * (
        nn.functional.cross_entropy(logits_per_image, target)
        + nn.functional.cross_entropy(logits_per_image.T, target)
    )


def medclip_loss(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    scale: torch.Tensor,
    image_labels: torch.Tensor | None = None,
    text_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """MedCLIP's semantic-matching loss; plain CLIP loss when labels are absent.

    ``image_embeddings`` ``[B, p]`` and ``text_embeddings`` ``[B', p]`` are unit vectors;
    ``scale`` is ``exp(logit_scale)``; labels are multi-hot ``[B, L]`` / ``[B', L]``.
    """
    if image_embeddings.shape[-1] != text_embeddings.shape[-1]:
        raise ValueError(
            f"image embeddings have width {image_embeddings.shape[-1]} but text embeddings {text_embeddings.shape[-1]}"
        )
    logits_per_image = scale * image_embeddings @ text_embeddings.T  # [B, B']
    if image_labels is None and text_labels is None:
        if logits_per_image.shape[0] != logits_per_image.shape[1]:
            raise ValueError("without labels the loss needs paired batches (as many texts as images)")
        return clip_loss(logits_per_image)
    if text_labels is None:
        text_labels = image_labels
    if image_labels is None:
        image_labels = text_labels
    image_labels = image_labels.to(logits_per_image)
    text_labels = text_labels.to(logits_per_image)
    label_sim = image_labels @ text_labels.T  # [B, B']
    loss_image = soft_cross_entropy(logits_per_image, label_sim.softmax(dim=1))
    loss_text = soft_cross_entropy(logits_per_image.T, label_sim.T.softmax(dim=1))
    return 0.5 * (loss_image + loss_text)


def label_columns() -> list[str]:
    """Column names of ``observation_targets``: each rendered observation, split by side where
    the synthetic world lateralises it (``Pleural Effusion (left)`` …), so that the semantic-
    matching targets separate a left from a right effusion."""
    from ..data.findings import RENDERED_OBSERVATIONS
    from ..data.synthetic.lesions import ALLOWED_SIDES

    columns: list[str] = []
    for observation in RENDERED_OBSERVATIONS:
        sides = [s for s in ALLOWED_SIDES.get(observation, (None,)) if s in ("left", "right")]
        columns += [f"{observation} ({s})" for s in sides] if sides else [observation]
    return columns


def observation_targets(cases: Sequence) -> tuple[torch.Tensor, list[str]]:
    """Multi-hot ``[N, L]`` laterality-aware labels from synthetic cases (``.labels``, ``.findings``).

    A positive lateralised finding sets its ``(left)``/``(right)`` column; a positive without a
    usable side sets both (the observation is present, the side unknown).
    """
    columns = label_columns()
    index = {name: i for i, name in enumerate(columns)}
    targets = torch.zeros(len(cases), len(columns))
    for row, case in enumerate(cases):
        sides = {f.observation: f.side for f in getattr(case, "findings", [])}
        for observation, value in case.labels.items():
            if value != 1:
                continue
            if observation in index:
                targets[row, index[observation]] = 1.0
                continue
            side = sides.get(observation)
            keys = [f"{observation} ({side})"] if side in ("left", "right") else [
                f"{observation} (left)", f"{observation} (right)"
            ]
            for key in keys:
                if key in index:
                    targets[row, index[key]] = 1.0
    return targets, columns


def _cosine_lr(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 10 % of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def resolve_bf16(bf16: bool | str, device: str | torch.device = "cpu") -> bool:
    """``True`` / ``False``, or ``"auto"``: bf16 autocast where ``device`` computes it natively."""
    if isinstance(bf16, bool):
        return bf16
    if bf16 != "auto":
        raise ValueError(f"bf16 must be True, False or 'auto', got {bf16!r}")
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # oneDNN's own check: AVX-512 BF16 or AMX on this CPU
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pretrain_encoder(
    encoder: VisionEncoder,
    text_encoder: TextEncoder,
    images: torch.Tensor,
    texts: Sequence[str],
    labels: torch.Tensor | None = None,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = True,
    logit_scale: LogitScale | None = None,
    weight_decay: float = 0.05,
    warmup: int | None = None,
    log_every: int = 10,
    signed_labels: bool = True,
    contrastive_weight: float = 1.0,
    label_weight: float = 0.0,
    label_head: TokenLabelHead | None = None,
    pos_weight_power: float = 0.75,
    shift: int = 0,
    contrastive_every: int = 1,
    checkpoint: str | os.PathLike | None = None,
    save_every: int = 100,
    token_labels: torch.Tensor | None = None,
    dense_weight: float = 0.0,
    bf16: bool | str = False,
) -> dict:
    """Train ``encoder`` and ``text_encoder`` jointly with the MedCLIP loss.

    ``images`` ``[N, 1, S, S]`` (``data.images.preprocess`` outputs, stacked); ``texts`` the N
    paired reports; ``labels`` optional multi-hot ``[N, L]`` (use laterality-split columns so the
    targets tell left from right). Batches are drawn without replacement per epoch with a
    ``seed``-ed generator. ``signed_labels`` maps 0/1 to −1/+1 before ``label_sim`` so that
    agreeing on an *absent* finding counts too: two studies that differ in one observation then
    get ``e²`` less target mass than identical ones (with raw 0/1 labels the targets are nearly
    uniform and the tiny encoder barely learns).

    ``label_weight > 0`` adds the token-level MIL cross-entropy of ``train.label_supervision``
    (needs ``labels``; a ``TokenLabelHead`` is created unless ``label_head`` is given), weighted
    against ``contrastive_weight`` × the MedCLIP loss (0 skips the text encoder entirely).
    ``contrastive_every = k`` computes the MedCLIP loss on every k-th step only (the text
    encoder costs about as much as the image encoder at tiny size). ``checkpoint``: a file that
    receives the whole training state every ``save_every`` steps (atomically) and from which a
    later call with the same arguments resumes to the same result. ``token_labels``
    ``[N, tokens, L]`` with ``dense_weight > 0`` adds the per-token loss
    (``label_supervision.dense_label_loss``; targets from the finding masks, not shifted with the
    image: ±``shift`` px is small beside a token's cell). ``shift`` rolls each batch by up to that many pixels (augmentation; no flips, which would
    swap left and right). Returns a history: ``loss`` (per step, the weighted total),
    ``loss_contrastive`` / ``loss_labels`` (their parts; None on steps without that part), ``step``, ``logit_scale`` (final
    exp-scale), ``label_head`` (the head or None), ``seconds`` (summed over resumed segments),
    ``resumed_from`` (the checkpoint's step, 0 from the start), ``images_per_second``, ``bf16``
    (whether autocast was on).

    ``bf16``: run the encoders' forward passes under bfloat16 autocast (losses, weights and the
    optimiser stay float32); ``"auto"`` turns it on where the hardware computes bf16 natively
    (:func:`resolve_bf16`). About a quarter faster per step on such a CPU; results differ from
    float32 by rounding.

    Training runs on ``encoder``'s device: the text encoder, the logit scale and the label head
    are moved there; ``images``, ``labels`` and ``token_labels`` may stay on the CPU (each batch is
    copied over).
    """

    n = images.shape[0]
    use_bf16 = resolve_bf16(bf16, next(encoder.parameters()).device)
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be [N, 1, S, S], got shape {list(images.shape)}")
    if len(texts) != n:
        raise ValueError(f"got {n} images but {len(texts)} texts; they must be paired one to one")
    if labels is not None and (labels.dim() != 2 or labels.shape[0] != n):
        raise ValueError(f"labels must be [N={n}, L], got shape {list(labels.shape)}")
    if label_weight > 0 and labels is None:
        raise ValueError("label_weight > 0 needs labels (multi-hot [N, L])")
    if contrastive_weight < 0 or label_weight < 0 or contrastive_weight + label_weight == 0:
        raise ValueError(f"weights must be >= 0 and not both 0 (contrastive_weight={contrastive_weight}, "
                         f"label_weight={label_weight})")
    if dense_weight < 0:
        raise ValueError(f"dense_weight must be >= 0, got {dense_weight}")
    if dense_weight > 0:
        if label_weight <= 0:
            raise ValueError("dense_weight > 0 trains the token label head: set label_weight > 0 too")
        if token_labels is None or token_labels.dim() != 3 or token_labels.shape[0] != n \
                or (labels is not None and token_labels.shape[2] != labels.shape[1]):
            got = None if token_labels is None else list(token_labels.shape)
            raise ValueError(f"dense_weight > 0 needs token_labels [N={n}, tokens, L] matching labels; got {got}")
        if token_labels.shape[1] != encoder.num_tokens:
            raise ValueError(f"token_labels has {token_labels.shape[1]} tokens per image; the encoder gives "
                             f"{encoder.num_tokens} (grid {encoder.config.grid})")
    if contrastive_every < 1:
        raise ValueError(f"contrastive_every must be >= 1, got {contrastive_every}")
    if steps < 1 or batch_size < 2:
        raise ValueError(f"need steps ≥ 1 and batch_size ≥ 2 (got steps={steps}, batch_size={batch_size})")
    batch_size = min(batch_size, n)

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    scale_module = logit_scale or LogitScale()
    device = next(encoder.parameters()).device
    scale_module.to(device)
    tokens = text_encoder.tokenize(list(texts))  # input_ids / attention_mask [N, T]
    use_text = contrastive_weight > 0
    if use_text:
        text_encoder.to(device)  # trains beside the image encoder (a no-op when it is there already)
    head, pos_weight = None, None
    if label_weight > 0:
        head = (label_head or TokenLabelHead(encoder.token_dim, labels.shape[1])).to(device)
        pos_weight = positive_weights(labels, power=pos_weight_power).to(device)  # [L]
    modules = [encoder, text_encoder, scale_module] if use_text else [encoder]
    modules += [head] if head is not None else []
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20) if warmup is None else warmup

    # channels-last convolutions: ~15 % faster encoder steps on CPU (oneDNN), same results up to
    # rounding; undone at the end, and every save makes its tensors contiguous
    encoder.to(memory_format=torch.channels_last)
    encoder.train()
    text_encoder.train()
    if head is not None:
        head.train()
    history: dict = {"step": [], "loss": [], "loss_contrastive": [], "loss_labels": []}
    order = torch.randperm(n, generator=generator)
    cursor = 0
    trained = nn.ModuleDict({"encoder": encoder, "text": text_encoder, "scale": scale_module,
                             **({"head": head} if head is not None else {})})
    first, before = 0, 0.0
    if checkpoint is not None and Path(checkpoint).is_file():
        first, order, cursor, history, before = _load_state(checkpoint, trained, optimizer, generator, device)
    start = time.perf_counter()
    bar = _progress(steps) if progress else None
    if bar is not None:
        bar.update(first)
    for step in range(first, steps):
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        index = order[cursor : cursor + batch_size]
        cursor += batch_size
        mask = tokens["attention_mask"][index]  # [b, T]
        length = int(mask.sum(1).max())
        ids = tokens["input_ids"][index, :length]  # [b, t]
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, steps, lr, warmup)

        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = encoder(random_shift(images[index], shift, generator).to(device))
        out_tokens, out_embedding = out.tokens.float(), out.embedding.float()  # losses in float32
        loss = torch.zeros((), device=device)
        if use_text and step % contrastive_every == 0:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                text_embeddings = text_encoder(ids, mask[:, :length]).float()  # [b, p]
            batch_labels = None
            if labels is not None:
                batch_labels = labels[index].to(device)  # [b, L]
                if signed_labels:
                    batch_labels = 2 * batch_labels - 1
            contrastive = medclip_loss(out_embedding, text_embeddings, scale_module(), batch_labels, batch_labels)
            loss = loss + contrastive_weight * contrastive
            history["loss_contrastive"].append(contrastive.item())
        else:
            history["loss_contrastive"].append(None)
        if head is not None:
            supervised = label_loss(head, out_tokens, labels[index].to(device), pos_weight)
            if dense_weight > 0:
                supervised = supervised + dense_weight * dense_label_loss(
                    head, out_tokens, token_labels[index].to(device), pos_weight)
            loss = loss + label_weight * supervised
            history["loss_labels"].append(supervised.item())
        else:
            history["loss_labels"].append(None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scale_module.clamp_()

        history["step"].append(step)
        history["loss"].append(loss.item())
        if bar is not None:
            bar.update(1)
            if step % log_every == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        if checkpoint is not None and (step + 1) % save_every == 0 and step + 1 < steps:
            _save_state(checkpoint, trained, optimizer, generator, step + 1, order, cursor, history, device,
                        seconds=before + time.perf_counter() - start)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    encoder.to(memory_format=torch.contiguous_format)
    encoder.eval()
    text_encoder.eval()
    if head is not None:
        head.eval()
    history.update(
        logit_scale=scale_module().item(),
        label_head=head,
        seconds=before + seconds,  # summed over resumed segments
        resumed_from=first,
        images_per_second=(steps - first) * batch_size / max(seconds, 1e-9),
        bf16=use_bf16,
    )
    return history


def _save_state(path: str | os.PathLike, trained: nn.Module, optimizer: torch.optim.Optimizer,
                generator: torch.Generator, step: int, order: torch.Tensor, cursor: int, history: dict,
                device: torch.device = torch.device("cpu"), seconds: float = 0.0) -> None:
    """Weights *and buffers* (BatchNorm statistics), optimiser, RNGs and data order, one file;
    ``seconds``: training time spent to reach ``step``.

    On a GPU the CUDA generator is saved too: the text encoder's dropout draws from it there."""
    from ..run_folder import save_weights
    from .checkpoint import optimizer_state

    tensors = {f"state.{k}": v.detach().clone() for k, v in trained.state_dict().items()}
    optim_tensors, groups = optimizer_state(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.generator"] = generator.get_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    tensors["order"] = order
    metadata = {"step": str(step), "cursor": str(cursor), "history": json.dumps(history),
                "optimizer_groups": groups, "seconds": f"{seconds:.3f}"}
    save_weights(path, tensors, metadata)


def _load_state(path: str | os.PathLike, trained: nn.Module, optimizer: torch.optim.Optimizer,
                generator: torch.Generator, device: torch.device = torch.device("cpu")
                ) -> tuple[int, torch.Tensor, int, dict, float]:
    """Restore :func:`_save_state`'s file; ``(step, order, cursor, history, seconds)``."""
    from ..run_folder import check_shapes, load_weights
    from .checkpoint import load_optimizer_state

    tensors, metadata = load_weights(path)
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    check_shapes(path, {k: tuple(v.shape) for k, v in trained.state_dict().items()}, "this training run",
                 found={k: tuple(v.shape) for k, v in state.items()})
    trained.load_state_dict(state)
    load_optimizer_state(optimizer, tensors, metadata["optimizer_groups"])
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return (int(metadata["step"]), tensors["order"], int(metadata["cursor"]), json.loads(metadata["history"]),
            float(metadata.get("seconds", 0.0)))


def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encoder pretraining", leave=False)
