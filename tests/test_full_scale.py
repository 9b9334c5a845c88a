"""Full profile without a GPU: shapes, parameter counts, the notebook's preflight, the training script.

The 7B model is never materialised: it is built on the ``meta`` device (shapes, no storage).
The training script runs end to end on tiny stand-ins for MedCLIP and Vicuna (same file
layouts, toy sizes), which exercises the whole load → cache → align → save path on a CPU.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jupytext
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "08_full_scale.py"
SCRIPT = ROOT / "tutorials" / "full_scale_train.py"
ENV_VARS = ("XRAYGPT_MEDCLIP_DIR", "XRAYGPT_LLM_DIR", "XRAYGPT_DATA_DIR")


def test_full_profile_encoder_gives_49_tokens_of_768_and_projects_to_4096():
    from xraygpt_lab.config import FULL
    from xraygpt_lab.models.encoder import EncoderConfig

    config = EncoderConfig.full()
    assert config.image_size == FULL.image_size == 224
    assert config.grid == (7, 7) and config.token_dim == 768
    with torch.device("meta"):
        projection = nn.Linear(config.token_dim, 4096)
        out = projection(torch.empty(2, 49, 768))  # [B, N, d_vision] -> [B, N, d_llm]
    assert out.shape == (2, 49, 4096)
    assert sum(p.numel() for p in projection.parameters()) == 768 * 4096 + 4096


def test_llama_7b_on_the_meta_device_has_6_74_billion_parameters():
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                         intermediate_size=11008, vocab_size=32000, tie_word_embeddings=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters())
    assert n == 6_738_415_616  # LLaMA-7B (Touvron et al. 2023)
    assert all(p.device.type == "meta" for p in model.parameters())


# --------------------------------------------------------------------------- the notebook's preflight


def _preflight(monkeypatch, env: dict[str, str]) -> dict:
    """Run the notebook's first two code cells (imports + requirement check) with ``env``."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cells = [c.source for c in jupytext.read(NOTEBOOK).cells if c.cell_type == "code"]
    namespace: dict = {}
    for source in cells[:2]:
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)  # noqa: S102 - our own notebook
    return namespace


def test_preflight_without_anything_says_which_variables_to_set(monkeypatch, capsys):
    ns = _preflight(monkeypatch, {})
    assert ns["READY"] is False
    assert ns["REASONS"] == {k: f"${v} is not set" for k, v in ns["ENV"].items()}
    out = capsys.readouterr().out
    assert "XRAYGPT_LLM_DIR" in out and "ready to run the full profile: False" in out


def test_preflight_names_the_missing_files(monkeypatch, tmp_path):
    medclip, llm, data = tmp_path / "medclip", tmp_path / "vicuna", tmp_path / "data"
    for folder in (medclip, llm, data):
        folder.mkdir()
    (llm / "config.json").write_text("{}")
    ns = _preflight(monkeypatch, {"XRAYGPT_MEDCLIP_DIR": str(medclip), "XRAYGPT_LLM_DIR": str(llm),
                                  "XRAYGPT_DATA_DIR": str(data)})
    assert ns["READY"] is False
    assert "pytorch_model.bin" in ns["REASONS"]["medclip"]
    assert "*.safetensors" in ns["REASONS"]["llm"] and "tokenizer" in ns["REASONS"]["llm"]
    assert "config.json" not in ns["REASONS"]["llm"]
    assert "no dataset found" in ns["REASONS"]["data"]


def test_preflight_accepts_complete_folders(monkeypatch, tmp_path):
    medclip, llm, data = tmp_path / "medclip", tmp_path / "vicuna", tmp_path / "data"
    for folder in (medclip, llm, data / "image"):
        folder.mkdir(parents=True)
    (medclip / "pytorch_model.bin").write_bytes(b"")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (llm / name).write_text("{}")
    (data / "filter_cap.json").write_text("{}")
    ns = _preflight(monkeypatch, {"XRAYGPT_MEDCLIP_DIR": str(medclip), "XRAYGPT_LLM_DIR": str(llm),
                                  "XRAYGPT_DATA_DIR": str(data)})
    assert all(ns["FOLDERS"].values()) and not any(ns["REASONS"].values())
    assert ns["READY"] is torch.cuda.is_available()


# --------------------------------------------------------------------------- the training script


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """MedCLIP-layout ``pytorch_model.bin`` (tiny Swin), a tiny LLaMA folder and a synthetic dataset."""
    from xraygpt_lab.data.synthetic.export import export_dataset
    from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
    from xraygpt_lab.models.llm import save_llm, tiny_llm, train_tokenizer
    from xraygpt_lab.models.medclip import MedCLIPModel, medclip_state_dict
    from xraygpt_lab.models.text_encoder import TextEncoder, TextEncoderConfig

    root = tmp_path_factory.mktemp("full_scale")
    torch.manual_seed(0)
    encoder_config = EncoderConfig.tiny()
    medclip = MedCLIPModel(VisionEncoder(encoder_config), TextEncoder(TextEncoderConfig(num_heads=1, masked_mean=False)))
    (root / "medclip").mkdir()
    torch.save(medclip_state_dict(medclip), root / "medclip" / "pytorch_model.bin")
    (root / "encoder_config.json").write_text(json.dumps(encoder_config.to_dict()))

    export_dataset(root / "data", n=6, size=64, seed=3, workers=1, progress=False)
    summaries = [json.loads(line)["summary"] for line in (root / "data" / "reports.jsonl").read_text().splitlines()]
    tokenizer = train_tokenizer(summaries * 4, vocab_size=320, min_frequency=1)
    llm = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    save_llm(llm, tokenizer, root / "llm")
    return root


def _script():
    spec = importlib.util.spec_from_file_location("full_scale_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_script_trains_saves_and_resumes(stand_ins, capsys):
    from xraygpt_lab.run_folder import load_weights

    out = stand_ins / "run"
    args = ["--medclip", str(stand_ins / "medclip"), "--llm", str(stand_ins / "llm"), "--data", str(stand_ins / "data"),
            "--out", str(out), "--encoder-config", str(stand_ins / "encoder_config.json"),
            "--steps", "3", "--batch-size", "2", "--quiet"]
    assert _script().main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps_done"] == 3 and summary["finished"] and summary["records"] == 6
    weights, metadata = load_weights(out / "projection.safetensors")
    assert weights["weight"].shape == (32, 128) and metadata["stage"] == "1"  # Linear(d_vision=128, d_llm=32)
    assert (out / "stage1.ckpt").is_file() and len(json.loads((out / "stage1_history.json").read_text())) == 3

    # Same command again: resumes from the finished checkpoint, features come from the cache.
    assert _script().main(args) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["steps_done"] == 3 and again["feature_cache_hits"] == 6

    # Stage 2 starts from stage 1's projection.
    stage2 = ["--stage", "2", "--init-projection", str(out / "projection.safetensors"), "--out", str(stand_ins / "run2")]
    assert _script().main(args[:6] + args[8:10] + ["--steps", "1", "--quiet"] + stage2) == 0
    assert load_weights(stand_ins / "run2" / "projection.safetensors")[1]["stage"] == "2"


def test_training_script_explains_a_missing_medclip_file(stand_ins, tmp_path):
    from xraygpt_lab.models.medclip import MedCLIPLoadError

    with pytest.raises(MedCLIPLoadError, match="pytorch_model.bin"):
        _script().main(["--medclip", str(tmp_path), "--llm", str(stand_ins / "llm"), "--data",
                        str(stand_ins / "data"), "--out", str(tmp_path / "out")])
