"""LLM side: tokenizer with template tokens, tiny LLaMA, loading/saving a folder, LoRA."""
from __future__ import annotations

import pytest
import torch

from xraygpt_lab.errors import RunFolderError
from xraygpt_lab.models.llm import add_lora, count_parameters, load_llm, save_llm, tiny_llm, train_tokenizer

CORPUS = ["There is a small left pleural effusion.", "The heart is enlarged.", "Lungs are clear."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=320)


def test_template_tokens_are_atomic(tokenizer):
    tokens = tokenizer.tokenize("###Patient: <Img><ImageHere></Img> Hi ###Doctor: ")
    for special in ("###", "<Img>", "<ImageHere>", "</Img>"):
        assert special in tokens
    ids = tokenizer("Lungs are clear.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id  # LLaMA-style BOS
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Lungs are clear."
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_tokenizer_rejects_bad_input():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(CORPUS, vocab_size=100)
    with pytest.raises(ValueError, match="empty"):
        train_tokenizer([], vocab_size=400)


def test_tiny_llm_is_a_llama(tokenizer):
    model = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tokenizer)
    ids = torch.tensor([tokenizer("Lungs are clear.")["input_ids"]])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))  # [B, T, vocab]
    with pytest.raises(ValueError, match="divisible"):
        tiny_llm(tokenizer, hidden_size=30, num_attention_heads=4)
    same = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    assert torch.equal(same.lm_head.weight, model.lm_head.weight)  # seeded


def test_save_and_load_roundtrip(tokenizer, tmp_path):
    model = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    folder = save_llm(model, tokenizer, tmp_path / "llm")
    assert (folder / "model.safetensors").is_file() and not list(tmp_path.glob(".llm.*"))
    loaded, tok = load_llm(folder)
    ids = torch.tensor([tokenizer("The heart is enlarged.")["input_ids"]])
    assert torch.allclose(loaded(ids).logits, model.eval()(ids).logits, atol=1e-5)
    assert tok.tokenize("<ImageHere>###") == ["<ImageHere>", "###"]
    save_llm(model, tokenizer, folder)  # overwriting an existing folder works
    (folder / "tokenizer.json").unlink()
    with pytest.raises(RunFolderError, match="tokenizer.json"):
        load_llm(folder)
    with pytest.raises(RunFolderError, match="does not exist"):
        load_llm(tmp_path / "nope")


def test_lora_trains_only_adapters_and_merges(tokenizer, tmp_path):
    model = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    lora = add_lora(model, r=2, alpha=4, dropout=0.0)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert count_parameters(lora, trainable_only=True) < 0.2 * count_parameters(lora)
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.fill_(0.1)
    ids = torch.tensor([tokenizer("Lungs are clear.")["input_ids"]])
    expected = lora(ids).logits
    folder = save_llm(lora, tokenizer, tmp_path / "merged")
    merged, _ = load_llm(folder)
    assert torch.allclose(merged(ids).logits, expected, atol=1e-4)
