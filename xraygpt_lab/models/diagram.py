"""Pictures of the model, drawn from the model itself: the architecture and the splice.

* :func:`architecture_figure` — film → frozen encoder → the one trainable linear layer → frozen
  LLM → answer, with the prompt above; sizes and parameter counts come from
  :class:`ArchitectureSizes` (``from_model`` for a loaded run, ``full()`` for the paper's MedCLIP
  + Vicuna-7B; XrayGPT arXiv 2306.07971, Fig. 1 and Sec. 3).
* :func:`splice_figure` — the exact sequence :meth:`XrayGPT.prompt_wrap` builds for one training
  example: BOS, the template, the image tokens in the ``<ImageHere>`` slot, the instruction, the
  answer and ``###``, each position coloured by its part and marked when it carries the loss.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np

from .conversation import IMAGE_PLACEHOLDER, xraygpt_prompt

FROZEN, TRAINED, TEXT = "#dbe4f0", "#f6c85f", "#222222"
#: Colours of the splice's parts (bos, template, image, instruction, answer, end symbol).
PART_COLOURS = {"BOS": "#9e9e9e", "template": "#c7d7ee", "image": "#f6c85f", "instruction": "#b8e0c2",
                "answer": "#f4b6b6", "end ###": "#d9a3d9"}


@dataclass(frozen=True)
class ArchitectureSizes:
    """What the architecture figure states (counts are parameters)."""

    encoder: str  # e.g. "MedCLIP, Swin-tiny"
    image_size: int
    tokens: int  # image tokens the LLM reads
    d_vision: int
    d_llm: int
    llm: str  # e.g. "Vicuna-7B (LLaMA)"
    llm_layers: int
    encoder_params: int
    projection_params: int
    llm_params: int

    @classmethod
    def from_model(cls, model: Any, encoder: str = "Swin (tiny profile)", llm: str = "LLaMA (tiny profile)"
                   ) -> "ArchitectureSizes":
        """Read the sizes off a loaded ``XrayGPT``."""
        count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        return cls(encoder=encoder, image_size=int(model.encoder.config.image_size),
                   tokens=int(model.num_image_tokens), d_vision=int(model.projection.in_features),
                   d_llm=int(model.projection.out_features), llm=llm,
                   llm_layers=int(model.llm.config.num_hidden_layers), encoder_params=count(model.encoder),
                   projection_params=count(model.projection), llm_params=count(model.llm))

    @classmethod
    def full(cls) -> "ArchitectureSizes":
        """The paper's design: MedCLIP's Swin-tiny (224 px, 7 × 7 tokens of 768) and Vicuna-7B
        (32 layers, 4096 wide; LLaMA-7B's 6,738,415,616 parameters)."""
        return cls(encoder="MedCLIP, Swin-tiny", image_size=224, tokens=49, d_vision=768, d_llm=4096,
                   llm="Vicuna-7B (LLaMA)", llm_layers=32, encoder_params=27_519_354,
                   projection_params=768 * 4096 + 4096, llm_params=6_738_415_616)


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)


def _box(ax, x, y, w, h, title, lines, colour) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=colour,
                                edgecolor="#555555", linewidth=1.2))
    ax.text(x + w / 2, y + h - 0.15, title, ha="center", va="top", fontsize=12, weight="bold", color=TEXT)
    ax.text(x + w / 2, y + h - 0.55, "\n".join(lines), ha="center", va="top", fontsize=9.5, color=TEXT,
            linespacing=1.4)


def _arrow(ax, start, end, label: str = "", side: str = "above") -> None:
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, linewidth=1.5, color="#444444"))
    x, y = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
    place = {"above": (x, max(start[1], end[1]) + 0.1, "center", "bottom"),
             "right": (x + 0.12, y, "left", "center")}
    px, py, ha, va = place[side]
    ax.text(px, py, label, ha=ha, va=va, fontsize=9, color="#444444")


def architecture_figure(sizes: ArchitectureSizes, film: np.ndarray | None = None, answer: str = "",
                        instruction: str = "Describe the given chest x-ray image in detail."):
    """Film → frozen encoder → trained linear layer → frozen LLM → answer; returns the ``Figure``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4.6), dpi=100)
    ax.set_xlim(0, 12.4)
    ax.set_ylim(-0.6, 4.1)
    ax.axis("off")
    if film is not None:
        ax.imshow(film, cmap="gray", vmin=0, vmax=1, extent=(0.1, 1.7, 0.95, 2.55))
    else:
        ax.add_patch(plt.Rectangle((0.1, 0.95), 1.6, 1.6, facecolor="#333333"))
    ax.text(0.9, 0.8, f"radiograph, {sizes.image_size} px", ha="center", va="top", fontsize=9)
    side = int(round(sizes.tokens ** 0.5))
    grid = f"{side} × {side}" if side * side == sizes.tokens else str(sizes.tokens)
    _box(ax, 2.1, 0.8, 2.4, 1.9, "Vision encoder", [sizes.encoder, f"frozen, {_count(sizes.encoder_params)}",
                                                      f"{grid} tokens × {sizes.d_vision}"], FROZEN)
    _box(ax, 5.0, 1.05, 1.6, 1.4, "Linear", [f"{sizes.d_vision} → {sizes.d_llm}",
                                             f"trained, {_count(sizes.projection_params)}"], TRAINED)
    _box(ax, 7.2, 0.8, 2.4, 1.9, "Language model", [sizes.llm, f"{sizes.llm_layers} layers, {sizes.d_llm} wide",
                                                      f"frozen, {_count(sizes.llm_params)}"], FROZEN)
    _arrow(ax, (1.75, 1.75), (2.05, 1.75))
    _arrow(ax, (4.55, 1.75), (4.95, 1.75))
    ax.text(6.3, 3.75, xraygpt_prompt(instruction), ha="center", va="center", fontsize=9.5, family="monospace",
            bbox={"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": "#999999"})
    _arrow(ax, (5.8, 2.5), (4.6, 3.45), f"{sizes.tokens} embeddings\nreplace {IMAGE_PLACEHOLDER}", side="right")
    _arrow(ax, (8.4, 3.45), (8.4, 2.75), "the whole prompt", side="right")
    _arrow(ax, (9.65, 1.75), (10.0, 1.75))
    ax.text(10.1, 1.75, textwrap.fill(answer or "the answer, then ###", 22), ha="left", va="center", fontsize=9.5,
            style="italic")
    share = 100 * sizes.projection_params / (sizes.encoder_params + sizes.projection_params + sizes.llm_params)
    ax.text(0.1, -0.3, f"Only the yellow box learns ({share:.2g} % of the parameters); the blue boxes never change.",
            fontsize=10.5, va="center")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class SplicePosition:
    """One position of the spliced sequence."""

    part: str  # a key of PART_COLOURS
    text: str  # the token's text ("img 3" for an image token)
    loss: bool  # the position's label is a target token


def splice_positions(model: Any, instruction: str, answer: str) -> list[SplicePosition]:
    """The positions :meth:`XrayGPT.prompt_wrap` builds for one example, with their part and loss flag.

    Read off the wrapped batch itself (input ids, image positions, labels); the instruction's
    tokens are found by their character offsets in the text after the image slot.
    """
    import torch

    prompt = xraygpt_prompt(instruction)
    dummy = torch.zeros(1, model.num_image_tokens, model.projection.out_features)  # [1, N, d_llm]
    with torch.no_grad():
        wrapped = model.prompt_wrap(dummy, [prompt], [answer])
    ids = wrapped.input_ids[0].tolist()
    labels = wrapped.labels[0].tolist()
    length = int(wrapped.attention_mask[0].sum())
    image = set(wrapped.image_positions[0].tolist())
    tok = model.tokenizer
    after = prompt.split(IMAGE_PLACEHOLDER)[1]
    start = after.index(instruction)
    enc = tok(after, add_special_tokens=False, return_offsets_mapping=True)
    instruction_tokens = [s < start + len(instruction) and e > start for s, e in enc["offset_mapping"]]
    first_after = max(image) + 1
    end_ids = tok(model.end_sym, add_special_tokens=False)["input_ids"]
    target_positions = [i for i in range(length) if labels[i] != -100]
    end_start = target_positions[-len(end_ids)] if target_positions[-len(end_ids):] and \
        [ids[i] for i in target_positions[-len(end_ids):]] == end_ids else length
    positions = []
    for i in range(length):
        if i in image:
            part, text = "image", f"img {i - min(image)}"
        else:
            text = tok.convert_ids_to_tokens(ids[i]).replace("Ġ", " ").replace("▁", " ")
            if i == 0 and ids[i] == tok.bos_token_id:
                part = "BOS"
            elif labels[i] != -100:
                part = "end ###" if i >= end_start else "answer"
            elif first_after <= i < first_after + len(instruction_tokens) and instruction_tokens[i - first_after]:
                part = "instruction"
            else:
                part = "template"
        positions.append(SplicePosition(part, text, labels[i] != -100))
    return positions


def splice_figure(model: Any, instruction: str, answer: str, per_row: int = 24):
    """One cell per position of the spliced sequence, coloured by part; a green bar under each cell
    that carries the loss. Returns the ``Figure``."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    positions = splice_positions(model, instruction, answer)
    rows = (len(positions) + per_row - 1) // per_row
    fig, ax = plt.subplots(figsize=(13, 0.62 * rows + 1.1), dpi=100)
    for i, p in enumerate(positions):
        r, c = divmod(i, per_row)
        y = -r * 1.4
        ax.add_patch(Rectangle((c, y), 0.95, 0.9, facecolor=PART_COLOURS[p.part], edgecolor="white"))
        label = p.text.strip() or "␣"
        ax.text(c + 0.47, y + 0.45, label[:7], ha="center", va="center", fontsize=7, family="monospace",
                color=TEXT)
        if p.loss:
            ax.add_patch(Rectangle((c, y - 0.22), 0.95, 0.14, facecolor="#2e9e44"))
    ax.set_xlim(-0.2, per_row + 0.2)
    ax.set_ylim(-(rows - 1) * 1.4 - 0.5, 1.1)
    ax.axis("off")
    n_loss = sum(p.loss for p in positions)
    handles = [Patch(facecolor=c, label=k) for k, c in PART_COLOURS.items()]
    handles.append(Patch(facecolor="#2e9e44", label=f"carries the loss ({n_loss} of {len(positions)})"))
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=7, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


__all__ = ["ArchitectureSizes", "PART_COLOURS", "SplicePosition", "architecture_figure", "splice_figure",
           "splice_positions"]
