"""``models.diagram``: the pictures of the model state what the model is."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402
from test_attribution import ANSWER, small_model  # noqa: E402

from xraygpt_lab.models.conversation import xraygpt_prompt  # noqa: E402
from xraygpt_lab.models.diagram import (ArchitectureSizes, architecture_figure, splice_figure,  # noqa: E402
                                        splice_positions)
from xraygpt_lab.models.xraygpt import IGNORE_INDEX  # noqa: E402

INSTRUCTION = "Describe the given chest x-ray image in detail."


@pytest.fixture(scope="module")
def model():
    return small_model()


def test_splice_positions_follow_prompt_wrap(model) -> None:
    positions = splice_positions(model, INSTRUCTION, ANSWER)
    wrapped = model.prompt_wrap(torch.zeros(1, model.num_image_tokens, model.projection.out_features),
                                [xraygpt_prompt(INSTRUCTION)], [ANSWER])
    labels = wrapped.labels[0]
    assert len(positions) == int(wrapped.attention_mask[0].sum())
    assert [p.loss for p in positions] == (labels[: len(positions)] != IGNORE_INDEX).tolist()
    parts = [p.part for p in positions]
    assert parts[0] == "BOS" and parts.count("image") == model.num_image_tokens
    # the parts come in XrayGPT's order: BOS, template, image, template/instruction, answer, end
    order = ["BOS", "template", "image", "template", "instruction", "template", "answer", "end ###"]
    runs = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]
    assert runs == order, runs
    instruction = "".join(p.text for p in positions if p.part == "instruction").strip()
    assert instruction.replace(" ", "") == INSTRUCTION.replace(" ", "")
    assert all(p.loss for p in positions if p.part in ("answer", "end ###"))
    assert not any(p.loss for p in positions if p.part in ("BOS", "template", "image", "instruction"))


def test_figures_state_the_models_sizes(model) -> None:
    sizes = ArchitectureSizes.from_model(model)
    assert sizes.tokens == model.num_image_tokens and sizes.d_llm == model.projection.out_features
    assert sizes.projection_params == sum(p.numel() for p in model.projection.parameters())
    texts = [t.get_text() for t in architecture_figure(sizes).axes[0].texts]
    assert any(f"{sizes.d_vision} → {sizes.d_llm}" in t for t in texts)
    full = ArchitectureSizes.full()
    assert full.tokens == 49 and full.projection_params == 768 * 4096 + 4096
    legend = splice_figure(model, INSTRUCTION, ANSWER).axes[0].get_legend()
    assert "carries the loss" in legend.get_texts()[-1].get_text()


def test_the_readme_pictures_exist() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (root / "README.md").read_text())
    assert {"docs/images/architecture.png", "docs/images/splice.png"} <= set(pictures)
    for picture in pictures:
        assert (root / picture).is_file() and (root / picture).stat().st_size > 10_000, picture
