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

import os
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..data.findings import RENDERED_OBSERVATIONS
from ..data.synthetic.lesions import ALLOWED_SIDES
from ..models.encoder import VisionEncoder
from ..models.medclip import LogitScale
from ..models.text_encoder import TextEncoder
from .label_supervision import TokenLabelHead, dense_label_loss, grade_loss, label_loss, positive_weights, random_shift
from .checkpoint import checkpoint_extra
from .loop import make_accelerator, train_stage
from .precision import resolve_bf16
from .schedule import StageConfig


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
    on_step: Callable[[str, dict], None] | None = None,
    repeats: torch.Tensor | None = None,
    grades: torch.Tensor | None = None,
    grade_weight: float = 0.0,
) -> dict:
    """Train ``encoder`` and ``text_encoder`` jointly with the MedCLIP loss.

    ``images`` ``[N, 1, S, S]`` (``data.images.preprocess`` outputs, stacked); ``texts`` the N
    paired reports; ``labels`` optional multi-hot ``[N, L]`` (use laterality-split columns so the
    targets tell left from right). It runs through :func:`train.loop.train_stage`, the loop of every
    stage (same resume, checkpoint and progress bar); batches are drawn without replacement per
    epoch in an order fixed by ``seed`` and the epoch. ``signed_labels`` maps 0/1 to −1/+1 before ``label_sim`` so that
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

    ``repeats`` ``[N]`` integers >= 1: how often each study appears in an epoch (oversampling of
    rare findings; None: once each). The label loss's positive weights are computed over the
    repeated set, so they describe what the encoder actually sees.

    ``grades`` ``[N, L]`` (``label_supervision.grade_targets``) with ``grade_weight > 0`` adds a
    second token head that reads each graded finding's size or severity off the tokens of its
    cells (``label_supervision.grade_loss``; needs ``token_labels``), weighted by ``grade_weight``;
    the history then holds ``grade_head``.

    ``bf16``: run the encoders' forward passes under bfloat16 autocast (losses, weights and the
    optimiser stay float32); ``"auto"`` turns it on where the hardware computes bf16 natively and,
    on a CPU, one step of this stage also runs faster that way (``train.precision``: about a
    quarter faster on one CPU with AVX-512 BF16, a fifth slower on another). The choice is saved
    with the checkpoint, so a resumed stage keeps it. Results differ from float32 by rounding.

    Training runs on ``encoder``'s device: the text encoder, the logit scale and the label head
    are moved there; ``images``, ``labels`` and ``token_labels`` may stay on the CPU (each batch is
    copied over).
    """

    resolve_bf16(bf16, "cpu")  # a bad value fails here, before any work
    _check_pretrain_inputs(encoder, images, texts, labels, token_labels, steps=steps, batch_size=batch_size,
                           contrastive_weight=contrastive_weight, label_weight=label_weight,
                           dense_weight=dense_weight, contrastive_every=contrastive_every)
    _check_grades(images.shape[0], token_labels, grades, grade_weight)
    pool = _sampling_pool(images.shape[0], repeats)  # [M] study indices, each appearing repeats[i] times
    torch.manual_seed(seed)
    device = next(encoder.parameters()).device
    use_text = contrastive_weight > 0
    head = None
    if label_weight > 0:
        head = label_head or TokenLabelHead(encoder.token_dim, labels.shape[1])
    model = EncoderPretraining(encoder, text_encoder if use_text else None, logit_scale or LogitScale(), head,
                               contrastive_weight=contrastive_weight, label_weight=label_weight,
                               dense_weight=dense_weight, signed_labels=signed_labels,
                               pos_weight=positive_weights(labels[pool], power=pos_weight_power) if head else None,
                               grade_head=TokenLabelHead(encoder.token_dim, grades.shape[1]) if grade_weight > 0 else None,
                               grade_weight=grade_weight)
    model.to(device)
    batch_size = min(batch_size, pool.shape[0])
    warmup = max(1, steps // 20) if warmup is None else warmup
    # linear warmup from lr / warmup, then cosine decay to 10 % of lr
    stage = StageConfig(name="encoder", steps=steps, batch_size=batch_size, init_lr=lr, min_lr=0.1 * lr,
                        warmup_lr=lr / warmup, warmup_steps=warmup, weight_decay=weight_decay, seed=seed,
                        save_every=save_every)
    make_batch = _pretrain_batches(images, text_encoder.tokenize(list(texts)), labels, token_labels,
                                   batch_size=batch_size, seed=seed, shift=shift,
                                   contrastive_every=contrastive_every if use_text else 0, pool=pool,
                                   grades=grades if grade_weight > 0 else None)
    # channels-last convolutions: ~15 % faster encoder steps on CPU (oneDNN), same results up to
    # rounding; undone at the end (checkpoints save contiguous tensors)
    encoder.to(memory_format=torch.channels_last)
    try:
        use_bf16 = _stage_bf16(bf16, device, checkpoint, model, make_batch)
        result = train_stage(model, stage, make_batch, checkpoint, accelerator=make_accelerator(device),
                             progress=progress, bf16=use_bf16, after_step=model.scale.clamp_, on_step=on_step,
                             extra={"bf16": use_bf16})
    finally:
        encoder.to(memory_format=torch.contiguous_format)
        model.eval()
        text_encoder.eval()
    rows = result.history
    return {
        "step": [r["step"] - 1 for r in rows],
        "loss": [r["loss"] for r in rows],
        "loss_contrastive": [r.get("loss_contrastive") for r in rows],
        "loss_labels": [r.get("loss_labels") for r in rows],
        "loss_grades": [r.get("loss_grades") for r in rows],
        "lr": [r["lr"] for r in rows],
        "logit_scale": model.scale().item(),
        "label_head": head,
        "grade_head": model.grade_head,
        "seconds": result.seconds,  # summed over resumed segments
        "resumed_from": result.resumed_from,
        "images_per_second": len(rows) * batch_size / max(result.seconds, 1e-9),
        "bf16": use_bf16,
    }


def _stage_bf16(bf16: bool | str, device: torch.device, checkpoint: str | os.PathLike | None,
                model: nn.Module, make_batch: Callable[[int, random.Random], dict]) -> bool:
    """``bf16`` resolved for this stage: a resumed ``"auto"`` stage keeps its checkpoint's choice;
    otherwise :func:`~xraygpt_lab.train.precision.resolve_bf16` times one step's forward and
    backward pass (the first batch) both ways."""
    if bf16 != "auto":
        return resolve_bf16(bf16, device)
    if checkpoint is not None and os.path.isfile(checkpoint):
        recorded = checkpoint_extra(checkpoint).get("bf16")
        if isinstance(recorded, bool):
            return recorded
    batch = make_batch(0, random.Random(0))  # on the CPU, the only device the step is timed on

    def probe() -> None:
        model.train()
        model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)

    return resolve_bf16(bf16, device, probe=probe)


def _sampling_pool(n: int, repeats: torch.Tensor | None) -> torch.Tensor:
    """Study indices ``[M]`` an epoch draws from: ``0..n-1``, study ``i`` repeated ``repeats[i]`` times."""
    if repeats is None:
        return torch.arange(n)
    repeats = torch.as_tensor(repeats)
    if repeats.shape != (n,) or repeats.is_floating_point() or repeats.is_complex() or bool((repeats < 1).any()):
        raise ValueError(f"repeats must be {n} integers >= 1 (one per image), got {repeats.dtype} "
                         f"of shape {list(repeats.shape)}")
    return torch.repeat_interleave(torch.arange(n), repeats.long())


def _check_pretrain_inputs(encoder: VisionEncoder, images: torch.Tensor, texts: Sequence[str],
                           labels: torch.Tensor | None, token_labels: torch.Tensor | None, *, steps: int,
                           batch_size: int, contrastive_weight: float, label_weight: float, dense_weight: float,
                           contrastive_every: int) -> None:
    """Refuse inputs :func:`pretrain_encoder` cannot train on, with a message naming the argument."""
    n = images.shape[0]
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


def _check_grades(n: int, token_labels: torch.Tensor | None, grades: torch.Tensor | None, grade_weight: float) -> None:
    if grade_weight < 0:
        raise ValueError(f"grade_weight must be >= 0, got {grade_weight}")
    if grade_weight > 0 and (grades is None or token_labels is None or grades.dim() != 2
                             or grades.shape != (n, token_labels.shape[2])):
        got = None if grades is None else list(grades.shape)
        raise ValueError(f"grade_weight > 0 needs token_labels and grades [N={n}, L] over the same columns; got {got}")


def _pretrain_batches(images: torch.Tensor, tokens: dict[str, torch.Tensor], labels: torch.Tensor | None,
                      token_labels: torch.Tensor | None, *, batch_size: int, seed: int, shift: int,
                      contrastive_every: int, pool: torch.Tensor,
                      grades: torch.Tensor | None = None) -> Callable[[int, random.Random], dict]:
    """``make_batch(step, rng)`` for :func:`train.loop.train_stage`: a pure function of the step.

    Each epoch visits every entry of ``pool`` (study indices ``[M]``, :func:`_sampling_pool`)
    once, the last partial batch left out, in an order drawn from ``(seed, epoch)``; the shift
    augmentation draws from the step's ``rng``. ``contrastive_every = k`` marks every k-th step
    for the MedCLIP loss (0: never).
    """
    n = pool.shape[0]
    per_epoch = n // batch_size

    def make_batch(step: int, rng: random.Random) -> dict:
        epoch, slot = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        index = pool[order[slot * batch_size: (slot + 1) * batch_size]]
        mask = tokens["attention_mask"][index]  # [b, T]
        length = int(mask.sum(1).max())
        shifted = random_shift(images[index], shift, torch.Generator().manual_seed(rng.getrandbits(62)))
        return {"images": shifted,  # [b, 1, S, S]
                "ids": tokens["input_ids"][index, :length], "mask": mask[:, :length],  # [b, t]
                "labels": None if labels is None else labels[index],  # [b, L]
                "token_labels": None if token_labels is None else token_labels[index],  # [b, tokens, L]
                **({} if grades is None else {"grades": grades[index]}),  # [b, L]
                "contrastive": contrastive_every > 0 and step % contrastive_every == 0}

    return make_batch


@dataclass
class PretrainOutput:
    """One step's loss and its named parts (None for a part this step skipped)."""

    loss: torch.Tensor
    parts: dict[str, float | None]


class EncoderPretraining(nn.Module):
    """The modules MedCLIP-style pretraining trains, and their loss as one ``forward``.

    ``loss = contrastive_weight · MedCLIP loss (Wang et al. 2022, Sec. 3) + label_weight · (token
    MIL label loss + dense_weight · per-token loss) + grade_weight · grade loss`` (a second head,
    ``label_supervision.grade_loss``); the parts are computed in float32.
    """

    def __init__(self, encoder: VisionEncoder, text_encoder: TextEncoder | None, scale: LogitScale,
                 head: TokenLabelHead | None, *, contrastive_weight: float, label_weight: float,
                 dense_weight: float, signed_labels: bool, pos_weight: torch.Tensor | None,
                 grade_head: TokenLabelHead | None = None, grade_weight: float = 0.0) -> None:
        super().__init__()
        self.encoder, self.text_encoder, self.scale, self.head = encoder, text_encoder, scale, head
        self.grade_head, self.grade_weight = grade_head, grade_weight
        self.contrastive_weight, self.label_weight, self.dense_weight = contrastive_weight, label_weight, dense_weight
        self.signed_labels = signed_labels
        self.register_buffer("pos_weight", pos_weight, persistent=False)  # [L] or None

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None,
                token_labels: torch.Tensor | None, contrastive: bool,
                grades: torch.Tensor | None = None) -> PretrainOutput:
        out = self.encoder(images)
        device = images.device.type
        parts: dict[str, float | None] = {"loss_contrastive": None, "loss_labels": None}
        text_embeddings = self.text_encoder(ids, mask) if contrastive and self.text_encoder is not None else None
        with torch.autocast(device, enabled=False):  # the losses in float32
            out_tokens, out_embedding = out.tokens.float(), out.embedding.float()  # [b, N, d], [b, p]
            loss = torch.zeros((), device=images.device)
            if text_embeddings is not None:
                batch_labels = None if labels is None else (2 * labels - 1 if self.signed_labels else labels)
                part = medclip_loss(out_embedding, text_embeddings.float(), self.scale(), batch_labels, batch_labels)
                loss = loss + self.contrastive_weight * part
                parts["loss_contrastive"] = round(part.item(), 5)
            if self.head is not None:
                part = label_loss(self.head, out_tokens, labels, self.pos_weight)
                if self.dense_weight > 0:
                    part = part + self.dense_weight * dense_label_loss(self.head, out_tokens, token_labels,
                                                                       self.pos_weight)
                loss = loss + self.label_weight * part
                parts["loss_labels"] = round(part.item(), 5)
            if self.grade_head is not None and grades is not None:
                part = grade_loss(self.grade_head, out_tokens, token_labels, grades)
                loss = loss + self.grade_weight * part
                parts["loss_grades"] = round(part.item(), 5)
        return PretrainOutput(loss, parts)
