"""Attention maps: LLM → image slots, Swin windows scattered correctly, rollout variants."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_attribution import ANSWER, small_model
from xraygpt_lab.exercises.interpret import check_rollout, reference_rollout
from xraygpt_lab.interpret.attention import (attention_explanation, attention_rollout, eager_attention,
                                             gradient_rollout, llm_image_attention, merge_matrix,
                                             swin_attention_blocks)
from xraygpt_lab.interpret.targets import phrase_target


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture()
def pixels() -> torch.Tensor:
    return torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(5))


def test_llm_attention_is_the_models_own_weights_on_the_image_slots(model, pixels) -> None:
    target = phrase_target(model, "left pleural effusion", ANSWER)
    attention = llm_image_attention(target, pixels)
    layers, heads = model.llm.config.num_hidden_layers, model.llm.config.num_attention_heads
    k = int(target.token_mask.sum())
    assert attention.weights.shape == (layers, heads, k, 16)
    assert attention.tokens == target.target_token_texts
    # the same numbers straight from the LLM
    cache = target._prepared()
    with torch.no_grad(), eager_attention(model.llm):
        embeds = target.splice(model.embed_image(pixel_values=pixels))
        out = model.llm(inputs_embeds=embeds, attention_mask=cache["attention_mask"], output_attentions=True)
    start = cache["image_start"]
    for layer in range(layers):
        expected = out.attentions[layer][0][:, cache["predict_positions"], start:start + 16]  # [H, K, N]
        assert torch.allclose(attention.weights[layer], expected, atol=1e-6)
    assert model.llm.config._attn_implementation != "eager"  # restored afterwards
    assert bool((attention.image_share <= 1 + 1e-5).all()) and bool((attention.image_share > 0).all())
    grid = attention.grid_maps()  # [K, 4, 4], row-major: token i at (i // 4, i % 4)
    assert torch.allclose(grid[:, 1, 2], attention.aggregate()[:, 6])
    own = llm_image_attention(target, pixels, query="token")
    assert not torch.allclose(own.weights, attention.weights)
    explanation = attention_explanation(target, pixels)
    assert explanation.map.shape == (32, 32) and explanation.method == "attention"
    with pytest.raises(ValueError, match="query"):
        llm_image_attention(target, pixels, query="last")


def test_window_scatter_reproduces_swin_attention_output_with_shifted_windows(model, pixels) -> None:
    """Full matrix × values at original token positions == what Swin computed inside its windows."""
    encoder = model.encoder
    block = encoder.backbone.encoder.layers[0].blocks[1]  # 8 × 8 grid, window 4, shift 2
    seen = {}
    h1 = block.register_forward_pre_hook(lambda m, args: seen.update(hidden=args[0].detach()))
    h2 = block.attention.o_proj.register_forward_pre_hook(lambda m, args: seen.update(context=args[0].detach()))
    try:
        records = swin_attention_blocks(encoder, pixels)
    finally:
        h1.remove()
        h2.remove()
    record = next(r for r in records if r.stage == 0 and r.block == 1)
    assert (record.resolution, record.window, record.shift) == ((8, 8), 4, 2)
    heads = block.attention.num_attention_heads
    head_dim = block.attention.head_dim
    with torch.no_grad():
        values = block.attention.v_proj(block.layernorm_before(seen["hidden"]))[0]  # [n, C]
    index = record.window_index().flatten()  # window slot → token
    context = torch.zeros_like(values)
    context[index] = seen["context"].reshape(-1, values.shape[-1])  # back to token order
    n_windows = record.window_index().shape[0]
    for h in range(heads):
        full = record.full_matrix(values=record.weights[:n_windows, h])  # [n, n]
        assert torch.allclose(full.sum(-1), torch.ones(64), atol=1e-5)
        cols = slice(h * head_dim, (h + 1) * head_dim)
        assert torch.allclose(full @ values[:, cols], context[:, cols], atol=1e-5)
    # the shifted block mixes tokens across the unshifted windows' borders; block 0 does not
    plain = next(r for r in records if r.stage == 0 and r.block == 0).full_matrix()
    same_window = torch.tensor([(i // 8) < 4 and (i % 8) < 4 for i in range(64)])
    assert plain[0, ~same_window].abs().sum() == 0 and (plain[0, same_window] > 0).all()
    assert (record.full_matrix()[27, [28, 36, 37]] > 0).all()  # token (3,3) sees (3,4), (4,4) …


def test_merge_matrix_follows_swin_patch_merging_children() -> None:
    h, w = 4, 6
    ids = torch.arange(h * w, dtype=torch.float32).view(1, h, w, 1)
    children = torch.cat([ids[:, r::2, c::2, :] for c in range(2) for r in range(2)], dim=-1)  # HF's interleave
    children = children.view(-1, 4)  # [merged tokens, 4 child ids]
    m = merge_matrix((h, w))
    assert m.shape == (6, 24)
    for i in range(6):
        assert set(torch.nonzero(m[i]).flatten().tolist()) == set(children[i].long().tolist())
    assert torch.allclose(m.sum(-1), torch.ones(6))


def test_rollout_is_a_distribution_over_patches_and_residual_one_is_uniform(model, pixels) -> None:
    rollout = attention_rollout(model.encoder, pixels)
    assert rollout.shape == (8, 8)
    assert rollout.sum() == pytest.approx(1.0, abs=1e-5) and (rollout >= 0).all()
    uniform = attention_rollout(model.encoder, pixels, residual=1.0)
    np.testing.assert_allclose(uniform, np.full((8, 8), 1 / 64), atol=1e-7)
    assert not np.allclose(rollout, uniform)
    with pytest.raises(ValueError, match="residual"):
        attention_rollout(model.encoder, pixels, residual=1.5)


def test_gradient_rollout_is_zero_for_a_target_blind_to_attention(model, pixels) -> None:
    class Blind(torch.nn.Module):
        encoder = model.encoder

        def forward(self, x):  # reads the encoder but depends only on the raw pixels
            self.encoder(x)
            return x.sum(dim=(1, 2, 3))

    np.testing.assert_allclose(gradient_rollout(Blind(), pixels), 0.0)
    target = phrase_target(model, "pleural effusion", ANSWER)
    relevance = gradient_rollout(target, pixels)
    assert relevance.shape == (8, 8) and np.isfinite(relevance).all() and relevance.max() > 0


def test_rollout_checker_accepts_the_library_and_explains_a_wrong_order() -> None:
    assert check_rollout(reference_rollout)

    def wrong_order(attentions, residual):
        n = attentions[0].shape[0]
        r = torch.eye(n, dtype=torch.float64)
        for a in attentions:
            a = (1 - residual) * a + residual * torch.eye(n, dtype=torch.float64)
            r = r @ a
        return r

    result = check_rollout(wrong_order)
    assert not result and "LEFT" in str(result)
