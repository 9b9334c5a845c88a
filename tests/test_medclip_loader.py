"""load_medclip on checkpoints the test writes in MedCLIP's released key layout."""
from __future__ import annotations

import pickle

import pytest
import torch

from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.medclip import (
    MedCLIPLoadError,
    MedCLIPModel,
    legacy_swin_key,
    load_medclip,
    load_medclip_vision,
    medclip_state_dict,
    modern_swin_key,
)
from xraygpt_lab.models.text_encoder import TextEncoder, TextEncoderConfig

VISION = EncoderConfig(image_size=32, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[1, 2], window_size=4, projection_dim=16)
TEXT = TextEncoderConfig(vocab_size=60, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24, projection_dim=16, masked_mean=False)


def build() -> MedCLIPModel:
    torch.manual_seed(0)
    model = MedCLIPModel(VisionEncoder(VISION), TextEncoder(TEXT)).eval()
    with torch.no_grad():  # Swin initialises the bias tables at zero: make them matter
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name or "logit_scale" in name:
                p.normal_()
    return model


def write(tmp_path, state) -> str:
    folder = tmp_path / "medclip"
    folder.mkdir(exist_ok=True)
    torch.save(state, folder / "pytorch_model.bin")
    return str(folder)


def inputs():
    torch.manual_seed(1)
    pixels = torch.randn(2, 1, 32, 32)
    ids = torch.randint(5, 60, (3, 9))
    mask = torch.ones_like(ids)
    return pixels, ids, mask


def test_released_layout_uses_transformers4_names_and_position_ids(tmp_path) -> None:
    state = medclip_state_dict(build())
    assert "vision_model.projection_head.weight" in state and "text_model.projection_head.weight" in state
    assert "logit_scale" in state
    assert "vision_model.model.encoder.layers.0.blocks.1.attention.self.query.weight" in state
    assert "vision_model.model.encoder.layers.0.blocks.1.intermediate.dense.weight" in state
    assert "vision_model.model.encoder.layers.0.blocks.1.attention.self.relative_position_index" in state
    assert not any("q_proj" in k or "mlp.fc" in k for k in state)


def test_roundtrip_reproduces_outputs_and_tolerates_position_ids(tmp_path) -> None:
    model = build()
    state = medclip_state_dict(model)
    state["text_model.model.embeddings.position_ids"] = torch.arange(512)[None]  # MedCLIP issue #37
    loaded = load_medclip(write(tmp_path, state), encoder_config=VISION, text_config=TEXT)
    pixels, ids, mask = inputs()
    assert torch.allclose(loaded(pixels, ids, mask), model(pixels, ids, mask), atol=1e-5)
    assert torch.equal(loaded.vision.encode_tokens(pixels), model.vision.encode_tokens(pixels))
    assert loaded.logit_scale.logit_scale.item() == model.logit_scale.logit_scale.item()


def test_fresh_model_differs_so_the_roundtrip_test_can_fail(tmp_path) -> None:
    model = build()
    torch.manual_seed(123)
    other = MedCLIPModel(VisionEncoder(VISION), TextEncoder(TEXT)).eval()
    pixels, ids, mask = inputs()
    assert not torch.allclose(other(pixels, ids, mask), model(pixels, ids, mask), atol=1e-3)


def test_modern_key_names_load_too(tmp_path) -> None:
    model = build()
    state = medclip_state_dict(model, legacy=False)
    loaded = load_medclip(write(tmp_path, state), encoder_config=VISION, text_config=TEXT)
    pixels, ids, mask = inputs()
    assert torch.allclose(loaded(pixels, ids, mask), model(pixels, ids, mask), atol=1e-5)


def test_key_renames_are_inverse() -> None:
    for key in VisionEncoder(VISION).backbone.state_dict():
        assert modern_swin_key(legacy_swin_key(key)) == key


def test_text_sizes_inferred_from_tensors_when_heads_follow_bert_convention(tmp_path) -> None:
    text = TextEncoderConfig(vocab_size=60, hidden_size=128, num_layers=3, num_heads=2, intermediate_size=32, projection_dim=16, masked_mean=False)
    model = MedCLIPModel(VisionEncoder(VISION), TextEncoder(text)).eval()
    loaded = load_medclip(write(tmp_path, medclip_state_dict(model)), encoder_config=VISION)
    assert loaded.text.config.num_layers == 3
    assert loaded.text.config.vocab_size == 60
    assert loaded.text.config.hidden_size == 128


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("vision_model.model.layernorm.weight"), "missing vision_model.model keys.*layernorm.weight"),
        (lambda s: s.__setitem__("vision_model.model.extra.weight", torch.zeros(1)), "unexpected vision_model.model keys.*extra.weight"),
        (lambda s: s.__setitem__("text_model.model.embeddings.word_embeddings.weight", torch.zeros(61, 16)), r"shape mismatches.*word_embeddings.*\(61, 16\)"),
        (lambda s: s.pop("text_model.projection_head.weight"), "missing key text_model.projection_head.weight"),
        (lambda s: s.pop("logit_scale"), "missing key logit_scale"),
        (lambda s: s.__setitem__("optimizer_step", torch.zeros(1)), "unexpected top-level keys.*optimizer_step"),
        (lambda s: s.__setitem__("text_model.model.embeddings.token_type_ids", torch.zeros(1, 512)), "unexpected text_model.model keys"),
    ],
)
def test_any_other_mismatch_fails_listing_keys(tmp_path, edit, message) -> None:
    state = medclip_state_dict(build())
    edit(state)
    with pytest.raises(MedCLIPLoadError, match=message):
        load_medclip(write(tmp_path, state), encoder_config=VISION, text_config=TEXT)


def test_wrong_window_size_is_caught_by_the_stored_index(tmp_path) -> None:
    state = medclip_state_dict(build())
    other = EncoderConfig(**{**VISION.to_dict(), "window_size": 2})
    with pytest.raises(MedCLIPLoadError, match="window"):
        load_medclip(write(tmp_path, state), encoder_config=other, text_config=TEXT)


def test_missing_file_and_pickled_objects_are_refused(tmp_path) -> None:
    with pytest.raises(MedCLIPLoadError, match="not found"):
        load_medclip(tmp_path / "nowhere")
    folder = tmp_path / "evil"
    folder.mkdir()
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"x": object()}, handle)
    with pytest.raises(MedCLIPLoadError, match="weights_only"):
        load_medclip(folder)


def test_vision_only_loader_returns_frozen_encoder(tmp_path) -> None:
    encoder = load_medclip_vision(write(tmp_path, medclip_state_dict(build())), encoder_config=VISION, text_config=TEXT)
    assert isinstance(encoder, VisionEncoder)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_text_folder_supplies_tokenizer_and_bert(tmp_path) -> None:
    """A Bio_ClinicalBERT-layout folder (config.json + weights + vocab.txt) gives the text side."""
    model = build()
    bert_dir = tmp_path / "bert"
    model.text.bert.save_pretrained(bert_dir)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "left", "right", "pleural", "effusion", "no"]
    vocab += [f"w{i}" for i in range(60 - len(vocab))]
    (bert_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (bert_dir / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    loaded = load_medclip(write(tmp_path, medclip_state_dict(model)), encoder_config=VISION, text_folder=bert_dir)
    batch = loaded.text.tokenize(["left pleural effusion", "no effusion"])
    assert batch["input_ids"][0, :5].tolist() == [2, 5, 7, 8, 3]
    loaded.text.config.masked_mean = False
    expected = model.text(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(loaded.text(batch["input_ids"], batch["attention_mask"]), expected, atol=1e-5)
