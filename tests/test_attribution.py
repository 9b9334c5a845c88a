"""Attribution: targets equal the model's own log-probabilities, Captum methods behave as promised.

Fast tests use a small randomly initialised XrayGPT (32 px images); ``small_model`` and
``REPORTS`` are imported by the other interpretability tests.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xraygpt_lab.data.readers.images import MEDCLIP_MEAN, MEDCLIP_STD, preprocess
from xraygpt_lab.interpret.attribution import (ALL_METHODS, METHODS, attribute, explain, gaussian_blur,
                                               make_baseline, token_grid)
from xraygpt_lab.interpret.geometry import map_to_image, model_to_image, peak_in_image
from xraygpt_lab.interpret.targets import ZeroShotTarget, answer_target, find_phrase, phrase_target
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.llm import tiny_llm, train_tokenizer
from xraygpt_lab.models.xraygpt import XrayGPT

REPORTS = [
    "There is a small left pleural effusion. The heart size is normal.",
    "The heart is enlarged. No pleural effusion or pneumothorax.",
    "Lungs are clear. No acute cardiopulmonary process.",
    "There is a right pneumothorax. No effusion.",
]
ANSWER = REPORTS[0]


def small_encoder_config() -> EncoderConfig:
    """32 px, patch 4 → 8 × 8 patches (window 4, so block 2 is shifted) → merged 4 × 4 tokens."""
    return EncoderConfig(image_size=32, patch_size=4, embed_dim=8, depths=[2, 1], num_heads=[1, 2],
                         window_size=4, projection_dim=12)


def small_model(seed: int = 0) -> XrayGPT:
    """A random 32 px XrayGPT with a 2-layer LLM (built in well under a second)."""
    tokenizer = train_tokenizer(REPORTS * 10 + ["###Patient: <Img><ImageHere></Img> Describe. ###Doctor: "],
                                vocab_size=320)
    torch.manual_seed(seed)
    encoder = VisionEncoder(small_encoder_config())
    llm = tiny_llm(tokenizer, seed=seed, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=2, max_position_embeddings=256)
    return XrayGPT(encoder, llm, tokenizer).eval()


@pytest.fixture(scope="module")
def model() -> XrayGPT:
    return small_model()


@pytest.fixture()
def pixels() -> torch.Tensor:
    return torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))


class RegionTarget(torch.nn.Module):
    """A known answer: the target is the sum of pixels in one 8 × 8 block (rows 0–7, cols 24–31)."""

    def __init__(self, encoder: VisionEncoder) -> None:
        super().__init__()
        self.encoder = encoder  # gradcam reads the encoder's token grid
        self.description = "pixels of the top-right block"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values[:, 0, 0:8, 24:32].sum(dim=(-1, -2))  # [B]


# ------------------------------------------------------------------ targets
def test_phrase_target_equals_model_log_probability(model, pixels) -> None:
    target = phrase_target(model, "left pleural effusion", ANSWER)
    assert "".join(target.target_token_texts).strip().lower().endswith("pleural effusion")
    out = model(prompts=[target.prompt] * 2, targets=[ANSWER] * 2, pixel_values=pixels)
    logprobs = torch.log_softmax(out.logits, dim=-1)
    expected = []
    for b in range(2):
        positions = torch.nonzero(out.wrapped.labels[b] != -100).flatten()[target.token_mask]
        expected.append(logprobs[b, positions - 1, out.wrapped.labels[b, positions]].sum())
    assert torch.allclose(target(pixels), torch.stack(expected), atol=1e-4)


def test_answer_target_counts_answer_tokens_but_not_end_symbol(model) -> None:
    target = answer_target(model, ANSWER)
    assert "".join(target.target_token_texts) == ANSWER
    assert "###" not in "".join(target.target_token_texts)
    whole = phrase_target(model, ANSWER, ANSWER)
    assert torch.equal(whole.token_mask, target.token_mask)


def test_phrase_errors_are_typed_and_say_why(model) -> None:
    with pytest.raises(ValueError, match="whitespace"):
        phrase_target(model, "   ", ANSWER)
    with pytest.raises(ValueError, match="does not occur"):
        phrase_target(model, "cardiomegaly", ANSWER)
    assert find_phrase("A LEFT effusion", "left effusion") == (2, 15)
    standalone = phrase_target(model, "left pleural effusion")
    assert standalone.answer == "left pleural effusion" and bool(standalone.token_mask[:-1].all())


def test_zero_shot_target_matches_library_probabilities() -> None:
    from xraygpt_lab.models.text_encoder import TextEncoder
    from xraygpt_lab.models.zero_shot import zero_shot_probabilities

    from dataclasses import replace

    torch.manual_seed(0)
    text = TextEncoder.from_corpus(REPORTS * 5).eval()
    encoder = VisionEncoder(replace(small_encoder_config(), projection_dim=text.config.projection_dim)).eval()
    pixels = torch.randn(3, 1, 32, 32)
    target = ZeroShotTarget(encoder, text, "Pleural Effusion", output="probability")
    expected = zero_shot_probabilities(encoder.encode_image(pixels), text)["Pleural Effusion"]
    assert torch.allclose(target(pixels), expected, atol=1e-5)
    logit = ZeroShotTarget(encoder, text, "Pleural Effusion")(pixels)
    assert torch.allclose(torch.sigmoid(logit), expected, atol=1e-5)
    with pytest.raises(ValueError, match="no zero-shot prompts"):
        ZeroShotTarget(encoder, text, "Not An Observation")


# ------------------------------------------------------------------ baselines
def test_baselines_are_what_they_say(pixels) -> None:
    black, name = make_baseline(pixels, "black")
    assert torch.allclose(black, torch.full_like(pixels, -MEDCLIP_MEAN / MEDCLIP_STD)) and "black" in name
    assert torch.equal(make_baseline(pixels, "mean")[0], torch.zeros_like(pixels))
    blur, name = make_baseline(pixels, "blur")
    assert "σ=2" in name and blur.std() < 0.5 * pixels.std()  # noise is smoothed away
    assert torch.allclose(blur.mean(), pixels.mean(), atol=0.1)  # exposure kept
    grey, _ = make_baseline(pixels, 0.5)
    assert torch.allclose(grey * MEDCLIP_STD + MEDCLIP_MEAN, torch.full_like(pixels, 0.5))
    flat = torch.ones(1, 1, 16, 16)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat)  # a blur keeps a flat image
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline(pixels, "zeros")
    with pytest.raises(ValueError, match="grey level"):
        make_baseline(pixels, 3.0)


# ------------------------------------------------------------------ methods
def test_integrated_gradients_is_complete(model, pixels) -> None:
    """Sundararajan et al. 2017: attributions sum to f(x) - f(baseline) (up to the Riemann error)."""
    target = phrase_target(model, "pleural effusion", ANSWER)
    result = explain(target, pixels[:1], "ig", baseline="black", n_steps=64)
    with torch.no_grad():
        gap = float(target(pixels[:1]) - target(make_baseline(pixels[:1], "black")[0]))
    assert abs(gap) > 1e-3
    assert result.map.sum() == pytest.approx(gap, rel=0.05, abs=1e-3)
    assert result.delta < 0.05 * abs(gap) + 1e-3
    assert "black" in result.baseline and "64 steps" in result.baseline


def test_ig_over_several_baselines_is_the_mean_of_each_and_smoothing_blurs_the_map(model, pixels) -> None:
    """A list of baselines averages IG over them (so completeness holds against the mean baseline
    score); ``smooth`` is a Gaussian on the final map that keeps its total."""
    from scipy.ndimage import gaussian_filter

    target = phrase_target(model, "pleural effusion", ANSWER)
    both = explain(target, pixels[:1], "ig", baseline=["blur", "black"], n_steps=16)
    blur = explain(target, pixels[:1], "ig", baseline="blur", n_steps=16)
    black = explain(target, pixels[:1], "ig", baseline="black", n_steps=16)
    np.testing.assert_allclose(both.map, (blur.map + black.map) / 2, rtol=1e-4, atol=1e-7)
    assert "average over 2 baselines" in both.baseline
    smoothed = explain(target, pixels[:1], "ig", baseline=["blur", "black"], n_steps=16, smooth=2.0)
    np.testing.assert_allclose(smoothed.map, gaussian_filter(both.map, 2.0, mode="mirror", truncate=3.0),
                               rtol=1e-3, atol=1e-6)
    assert abs(smoothed.map.sum() - both.map.sum()) < 0.05 * np.abs(both.map).sum()
    assert "smoothed" in smoothed.resolution
    with pytest.raises(ValueError, match="'ig' only"):
        attribute(target, pixels[:1], "occlusion", baseline=["blur", "black"])
    with pytest.raises(ValueError, match="must not be empty"):
        attribute(target, pixels[:1], "ig", baseline=[])
    with pytest.raises(ValueError, match="smooth"):
        attribute(target, pixels[:1], "saliency", smooth=-1.0)


def test_internal_batch_size_does_not_change_the_result(model, pixels) -> None:
    target = phrase_target(model, "pleural effusion", ANSWER)
    whole = attribute(target, pixels, "ig", n_steps=8)
    chunked = attribute(target, pixels, "ig", n_steps=8, internal_batch_size=3)
    assert len(whole) == 2
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a.map, b.map, rtol=1e-4, atol=1e-6)
    occ = attribute(target, pixels[:1], "occlusion", internal_batch_size=5, occlusion_window=8, occlusion_stride=8)[0]
    occ_one = attribute(target, pixels[:1], "occlusion", internal_batch_size=1, occlusion_window=8,
                        occlusion_stride=8)[0]
    np.testing.assert_allclose(occ.map, occ_one.map, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["ig", "saliency", "smoothgrad", "occlusion", "gradientshap"])
def test_pixel_methods_find_the_pixels_the_target_reads(model, method) -> None:
    """A target that sums one 8 × 8 block: every pixel method must peak inside that block."""
    pixels = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) + 0.5
    torch.manual_seed(0)
    result = explain(RegionTarget(model.encoder), pixels, method, baseline="black",
                     occlusion_window=4, occlusion_stride=4)
    r, c = result.peak
    assert 0 <= r < 8 and 24 <= c < 32, (method, result.peak)
    inside = np.abs(result.map[0:8, 24:32]).sum()
    assert inside > 0.95 * np.abs(result.map).sum()


def test_gradcam_hooks_a_grid_tensor_and_points_at_the_region(model) -> None:
    seen = {}
    with token_grid(model.encoder) as grid_module:
        grid_module.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
        model.encoder(torch.zeros(2, 1, 32, 32))
    assert seen["shape"] == (2, model.encoder.token_dim, 4, 4)
    assert not model.encoder.hook_tokens._forward_hooks  # the hook is gone afterwards
    pixels = torch.zeros(1, 1, 32, 32)
    pixels[..., 0:8, 24:32] = 3.0
    target = _TokenTarget(model.encoder)
    result = explain(target, pixels, "gradcam")
    assert result.grid.shape == (4, 4) and result.map.shape == (32, 32)
    assert result.resolution == "token grid 4x4"
    assert np.unravel_index(result.grid.argmax(), result.grid.shape) == (0, 3)


class _TokenTarget(torch.nn.Module):
    """Sum of the squared activations of the top-right token: Grad-CAM must light that token."""

    def __init__(self, encoder: VisionEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.description = "top-right token energy"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(pixel_values).tokens  # [B, 16, d]
        return tokens[:, 3].pow(2).sum(-1)


def test_every_method_names_its_baseline_and_returns_a_finite_map(model, pixels) -> None:
    target = phrase_target(model, "pleural effusion", ANSWER)
    resolutions = {}
    for method in ALL_METHODS:
        kwargs = {"n_steps": 4} if method in ("ig", "layer_ig", "feature_ig") else {}
        if method == "occlusion":
            kwargs = {"occlusion_window": 8, "occlusion_stride": 8}
        result = explain(target, pixels[:1], method, **kwargs)
        resolutions[method] = result.resolution
        assert result.method == method
        assert result.map.shape == (32, 32) and np.isfinite(result.map).all(), method
        assert result.baseline, method
        assert np.isfinite(result.score) and result.score < 0  # a log-probability
    assert resolutions["gradcam"] == resolutions["layer_ig"] == resolutions["attention"] == "token grid 4x4"
    assert resolutions["rollout"] == resolutions["grad_rollout"] == "patch grid 8x8"
    assert resolutions["ig"] == "pixel" and resolutions["occlusion"] == "occlusion window 8 px / stride 8 px"
    assert resolutions["feature_ig"] == "feature map 8x8 (stride 4)"  # Swin's patch projection, patch 4


def test_feature_layer_is_the_stride_4_map_of_either_stem() -> None:
    patch = VisionEncoder(small_encoder_config())
    layer, stride = patch.feature_layer()
    assert layer is patch.backbone.embeddings.patch_embeddings.projection and stride == 4
    conv = VisionEncoder(EncoderConfig.tiny(64, embed_dim=8, depths=[1, 1], num_heads=[1, 1], stem_width=4))
    seen = {}
    for wanted, side in ((4, 16), (2, 32), (64, 8)):  # 64 is coarser than the stem: its last scale
        layer, stride = conv.feature_layer(wanted)
        handle = layer.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
        conv(torch.zeros(1, 1, 64, 64))
        handle.remove()
        assert seen["shape"][-2:] == (side, side) and stride == 64 // side
    for bad in (3, "4", 4.0, True):
        with pytest.raises(ValueError, match="power of two"):
            conv.feature_layer(bad)


def test_feature_ig_points_at_the_region_and_gate_multiplies_by_its_positive_part(model) -> None:
    torch.manual_seed(0)
    pixels = torch.randn(1, 1, 32, 32) * 0.1
    target = _FeatureBlockTarget(model.encoder)
    features = explain(target, pixels, "feature_ig", n_steps=8)
    assert features.grid.shape == (8, 8) and "black" in features.baseline
    # the target reads rows 0-7, cols 24-31 only: only the patches there can carry attribution
    outside = np.ones((8, 8), bool)
    outside[0:2, 6:8] = False
    assert np.abs(features.grid[outside]).max() < 1e-6 < np.abs(features.grid[~outside]).max()
    plain = explain(target, pixels, "ig", baseline="blur", n_steps=8)
    gated = explain(target, pixels, "ig", baseline="blur", n_steps=8, gate=True, gate_steps=8)
    from xraygpt_lab.interpret.attribution import upsample_grid

    gate = upsample_grid(torch.tensor(features.grid)[None], 32)[0].clamp(min=0).numpy()
    np.testing.assert_allclose(gated.map, plain.map * gate, rtol=1e-4, atol=1e-7)
    assert "gated by feature IG" in gated.resolution and "gate:" in gated.baseline


class _FeatureBlockTarget(torch.nn.Module):
    """Energy of the top-right 2 × 2 cells of the encoder's stride-4 feature map (pixels 0–7, 24–31).

    The capture hook is registered at each call, after Captum's, so it sees the activations Captum
    substitutes while integrating.
    """

    def __init__(self, encoder: VisionEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.description = "top-right feature energy"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        seen = {}
        layer, _ = self.encoder.feature_layer()
        handle = layer.register_forward_hook(lambda m, i, o: seen.update(out=o))
        try:
            self.encoder(pixel_values)
        finally:
            handle.remove()
        return seen["out"][:, :, 0:2, 6:8].pow(2).sum(dim=(1, 2, 3))  # [B]


class _LastTokenTarget(torch.nn.Module):
    """First channels of the encoder's last (bottom-right) output token: depends on every stem scale.

    (Not the whole token: the final LayerNorm makes its sum nearly constant.)"""

    def __init__(self, encoder: VisionEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.description = "last token"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixel_values).tokens[:, -1, :4].sum(dim=-1)  # [B]


def test_gate_multiplies_the_positive_feature_ig_of_each_stride() -> None:
    from xraygpt_lab.interpret.attribution import GATE_STRIDES, upsample_grid

    torch.manual_seed(0)
    encoder = VisionEncoder(EncoderConfig.tiny(64, embed_dim=8, depths=[1, 1], num_heads=[1, 1], stem_width=4)).eval()
    target = _LastTokenTarget(encoder)
    pixels = torch.randn(1, 1, 64, 64) * 0.3
    plain = explain(target, pixels, "ig", baseline="blur", n_steps=8)
    parts = {s: explain(target, pixels, "feature_ig", n_steps=8, feature_stride=s) for s in (4, 8)}
    assert parts[4].grid.shape == (16, 16) and parts[8].grid.shape == (8, 8)
    positive = {s: upsample_grid(torch.tensor(p.grid)[None], 64)[0].clamp(min=0).numpy() for s, p in parts.items()}
    assert all(0 < (g > 0).mean() < 1 for g in positive.values())  # each gate keeps some pixels, not all

    assert GATE_STRIDES == (4, 8)
    gated = explain(target, pixels, "ig", baseline="blur", n_steps=8, gate=True, gate_steps=8)
    atol = 1e-5 * np.abs(plain.map).max()
    np.testing.assert_allclose(gated.map, plain.map * positive[4] * positive[8], rtol=1e-4, atol=atol)
    assert "stride 4 × 8" in gated.resolution
    fine_only = explain(target, pixels, "ig", baseline="blur", n_steps=8, gate=True, gate_steps=8, gate_strides=(4,))
    np.testing.assert_allclose(fine_only.map, plain.map * positive[4], rtol=1e-4, atol=atol)
    assert np.abs(fine_only.map - gated.map).max() > 0.1 * np.abs(fine_only.map).max()


def test_gate_rejects_other_methods_and_bad_values(model, pixels) -> None:
    target = phrase_target(model, "pleural effusion", ANSWER)
    with pytest.raises(ValueError, match="does not apply to 'saliency'"):
        attribute(target, pixels[:1], "saliency", gate=True)
    with pytest.raises(ValueError, match="True or False"):
        attribute(target, pixels[:1], "ig", gate="yes")
    with pytest.raises(ValueError, match="gate_steps"):
        attribute(target, pixels[:1], "ig", gate=True, gate_steps=1)
    for strides in ((), 4, (4.0,)):
        with pytest.raises(ValueError, match="gate_strides"):
            attribute(target, pixels[:1], "ig", gate=True, gate_strides=strides)
    with pytest.raises(ValueError, match="power of two"):
        attribute(target, pixels[:1], "ig", gate=True, gate_strides=(3,), n_steps=2, gate_steps=2)
    with pytest.raises(ValueError, match="feature_ig need a target with an .encoder"):
        attribute(lambda x: x.sum(dim=(1, 2, 3)), pixels[:1], "feature_ig")


def test_bad_method_and_inputs_raise_clear_errors(model, pixels) -> None:
    target = phrase_target(model, "pleural effusion", ANSWER)
    with pytest.raises(ValueError, match="unknown method"):
        explain(target, pixels[:1], "lime")
    with pytest.raises(ValueError, match=r"\[batch, 1, S, S\]"):
        attribute(target, pixels[0, 0], "ig")
    with pytest.raises(ValueError, match="layer_ig needs a text target"):
        attribute(RegionTarget(model.encoder), pixels[:1], "layer_ig")
    assert set(METHODS) <= set(ALL_METHODS)


# ------------------------------------------------------------------ devices
class DeviceRecorder:
    """A text-target stand-in whose model lives on ``meta`` (no data, any shape): it records the
    device of every batch it is given. ``data.images.preprocess`` makes CPU tensors; on a GPU
    machine the model sits on CUDA, and Captum's steps and baselines must be made there."""

    description = "sum of pixels"

    def __init__(self) -> None:
        self.model = SimpleNamespace(device=torch.device("meta"))
        self.seen: list[str] = []

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.seen.append(pixel_values.device.type)
        return pixel_values.sum(dim=(1, 2, 3))  # [B]


@pytest.mark.parametrize("method, kwargs", [("ig", {"baseline": ["blur", "black"], "n_steps": 4}),
                                            ("occlusion", {}), ("gradientshap", {"shap_samples": 2})])
def test_cpu_pixels_reach_the_target_on_the_models_device(method, kwargs) -> None:
    target = DeviceRecorder()
    with pytest.raises(NotImplementedError, match="meta"):  # the CPU copy of a meta map has no data
        attribute(target, torch.randn(1, 1, 16, 16), method, **kwargs)
    assert len(target.seen) >= 2 and set(target.seen) == {"meta"}, target.seen


def test_target_device_is_where_the_target_computes(model) -> None:
    import copy

    from dataclasses import replace

    from xraygpt_lab.interpret.targets import target_device

    assert target_device(phrase_target(model, "pleural effusion", ANSWER)) == torch.device("cpu")
    on_meta = copy.deepcopy(model).to("meta")
    assert target_device(answer_target(on_meta, ANSWER)) == torch.device("meta")
    encoder = VisionEncoder(replace(small_encoder_config(), projection_dim=4)).to("meta")
    zero_shot = ZeroShotTarget(encoder, class_embeddings=torch.randn(2, 4), observation="Edema")
    assert target_device(zero_shot) == torch.device("meta")
    assert target_device(RegionTarget(encoder)) == torch.device("meta")
    assert target_device(lambda x: x.sum()) is None


# ------------------------------------------------------------------ geometry
@pytest.mark.parametrize("shape", [(48, 80), (90, 40), (64, 64)])
def test_maps_return_to_the_input_image_through_pad_and_resize(shape) -> None:
    """A bright dot in a non-square image: its preprocessed peak maps back onto the dot."""
    image = np.zeros(shape, np.float32)
    dot = (shape[0] // 3, (2 * shape[1]) // 3)
    image[dot[0] - 1:dot[0] + 2, dot[1] - 1:dot[1] + 2] = 1.0
    model_view = preprocess(image, 32)[0].numpy()  # [32, 32]
    r, c = peak_in_image(model_view, shape)
    assert abs(r - dot[0]) <= 2 and abs(c - dot[1]) <= 2
    restored = map_to_image(model_view, shape)
    assert restored.shape == shape
    mr, mc = np.unravel_index(model_view.argmax(), model_view.shape)
    back = model_to_image(mr, mc, 32, shape)
    assert abs(back[0] - dot[0]) <= 2.5 and abs(back[1] - dot[1]) <= 2.5
