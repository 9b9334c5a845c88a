"""Explaining the released XrayGPT (EVA ViT + Q-Former + llama_proj) on a reduced release in the
released key layouts: every map kind, the Q-Former attention read from the model's own forward
pass, the relevance rules on hand-built attention, and the command line, evaluation and chat panel
on a release run folder."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from test_attribution import ANSWER as TINY_ANSWER
from test_attribution import small_model as tiny_model
from test_released import (HEADS, LAYOUT, QF_HEADS, QF_WIDTH, VIT_BLOCKS, VIT_HEADS, VIT_WIDTH, blip2_state,
                           bert_attention, eva_forward, eva_state)
from xraygpt_lab.interpret.attention import llm_image_attention
from xraygpt_lab.interpret.attribution import ALL_METHODS, MAP_KINDS, attribute, explain, make_baseline, map_kinds
from xraygpt_lab.interpret.qformer_attention import (StackAttention, cross_attention_maps, query_relevance,
                                                     record_attention)
from xraygpt_lab.interpret.stacks import vision_stack
from xraygpt_lab.interpret.targets import phrase_target
from xraygpt_lab.models.reduced_release import write_reduced_release
from xraygpt_lab.models.released import BLIP2_SPACE, CLIP_MEAN, CLIP_STD, load_release

ANSWER = "There is a small left pleural effusion."
PHRASE = "left pleural effusion"
SIZE = LAYOUT.image


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> dict:
    return write_reduced_release(tmp_path_factory.mktemp("release"), LAYOUT, seed=0)


@pytest.fixture(scope="module")
def model(release):
    return load_release(release["vit"], release["qformer"], release["checkpoint"], release["llm"], device="cpu",
                        **HEADS)


@pytest.fixture(scope="module")
def target(model):
    return phrase_target(model, PHRASE, ANSWER)


@pytest.fixture()
def pixels() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))  # [1, 3, S, S]


# --------------------------------------------------------------------------- the model's own attention


def _softmax_heads(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """``softmax(QKᵀ/√d)`` per head: ``[H, n_q, n_k]`` for one image ``q`` ``[n_q, D]``, ``k`` ``[n_k, D]``."""
    d = q.shape[-1] // heads
    q, k = (t.view(t.shape[0], heads, d).transpose(0, 1) for t in (q, k))
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)


def test_recorded_attention_is_what_the_original_forward_computes(model, pixels) -> None:
    """ViT block 0 and the first Q-Former cross-attention, recomputed from the state dicts (the
    original EVA / BERT forward written in test_released) equal what the hooks record."""
    recorded = record_attention(model.encoder, pixels)
    n_patches = (SIZE // LAYOUT.patch) ** 2
    assert len(recorded.weights["vision"]) == VIT_BLOCKS - 1 and len(recorded.weights["query"]) == LAYOUT.qf_layers
    assert recorded.cross_layers == (0, 2) and recorded.grid == (SIZE // LAYOUT.patch,) * 2
    assert recorded.weights["cross"][0].shape == (QF_HEADS, LAYOUT.queries, 1 + n_patches)
    for group in recorded.weights.values():
        for w in group:
            assert torch.allclose(w.sum(dim=-1), torch.ones(w.shape[:-1]), atol=1e-5)  # rows are distributions
    eva, blip2 = eva_state(), blip2_state()
    x = eva_forward(eva, pixels, 0)[0]  # [T, D] embeddings
    h = F.layer_norm(x, (VIT_WIDTH,), eva["blocks.0.norm1.weight"], eva["blocks.0.norm1.bias"], eps=1e-6)
    qkv = eva["blocks.0.attn.qkv.weight"]
    q = h @ qkv[:VIT_WIDTH].T + eva["blocks.0.attn.q_bias"]
    k = h @ qkv[VIT_WIDTH:2 * VIT_WIDTH].T
    assert torch.allclose(recorded.weights["vision"][0], _softmax_heads(q, k, VIT_HEADS), atol=1e-5)
    image = eva_forward(eva, pixels, VIT_BLOCKS - 1)
    image = F.layer_norm(image, (VIT_WIDTH,), blip2["ln_vision.weight"], blip2["ln_vision.bias"], eps=1e-5)[0]
    b = "Qformer.bert."
    queries = F.layer_norm(blip2["query_tokens"], (QF_WIDTH,), blip2[b + "embeddings.LayerNorm.weight"],
                           blip2[b + "embeddings.LayerNorm.bias"], eps=1e-12)
    queries = bert_attention(blip2, b + "encoder.layer.0.attention.", queries, queries)[0]  # after self-attention
    p = b + "encoder.layer.0.crossattention.self."
    q = queries @ blip2[p + "query.weight"].T + blip2[p + "query.bias"]
    k = image @ blip2[p + "key.weight"].T + blip2[p + "key.bias"]
    assert torch.allclose(recorded.weights["cross"][0], _softmax_heads(q, k, QF_HEADS), atol=1e-5)


def _built(vision: torch.Tensor, query: torch.Tensor, cross: torch.Tensor, grads: dict | None = None) -> StackAttention:
    """One ViT block, one Q-Former layer with cross-attention, one head each, on a 2 × 2 patch grid."""
    return StackAttention(weights={"vision": [vision[None]], "query": [query[None]], "cross": [cross[None]]},
                          grid=(2, 2), cross_layers=(0,), grads=grads)


def test_relevance_and_cross_attention_follow_the_rules_on_built_attention() -> None:
    """Tokens: [CLS], patches 0-3. In the ViT, patch 0 reads only patch 3; query 0 reads patch 0,
    query 1 reads patch 2 (queries attend only to themselves)."""
    eye5 = torch.eye(5)
    vision = eye5.clone()
    vision[1] = eye5[4]  # token 1 (patch 0) attends to token 4 (patch 3)
    cross = torch.stack([eye5[1], eye5[3]])  # [Q=2, T=5]
    built = _built(vision, torch.eye(2), cross)
    maps = cross_attention_maps(built)  # query 0: patch 0 by its residual, patch 3 by the ViT's mixing
    np.testing.assert_allclose(maps[0].flatten().numpy(), [0.5, 0, 0, 0.5], atol=1e-6)
    np.testing.assert_allclose(maps[1].flatten().numpy(), [0, 0, 1, 0], atol=1e-6)
    # R_ii = I + A; R̄_ii = A + I; R_qq = 2I (R̄_qq = 2I); R_qi = R̄_qqᵀ · C · R̄_ii (Chefer et al. Eq. 10)
    relevance = query_relevance(built, "attention")
    np.testing.assert_allclose(relevance.numpy(), [[0, 2, 0, 0, 2], [0, 0, 0, 4, 0]], atol=1e-9)
    # gradient weighting: a negative gradient on query 1's cross-attention removes it
    ones = {"vision": [torch.ones(1, 5, 5)], "query": [torch.ones(1, 2, 2)], "cross": [torch.ones(1, 2, 5)]}
    ones["cross"][0][0, 1] = -1.0
    gradient = query_relevance(_built(vision, torch.eye(2), cross, grads=ones), "gradient")
    np.testing.assert_allclose(gradient.numpy(), [[0, 2, 0, 0, 2], [0, 0, 0, 0, 0]], atol=1e-9)
    # a query that attends to the other inherits, per Eq. 10's transpose, the readings of the queries reading it
    leaning = query_relevance(_built(vision, torch.tensor([[0.0, 1.0], [0.0, 1.0]]), cross), "attention")
    np.testing.assert_allclose(leaning.numpy(), [[0, 1, 0, 0, 1], [0, 1, 0, 4, 1]], atol=1e-9)  # R̄_qq = [[1, 1], [0, 2]]


# --------------------------------------------------------------------------- every map kind


@pytest.mark.parametrize("method", MAP_KINDS)
def test_every_map_kind_runs_on_the_released_model(model, target, pixels, method) -> None:
    assert map_kinds(model) == MAP_KINDS and map_kinds(tiny_model()) == ALL_METHODS
    kwargs = {"n_steps": 4} if method in ("ig", "layer_ig", "feature_ig") else {}
    torch.manual_seed(0)
    result = explain(target, pixels, method, **kwargs)
    assert result.method == method and result.baseline
    assert result.map.shape == (SIZE, SIZE) and np.isfinite(result.map).all()
    assert np.abs(result.map).max() > 0, "a map of zeros explains nothing"
    if method != "cross_attention" and method != "rollout":  # the target-free ones have no score
        assert np.isfinite(result.score) and result.score < 0  # a log-probability
    grid = SIZE // LAYOUT.patch
    expected = {"gradcam": f"token grid {grid}x{grid}", "feature_ig": f"feature map {grid}x{grid} (stride {LAYOUT.patch})",
                "rollout": f"patch grid {grid}x{grid}", "grad_rollout": f"patch grid {grid}x{grid}",
                "cross_attention": f"patch grid {grid}x{grid}", "ig": "pixel", "saliency": "pixel"}
    if method in expected:
        assert result.resolution == expected[method]
    if method in ("layer_ig", "attention"):
        assert result.resolution.startswith(f"patch grid {grid}x{grid} ({LAYOUT.queries} query tokens")


def test_cross_attention_is_refused_for_the_tiny_model() -> None:
    small = tiny_model()
    with pytest.raises(ValueError, match="cross_attention reads a Q-Former"):
        explain(phrase_target(small, "pleural effusion", TINY_ANSWER), torch.zeros(1, 1, 32, 32), "cross_attention")


def test_ig_on_rgb_pixels_is_complete_against_clip_black(model, target, pixels) -> None:
    """Baselines live in BLIP-2's pixel space: black is RGB 0 under CLIP's mean / std, and IG's map
    (the channels summed) adds up to f(x) − f(black) (Sundararajan et al. 2017, completeness)."""
    black, name = make_baseline(pixels, "black", BLIP2_SPACE)
    rgb = black * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(rgb, torch.zeros_like(rgb), atol=1e-6) and "black" in name
    assert make_baseline(pixels, "mean", BLIP2_SPACE)[1] == "CLIP mean colour"
    result = explain(target, pixels, "ig", baseline="black", n_steps=48)
    with torch.no_grad():
        gap = float(target(pixels) - target(black))
    assert abs(gap) > 1e-3
    assert result.raw.shape == (3, SIZE, SIZE)
    assert result.map.sum() == pytest.approx(gap, rel=0.05, abs=1e-3)
    np.testing.assert_allclose(result.map, result.raw.sum(dim=0).numpy(), rtol=1e-6)
    gated = explain(target, pixels, "ig", baseline=["blur", "black"], gate=True, gate_steps=4, n_steps=4)
    assert gated.resolution == f"pixel, gated by feature IG (stride {LAYOUT.patch})"  # one spatial map in a ViT


def test_layer_ig_spreads_each_query_total_over_where_it_reads(model, target, pixels) -> None:
    result = explain(target, pixels, "layer_ig", baseline="black", n_steps=32)
    per_query = result.raw.sum(dim=-1)  # [Q] attribution of each image token the LLM reads
    layout = vision_stack(model.encoder).layout(pixels)  # [Q, rows, cols], each map sums to 1
    assert layout.shape == (LAYOUT.queries, SIZE // LAYOUT.patch, SIZE // LAYOUT.patch)
    np.testing.assert_allclose(layout.sum(dim=(1, 2)).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.grid, torch.einsum("q,qhw->hw", per_query, layout).numpy(), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        gap = float(target(pixels) - target(make_baseline(pixels, "black", BLIP2_SPACE)[0]))
    assert result.grid.sum() == pytest.approx(gap, rel=0.05, abs=1e-3)  # completeness at the projection


def test_llm_attention_to_the_query_tokens_is_spread_by_their_cross_attention(model, target, pixels) -> None:
    attention = llm_image_attention(target, pixels)
    layers, heads = model.llm.config.num_hidden_layers, model.llm.config.num_attention_heads
    k = int(target._prepared()["token_ids"].numel())
    assert attention.weights.shape == (layers, heads, k, LAYOUT.queries)  # [L, H, K, Q]
    assert attention.tokens == target.target_token_texts
    assert float(attention.image_share.max()) <= 1.0 + 1e-6
    maps = attention.grid_maps()  # [K, rows, cols]
    np.testing.assert_allclose(maps.numpy(), torch.einsum("kq,qhw->khw", attention.aggregate(),
                                                           attention.layout).numpy(), rtol=1e-6)
    np.testing.assert_allclose(maps.sum(dim=(1, 2)).numpy(), attention.aggregate().sum(dim=1).numpy(), rtol=1e-5)


class _PixelBlock(torch.nn.Module):
    """Reads a block of pixels directly: no attention on its path."""

    def __init__(self, encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.description = "pixels of a block"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.encoder.encode_tokens(pixel_values)  # the attention runs, but the score does not use it
        return pixel_values[:, :, :8, :8].sum(dim=(1, 2, 3))


class _PatchEnergy(torch.nn.Module):
    """Energy of one ViT output patch token (after ln_vision), read through ``hook_vision``."""

    def __init__(self, encoder, patch: int) -> None:
        super().__init__()
        self.encoder, self.patch = encoder, patch
        self.description = f"energy of patch {patch}"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.encoder.vision(pixel_values=pixel_values).last_hidden_state
        return self.encoder.hook_vision(out)[:, 1 + self.patch].pow(2).sum(dim=-1)  # [B]


def test_gradient_rollout_is_zero_for_a_target_blind_to_attention(model, pixels) -> None:
    result = explain(_PixelBlock(model.encoder), pixels, "grad_rollout")
    assert np.abs(result.map).max() == 0.0
    assert np.abs(explain(phrase_target(model, PHRASE, ANSWER), pixels, "grad_rollout").map).max() > 0


def test_gradcam_on_the_vit_block_lights_the_patch_the_target_reads(model, pixels) -> None:
    grid = SIZE // LAYOUT.patch
    for patch in (5, 14):
        result = explain(_PatchEnergy(model.encoder, patch), pixels, "gradcam")
        assert result.grid.shape == (grid, grid)
        assert int(np.argmax(result.grid)) == patch, (patch, result.grid)


def test_occlusion_greys_out_whole_pixels_in_every_channel(model, target, pixels) -> None:
    occ = attribute(target, pixels, "occlusion", occlusion_window=8, occlusion_stride=8, baseline="black")[0]
    raw = occ.raw  # [3, S, S]: Captum's per-feature values, equal across channels for a whole-pixel window
    assert torch.allclose(raw[0], raw[1]) and torch.allclose(raw[1], raw[2])
    np.testing.assert_allclose(occ.map, raw[0].numpy(), rtol=1e-6)
    with torch.no_grad():  # one window = the score drop when that 8 × 8 block turns black in RGB
        covered = pixels.clone()
        covered[..., :8, :8] = make_baseline(pixels, "black", BLIP2_SPACE)[0][..., :8, :8]
        drop = float(target(pixels) - target(covered))
    assert float(occ.map[0, 0]) == pytest.approx(drop, rel=1e-4, abs=1e-6)


# --------------------------------------------------------------------------- the command line and the panel


@pytest.fixture(scope="module")
def release_run(release, tmp_path_factory):
    from xraygpt_lab.cli import main

    run = tmp_path_factory.mktemp("runs") / "released"
    argv = ["release", "init", "--vit", str(release["vit"]), "--qformer", str(release["qformer"]), "--checkpoint",
            str(release["checkpoint"]), "--llm", str(release["llm"]), "--out", str(run), "--no-checksums",
            "--vision-heads", str(LAYOUT.vit_heads), "--qformer-heads", str(LAYOUT.qf_heads)]
    assert main(argv) == 0
    return run


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "tall.png"
    Image.fromarray((np.random.default_rng(0).random((90, 50)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("method", MAP_KINDS)
def test_explain_command_draws_every_map_kind_for_a_release_run(release_run, image_path, tmp_path, capsys,
                                                               method) -> None:
    from xraygpt_lab.cli import main

    out = tmp_path / f"{method}.png"
    status = main(["explain", "--run", str(release_run), str(image_path), "--phrase", PHRASE, "--answer", ANSWER,
                   "--method", method, "--out", str(out), "--steps", "4", "--device", "cpu"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads(captured.out)
    assert result["method"] == method and result["model_size"] == SIZE and result["image_shape"] == [90, 50]
    row, col = result["peak"]
    assert 0 <= row < 90 and 0 <= col < 50
    # BLIP-2 stretches the image to the square: the model's peak maps back by the plain resize
    mr, mc = result["peak_model"]
    assert result["peak_model_in_image"] == [round((mr + 0.5) * 90 / SIZE - 0.5, 1), round((mc + 0.5) * 50 / SIZE - 0.5, 1)]
    assert out.is_file() and Image.open(out).format == "PNG"


def test_evaluate_command_scores_a_release_run(release_run, tmp_path, capsys) -> None:
    from xraygpt_lab.cli import main

    data = tmp_path / "synth"
    assert main(["synth", "--n", "2", "--seed", "5", "--out", str(data)]) == 0
    capsys.readouterr()
    out = tmp_path / "eval.json"
    status = main(["evaluate", "--run", str(release_run), "--data", str(data), "--out", str(out),
                   "--max-new-tokens", "4", "--device", "cpu"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 2 and len(metrics["examples"]) == 2 and "vs_ground_truth" in metrics
    assert 0.0 <= metrics["rougeL"] <= 1.0 and "image_blind" in metrics["baselines"]


def test_chat_panel_opens_a_release_run_answers_and_explains(release, tmp_path) -> None:
    """The panel on a release run folder: BLIP-2's pixels, a streamed answer, and an Explain map
    (the LLM of this reduced release holds 512 positions, enough for MiniGPT-4's system prompt)."""
    from dataclasses import replace

    from xraygpt_lab.cli import main
    from xraygpt_lab.widgets import ChatPanel

    files = write_reduced_release(tmp_path / "files", replace(LAYOUT, llm_context=512), seed=0)
    run = tmp_path / "run"
    assert main(["release", "init", "--vit", str(files["vit"]), "--qformer", str(files["qformer"]), "--checkpoint",
                 str(files["checkpoint"]), "--llm", str(files["llm"]), "--out", str(run), "--no-checksums",
                 "--vision-heads", str(LAYOUT.vit_heads), "--qformer-heads", str(LAYOUT.qf_heads)]) == 0
    panel = ChatPanel(run, strict=True)
    panel.max_new_tokens.value = 6
    image = np.random.default_rng(1).random((40, 56)).astype(np.float32)
    assert panel.set_image(image, "random")
    assert panel.session.pixel_values.shape == (1, 3, SIZE, SIZE)
    torch.testing.assert_close(panel.session.pixel_values, panel.model.image_processor(image))
    answer = panel.send("Describe the given chest x-ray image in detail.")
    assert isinstance(answer, str) and panel.session.turns == 1
    explanation = panel.explain(method="gradcam")
    assert explanation is not None and explanation.heatmap.shape == (SIZE, SIZE)
    assert explanation.model_view.shape == (SIZE, SIZE) and 0 <= explanation.model_view.min()
    np.testing.assert_allclose(explanation.model_view, BLIP2_SPACE.to_grey(panel.session.pixel_values)[0], atol=1e-6)
    assert bytes(panel.explanation_image.value).startswith(b"\x89PNG")
