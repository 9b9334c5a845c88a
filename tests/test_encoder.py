"""VisionEncoder: shapes, grid, hook points, attention, persistence, typed errors."""
from __future__ import annotations

import pytest
import torch

from xraygpt_lab.errors import RunFolderError
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder


def small_config(**overrides) -> EncoderConfig:
    base = dict(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, projection_dim=12)
    base.update(overrides)
    return EncoderConfig(**base)


def test_tiny_profile_sizes_match_documented_grid() -> None:
    config = EncoderConfig.tiny()
    assert config.image_size == 128
    assert config.grid == (4, 4)
    assert config.token_dim == 128
    encoder = VisionEncoder(config).eval()
    out = encoder(torch.randn(2, 1, 128, 128))
    assert out.tokens.shape == (2, 16, 128)
    assert out.pooled.shape == (2, 128)
    assert out.embedding.shape == (2, config.projection_dim)
    assert torch.allclose(out.embedding.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_full_profile_is_medclip_swin_tiny_layout() -> None:
    config = EncoderConfig.full()
    swin = config.to_swin_config()
    assert (swin.embed_dim, list(swin.depths), list(swin.num_heads), swin.window_size, swin.patch_size) == (
        96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 4
    )
    assert config.grid == (7, 7) and config.token_dim == 768 and config.projection_dim == 512
    encoder = VisionEncoder(config)
    assert encoder.projection.bias is None
    assert tuple(encoder.projection.weight.shape) == (512, 768)
    # swin-tiny has ~27.5 M parameters (Liu et al. 2021 Table 1 reports 28 M with the head)
    backbone = sum(p.numel() for p in encoder.backbone.parameters())
    assert 27_000_000 < backbone < 28_000_000


def test_pooled_is_swin_pooler_output_and_one_channel_is_repeated() -> None:
    encoder = VisionEncoder(small_config(num_channels=3)).eval()
    x = torch.randn(3, 1, 32, 32)
    out = encoder(x)
    reference = encoder.backbone(pixel_values=x.repeat(1, 3, 1, 1))
    assert torch.allclose(out.pooled, reference.pooler_output, atol=1e-6)
    assert torch.allclose(out.tokens, reference.last_hidden_state, atol=1e-6)
    expected = torch.nn.functional.normalize(out.pooled @ encoder.projection.weight.T, dim=-1)
    assert torch.allclose(out.embedding, expected, atol=1e-6)


def test_tokens_follow_the_grid_left_right() -> None:
    """A token's column is the image column: a bright blob on the right moves right-column tokens most."""
    torch.manual_seed(0)
    encoder = VisionEncoder(small_config(depths=[1], num_heads=[1], window_size=2)).eval()  # no merging
    rows, cols = encoder.grid
    assert (rows, cols) == (8, 8)
    base = torch.zeros(1, 1, 32, 32)
    blob = base.clone()
    blob[..., 12:16, 28:32] = 3.0  # row 3, column 7 of the patch grid
    diff = (encoder.encode_tokens(blob) - encoder.encode_tokens(base)).norm(dim=-1)  # [1, N]
    grid = encoder.token_map(diff)[0]  # [rows, cols]
    assert grid.argmax().item() == 3 * cols + 7
    # window size 2: only the blob's window changes, so the left half stays identical
    assert torch.all(grid[:, : cols // 2] == 0)


def test_hook_points_expose_tokens_and_can_patch_them() -> None:
    encoder = VisionEncoder(small_config()).eval()
    seen: dict[str, torch.Tensor] = {}
    handle = encoder.hook_tokens.register_forward_hook(lambda m, i, o: seen.setdefault("tokens", o.detach()))
    out = encoder(torch.randn(2, 1, 32, 32))
    handle.remove()
    assert torch.equal(seen["tokens"], out.tokens)
    zero = encoder.hook_pooled.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    patched = encoder(torch.randn(2, 1, 32, 32))
    zero.remove()
    assert torch.all(patched.pooled == 0)


def test_output_attentions_gives_window_attention_rows_that_sum_to_one() -> None:
    encoder = VisionEncoder(small_config()).eval()
    out = encoder(torch.randn(2, 1, 32, 32), output_attentions=True)
    assert out.attentions is not None and len(out.attentions) == 2
    first = out.attentions[0]  # stage 1: 8×8 grid, window 4 → 4 windows × 2 images
    assert first.shape == (8, 1, 16, 16)
    assert torch.allclose(first.sum(-1), torch.ones_like(first.sum(-1)), atol=1e-5)
    # the backbone is back on its fast attention afterwards, with identical outputs
    again = encoder(torch.zeros(1, 1, 32, 32))
    assert again.attentions is None


def test_save_and_load_roundtrip(tmp_path) -> None:
    encoder = VisionEncoder(small_config()).eval()
    encoder.save_pretrained(tmp_path / "enc")
    assert not [p for p in (tmp_path / "enc").iterdir() if p.name.endswith(".tmp")]
    loaded = VisionEncoder.from_pretrained(tmp_path / "enc").eval()
    assert loaded.config == encoder.config
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(loaded(x).tokens, encoder(x).tokens)
    with pytest.raises(RunFolderError, match="encoder.safetensors"):
        (tmp_path / "enc" / "encoder.safetensors").unlink()
        VisionEncoder.from_pretrained(tmp_path / "enc")


def test_config_dict_roundtrip_and_bad_keys() -> None:
    config = EncoderConfig.full()
    assert EncoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown EncoderConfig keys"):
        EncoderConfig.from_dict({**config.to_dict(), "bogus": 1})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(depths=[1, 1], num_heads=[1]), "equal length"),
        (dict(image_size=30), "multiple of patch_size"),
        (dict(num_heads=[3, 2]), "divisible"),
        (dict(stem="conv", stem_depth=0), "stem_depth"),
    ],
)
def test_bad_configs_raise_value_error(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        VisionEncoder(small_config(**overrides))


def test_wrong_input_shape_names_the_expected_shape() -> None:
    encoder = VisionEncoder(small_config())
    with pytest.raises(ValueError, match=r"\[batch, 1, 32, 32\]"):
        encoder(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="channels"):
        encoder(torch.randn(2, 2, 32, 32))
    with pytest.raises(TypeError):
        encoder([[0.0]])


def test_freeze_stops_gradients() -> None:
    encoder = VisionEncoder(small_config()).freeze()
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())


def test_conv_stem_depth_adds_unstrided_convolutions_on_the_same_grid() -> None:
    """``stem_depth=2`` (the tiny profile) puts a stride-1 3×3 conv after each stride-2 one; the
    token grid and width stay those of Swin's patch embedding."""
    from torch import nn

    from xraygpt_lab.models.conv_stem import ConvStem

    shallow, deep = ConvStem(1, 8, 8, width=4, depth=1), ConvStem(1, 8, 8, width=4, depth=2)
    strides = [m.stride[0] for m in deep.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert strides == [2, 1, 2, 1, 2, 1]
    x = torch.randn(2, 1, 32, 32)
    assert shallow(x).shape == deep(x).shape == (2, 8, 4, 4)
    assert EncoderConfig.tiny().stem_depth == 2
    with pytest.raises(ValueError, match="depth"):
        ConvStem(1, 8, 8, depth=0)
    # a folder written before stem_depth existed loads as depth 1
    assert EncoderConfig.from_dict({k: v for k, v in EncoderConfig.tiny().to_dict().items() if k != "stem_depth"}).stem_depth == 1
