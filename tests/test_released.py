"""The released XrayGPT (models.released) on reduced checkpoints written in the released key layouts,
checked against an independent re-implementation of the original forward pass (EVA ViT, BLIP-2
Q-Former, MiniGPT-4's splice) written here from the papers, not from the loader."""
from __future__ import annotations

import io
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from xraygpt_lab.models.conversation import IMAGE_PLACEHOLDER, xraygpt_prompt
from xraygpt_lab.models import reduced_release as reduced
from xraygpt_lab.models.reduced_release import ReducedLayout, write_reduced_release
from xraygpt_lab.models.released import (CLIP_MEAN, CLIP_STD, ReleasedLoadError, blip2_eval_processor,
                                         inspect_release, load_release)

# Reduced sizes in the released layouts (released values in brackets); the files are written by
# models.reduced_release, whose key names the reference forward below reads independently.
LAYOUT = ReducedLayout(image=32, patch=8, vit_width=64, vit_heads=4, vit_mlp=160, vit_blocks=5, qf_width=32,
                       qf_heads=2, qf_mlp=48, qf_layers=3, queries=4, llm_width=32, llm_context=128)
IMAGE, PATCH = LAYOUT.image, LAYOUT.patch  # [224, 14]
VIT_WIDTH, VIT_HEADS, VIT_MLP, VIT_BLOCKS = LAYOUT.vit_width, LAYOUT.vit_heads, LAYOUT.vit_mlp, LAYOUT.vit_blocks
QF_WIDTH, QF_HEADS, QF_MLP, QF_LAYERS, QUERIES = (LAYOUT.qf_width, LAYOUT.qf_heads, LAYOUT.qf_mlp, LAYOUT.qf_layers,
                                                  LAYOUT.queries)
LLM_WIDTH = LAYOUT.llm_width
HEADS = LAYOUT.heads


def eva_state() -> dict[str, torch.Tensor]:
    return reduced.eva_state(LAYOUT, 0)


def blip2_state() -> dict[str, torch.Tensor]:
    return reduced.blip2_state(LAYOUT, 1)


def checkpoint_state() -> dict[str, torch.Tensor]:
    return reduced.checkpoint_state(LAYOUT, 2)


def _linear(g: torch.Generator, prefix: str, out: int, inp: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": torch.randn(out, inp, generator=g) / math.sqrt(inp),
            f"{prefix}.bias": torch.randn(out, generator=g) * 0.1}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("release")
    return write_reduced_release(root, LAYOUT, seed=0) | {"root": root}


@pytest.fixture(scope="module")
def model(release):
    return load_release(release["vit"], release["qformer"], release["checkpoint"], release["llm"], device="cpu", **HEADS)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))  # [B, 3, S, S]


# --------------------------------------------------------------------------- the original forward, from the papers


def eva_forward(sd: dict, x: torch.Tensor, depth: int) -> torch.Tensor:
    """EVA ViT (Fang et al. 2023; BEiT-style blocks): patch conv, [CLS], absolute positions, pre-LN blocks
    with q/v bias (no k bias), MLP with exact GELU; BLIP-2 takes the output of block ``depth``."""
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)  # [B, D, g, g]
    x = x.flatten(2).transpose(1, 2)  # [B, P, D]
    b, d = x.shape[0], x.shape[2]
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], dim=1) + sd["pos_embed"]  # [B, 1+P, D]
    hd = d // VIT_HEADS
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        q = h @ sd[p + "attn.qkv.weight"][:d].T + sd[p + "attn.q_bias"]
        k = h @ sd[p + "attn.qkv.weight"][d:2 * d].T
        v = h @ sd[p + "attn.qkv.weight"][2 * d:].T + sd[p + "attn.v_bias"]
        q, k, v = (t.view(b, -1, VIT_HEADS, hd).transpose(1, 2) for t in (q, k, v))  # [B, heads, N, hd]
        attn = torch.softmax((q * hd ** -0.5) @ k.transpose(-2, -1), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, d)
        x = x + out @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = F.layer_norm(x, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return x


def bert_attention(sd: dict, p: str, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """BERT attention block (post-LN): softmax(QKᵀ/√d)V → dense → LayerNorm(· + x)."""
    b, n, d = x.shape
    hd = d // QF_HEADS
    q = (x @ sd[p + "self.query.weight"].T + sd[p + "self.query.bias"]).view(b, n, QF_HEADS, hd).transpose(1, 2)
    k = (context @ sd[p + "self.key.weight"].T + sd[p + "self.key.bias"]).view(b, -1, QF_HEADS, hd).transpose(1, 2)
    v = (context @ sd[p + "self.value.weight"].T + sd[p + "self.value.bias"]).view(b, -1, QF_HEADS, hd).transpose(1, 2)
    out = (torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1) @ v).transpose(1, 2).reshape(b, n, d)
    out = out @ sd[p + "output.dense.weight"].T + sd[p + "output.dense.bias"]
    return F.layer_norm(out + x, (d,), sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps=1e-12)


def reference_image_tokens(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniGPT-4's ``encode_img``: ln_vision(EVA) → Q-Former over the queries → (tokens, llama_proj(tokens))."""
    eva, blip2, ckpt = eva_state(), blip2_state(), checkpoint_state()
    image = eva_forward(eva, pixels, VIT_BLOCKS - 1)
    image = F.layer_norm(image, (VIT_WIDTH,), blip2["ln_vision.weight"], blip2["ln_vision.bias"], eps=1e-5)
    b = "Qformer.bert."
    h = blip2["query_tokens"].expand(pixels.shape[0], -1, -1)
    h = F.layer_norm(h, (QF_WIDTH,), blip2[b + "embeddings.LayerNorm.weight"], blip2[b + "embeddings.LayerNorm.bias"],
                     eps=1e-12)
    for i in range(QF_LAYERS):
        p = f"{b}encoder.layer.{i}."
        h = bert_attention(blip2, p + "attention.", h, h)  # self-attention over the queries
        if i % 2 == 0:  # cross-attention to the image every second layer
            h = bert_attention(blip2, p + "crossattention.", h, image)
        f = F.gelu(h @ blip2[p + "intermediate_query.dense.weight"].T + blip2[p + "intermediate_query.dense.bias"])
        f = f @ blip2[p + "output_query.dense.weight"].T + blip2[p + "output_query.dense.bias"]
        h = F.layer_norm(f + h, (QF_WIDTH,), blip2[p + "output_query.LayerNorm.weight"],
                         blip2[p + "output_query.LayerNorm.bias"], eps=1e-12)
    return h, h @ ckpt["llama_proj.weight"].T + ckpt["llama_proj.bias"]


def reference_context(llm, tokenizer, prompt: str, image_embeds: torch.Tensor) -> torch.Tensor:
    """MiniGPT-4's ``get_context_emb``: segments around <ImageHere>, BOS on the first only."""
    segments = prompt.split(IMAGE_PLACEHOLDER)
    ids = [tokenizer(s, return_tensors="pt", add_special_tokens=i == 0).input_ids for i, s in enumerate(segments)]
    embed = llm.get_input_embeddings()
    return torch.cat([embed(ids[0]), image_embeds, embed(ids[1])], dim=1)  # [1, T, d_llm]


# --------------------------------------------------------------------------- equivalence


def test_sizes_are_read_from_the_tensors(release):
    report = inspect_release(release["vit"], release["qformer"], release["checkpoint"], **HEADS)
    s = report.sizes
    assert (s.image_size, s.patch_size, s.vision_width) == (IMAGE, PATCH, VIT_WIDTH)
    assert (s.vision_depth, s.vision_blocks_in_file, s.vision_heads, s.vision_mlp) == (4, 5, VIT_HEADS, VIT_MLP)
    assert (s.qformer_width, s.qformer_layers, s.qformer_heads) == (QF_WIDTH, QF_LAYERS, QF_HEADS)
    assert (s.qformer_mlp, s.cross_attention_frequency, s.num_query_tokens, s.llm_width) == (QF_MLP, 2, QUERIES, LLM_WIDTH)


def test_every_unused_key_is_reported_with_its_reason(release):
    report = inspect_release(release["vit"], release["qformer"], release["checkpoint"], **HEADS)
    lines = [str(g) for g in report.unused]
    by_pattern = {g.pattern: g for g in report.unused}
    assert by_pattern["blocks.4.*"].count == 13 and "uses 4 of 5 blocks" in by_pattern["blocks.4.*"].reason
    assert by_pattern["blocks.4.*"].file == "eva_vit_g.pth"
    assert by_pattern["Qformer.cls.*"].count == 3
    assert by_pattern["Qformer.bert.encoder.layer.*.intermediate.*"].count == 2 * QF_LAYERS
    assert by_pattern["Qformer.bert.encoder.layer.*.output.*"].count == 4 * QF_LAYERS
    assert by_pattern["t5_proj.*"].count == 2
    for word in ("word_embeddings", "position_embeddings", "position_ids"):
        assert by_pattern[f"Qformer.bert.embeddings.{word}*"].count == 1
    # every key of every file is either used or counted here
    used = 4 + 13 * 4 + 2 + 2 + 10 * 3 + 10 * 2 + 6 * 3 + 1 + 2
    total = len(eva_state()) + len(blip2_state()) + len(checkpoint_state())
    assert used + sum(g.count for g in report.unused) == total
    assert all("\n" not in line for line in lines)


def test_image_tokens_match_the_original_forward(model):
    pixels = images(2)
    ref_tokens, ref_embeds = reference_image_tokens(pixels)
    with torch.no_grad():
        tokens = model.encode_image(pixels)  # [B, Q, H]
        embeds = model.embed_image(pixel_values=pixels)  # [B, Q, d_llm]
    assert tokens.shape == (2, QUERIES, QF_WIDTH) and embeds.shape == (2, QUERIES, LLM_WIDTH)
    diff_tokens = (tokens - ref_tokens).abs().max().item()
    diff_embeds = (embeds - ref_embeds).abs().max().item()
    print(f"max |image tokens - original| = {diff_tokens:.2e}; after llama_proj {diff_embeds:.2e}")
    assert diff_tokens < 1e-4 and diff_embeds < 1e-4
    # two different images give different tokens
    assert (tokens[0] - tokens[1]).abs().max().item() > 1e-2


def test_llm_logits_and_greedy_generation_match_the_original(model):
    pixels = images(1, seed=5)
    prompt = xraygpt_prompt("Describe the given chest x-ray image in detail.")
    _, ref_embeds = reference_image_tokens(pixels)
    llm, tok = model.llm, model.tokenizer
    with torch.no_grad():
        context = reference_context(llm, tok, prompt, ref_embeds)  # [1, T, d_llm]
        ref_logits = llm(inputs_embeds=context).logits
        logits = model(prompts=[prompt], pixel_values=pixels).logits
        assert logits.shape == ref_logits.shape
        diff = (logits - ref_logits).abs().max().item()
        print(f"max |LLM logits - original| = {diff:.2e}")
        assert diff < 1e-4
        # greedy decoding, recomputed from scratch each step, stopping at ### (MiniGPT-4's stop)
        generated: list[int] = []
        for _ in range(12):
            embeds = torch.cat([context, llm.get_input_embeddings()(torch.tensor([generated], dtype=torch.long))], dim=1)
            token = int(llm(inputs_embeds=embeds).logits[0, -1].argmax())
            generated.append(token)
            if token == tok.eos_token_id or "###" in tok.decode(generated):
                break
    reference = tok.decode(generated).split("###")[0]
    for special in (tok.eos_token, tok.pad_token, tok.bos_token):
        reference = reference.replace(special, "")
    reference = reference.strip()
    answer = model.generate([prompt], pixel_values=pixels, max_new_tokens=12)[0]
    assert generated and answer == reference


def test_image_processor_is_blip2s_eval_transform(model, tmp_path):
    colour = (200, 30, 90)
    path = tmp_path / "flat.png"
    Image.new("RGB", (50, 70), colour).save(path)
    pixels = model.image_processor(path)
    assert pixels.shape == (1, 3, IMAGE, IMAGE) and pixels.dtype == torch.float32
    want = torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, CLIP_MEAN, CLIP_STD)])
    assert torch.allclose(pixels[0, :, 5, 5], want, atol=1e-5)
    grey = np.linspace(0, 1, 40 * 60, dtype=np.float32).reshape(40, 60)
    a = blip2_eval_processor(grey, size=IMAGE)
    assert a.shape == (1, 3, IMAGE, IMAGE)
    rgb = a[0] * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)  # grey → R = G = B
    assert torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5)
    with torch.no_grad():
        assert model.describe(pixel_values=pixels, max_new_tokens=3)[0] is not None


# --------------------------------------------------------------------------- malformed files: one line each


def _expect_one_line(release, match: str, **paths) -> str:
    files = {k: release[k] for k in ("vit", "qformer", "checkpoint")} | paths
    with pytest.raises(ReleasedLoadError, match=match) as info:
        inspect_release(files["vit"], files["qformer"], files["checkpoint"], **HEADS)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_wrong_key_names_file_and_key(release, tmp_path):
    sd = eva_state()
    sd["blocks.1.attn.qkvv.weight"] = sd.pop("blocks.1.attn.qkv.weight")
    torch.save(sd, tmp_path / "eva.pth")
    msg = _expect_one_line(release, "missing key 'blocks.1.attn.qkv.weight'", vit=tmp_path / "eva.pth")
    assert str(tmp_path / "eva.pth") in msg


def test_missing_llama_proj_names_the_checkpoint(release, tmp_path):
    torch.save({"model": {"llama_proj.weight": checkpoint_state()["llama_proj.weight"]}}, tmp_path / "ck.pth")
    _expect_one_line(release, r"ck\.pth: missing key 'llama_proj.bias'", checkpoint=tmp_path / "ck.pth")


def test_wrong_shape_names_file_key_and_shapes(release, tmp_path):
    sd = blip2_state()
    sd["Qformer.bert.encoder.layer.2.crossattention.self.key.weight"] = torch.zeros(QF_WIDTH, VIT_WIDTH + 1)
    torch.save({"model": sd}, tmp_path / "blip2.pth")
    _expect_one_line(release, r"blip2\.pth: 'Qformer.bert.encoder.layer.2.crossattention.self.key.weight' has shape "
                     rf"\({QF_WIDTH}, {VIT_WIDTH + 1}\), expected \({QF_WIDTH}, {VIT_WIDTH}\)",
                     qformer=tmp_path / "blip2.pth")


def test_truncated_and_garbage_and_missing_files(release, tmp_path):
    data = release["qformer"].read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    _expect_one_line(release, r"cut\.pth: cannot be read as a PyTorch checkpoint", qformer=tmp_path / "cut.pth")
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint at all")
    _expect_one_line(release, r"junk\.pth: cannot be read", vit=tmp_path / "junk.pth")
    _expect_one_line(release, r"nowhere\.pth: not found", checkpoint=tmp_path / "nowhere.pth")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def test_a_pickle_carrying_code_is_refused(release, tmp_path):
    torch.save({"model": {"llama_proj.weight": torch.zeros(1), "hook": _RunsCode()}}, tmp_path / "evil.pth")
    msg = _expect_one_line(release, r"evil\.pth: refused by torch.load\(weights_only=True\)",
                           checkpoint=tmp_path / "evil.pth")
    assert "system" in msg
    with open(tmp_path / "evil_plain.pkl", "wb") as handle:
        pickle.dump({"x": _RunsCode()}, handle)
    _expect_one_line(release, r"evil_plain\.pkl: refused", vit=tmp_path / "evil_plain.pkl")


def test_a_7b_llm_on_the_cpu_is_refused_in_one_line(release, tmp_path):
    folder = tmp_path / "vicuna7b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008,
                                                    "num_attention_heads": 32, "vocab_size": 32000}))
    g = torch.Generator().manual_seed(0)
    torch.save({"model": _linear(g, "llama_proj", 4096, QF_WIDTH)}, tmp_path / "ck.pth")
    with pytest.raises(ReleasedLoadError, match=r"6\.7B-parameter LLM needs a GPU") as info:
        load_release(release["vit"], release["qformer"], tmp_path / "ck.pth", folder, device="cpu", **HEADS)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- the command line


def test_release_init_then_describe_and_chat_from_the_command_line(release, tmp_path, capsys, monkeypatch):
    from xraygpt_lab.cli import main

    def init(out) -> list[str]:
        return ["release", "init", "--vit", str(release["vit"]), "--qformer", str(release["qformer"]),
                "--checkpoint", str(release["checkpoint"]), "--llm", str(release["llm"]), "--out", str(out),
                "--vision-heads", str(VIT_HEADS), "--qformer-heads", str(QF_HEADS)]

    out = tmp_path / "run"
    args = init(out)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "eva_vit_g.pth: 'blocks.4.*' (13 keys) unused" in printed
    manifest = json.loads((out / "release.json").read_text())
    assert manifest["sizes"]["vision_depth"] == 4 and manifest["sizes"]["num_query_tokens"] == QUERIES
    assert len(manifest["files"]["vit"]["sha256"]) == 64 and "config.json" in manifest["files"]["llm"]["files"]
    assert main(args) == 0  # an earlier release folder may be rewritten
    capsys.readouterr()

    image = tmp_path / "xray.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8)).save(image)
    assert main(["describe", "--run", str(out), str(image), "--max-new-tokens", "4", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "error" not in captured.err and len(captured.out.strip().splitlines()) <= 1
    # the chat takes the release's own image processor too: two questions, two answers
    monkeypatch.setattr("sys.stdin", io.StringIO("Describe the image.\nIs there an effusion?\n"))
    assert main(["chat", "--run", str(out), "--image", str(image), "--max-new-tokens", "4", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert captured.err == "" and len(lines) == 2  # one reply per question; the test LLM's 128-token context
    assert all(line.startswith(("Doctor:", "(This question is too long")) for line in lines)  # cannot hold
    # MiniGPT-4's system prompt, so the chat says so in one line and keeps going

    other = tmp_path / "someone_elses"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(init(other)) == 2
    assert "holds files this command did not write" in capsys.readouterr().err
    assert not (other / "release.json").exists()


# --------------------------------------------------------------------------- layouts, precedence, precision


def test_lavis_prefixed_vit_file_loads_the_same(release, tmp_path, model):
    torch.save({f"visual_encoder.{k}": v for k, v in eva_state().items()}, tmp_path / "eva_prefixed.pth")
    report = inspect_release(tmp_path / "eva_prefixed.pth", release["qformer"], release["checkpoint"], **HEADS)
    assert "eva_prefixed.pth: 'visual_encoder.blocks.4.*' (13 keys) unused" in "\n".join(map(str, report.unused))
    from xraygpt_lab.models.released import build_vision_encoder

    pixels = images(1, seed=9)
    with torch.no_grad():
        assert torch.equal(build_vision_encoder(report).encode_tokens(pixels), model.encoder.encode_tokens(pixels))


def test_a_later_file_supersedes_an_earlier_one_and_says_so(release, tmp_path):
    ck = checkpoint_state() | {"query_tokens": torch.zeros(1, QUERIES, QF_WIDTH),
                               "visual_encoder.blocks.0.gamma_1": torch.ones(VIT_WIDTH)}
    torch.save({"model": ck, "epoch": 3}, tmp_path / "ck.pth")
    report = inspect_release(release["vit"], release["qformer"], tmp_path / "ck.pth", **HEADS)
    assert torch.equal(report.weights["query_tokens"]["query_tokens"], torch.zeros(1, QUERIES, QF_WIDTH))
    lines = [str(g) for g in report.unused]
    assert any(line.startswith("blip2_pretrained_flant5xxl.pth: 'query_tokens.*' (1 key) unused: superseded by the "
                               "same key in ck.pth") for line in lines)
    assert any(line.startswith("ck.pth: 'epoch' (1 key) unused: top-level entry") for line in lines)
    assert any(line.startswith("ck.pth: 'visual_encoder.blocks.*' (1 key) unused: not part of") for line in lines)


def test_llm_weights_in_a_checkpoint_are_refused(release, tmp_path):
    torch.save({"model": checkpoint_state() | {"llama_model.lm_head.weight": torch.zeros(2, 2)}}, tmp_path / "ck.pth")
    _expect_one_line(release, r"ck\.pth: holds LLM weights \('llama_model.lm_head.weight'", checkpoint=tmp_path / "ck.pth")


def test_bfloat16_vision_feeds_a_float32_qformer(release, model):
    """The GPU precision (ViT in bf16, Q-Former in fp32, as MiniGPT-4), exercised on the CPU."""
    from xraygpt_lab.models.released import build_vision_encoder

    report = inspect_release(release["vit"], release["qformer"], release["checkpoint"], **HEADS)
    half = build_vision_encoder(report, dtype=torch.bfloat16)
    assert half.vision.embeddings.patch_embedding.weight.dtype == torch.bfloat16
    assert half.vision.post_layernorm.eps == 1e-5  # ln_vision's eps, not EVA's 1e-6
    pixels = images(2)
    with torch.no_grad():
        tokens = half.encode_tokens(pixels)
        full = model.encoder.encode_tokens(pixels)
    assert tokens.dtype == torch.float32 and (tokens - full).abs().max().item() < 0.1


def test_released_sizes_map_every_key_of_the_full_model():
    """At the released sizes (ViT-g 39 blocks, Q-Former 12 layers) the conversion table covers
    transformers' modules exactly (built on the meta device: no memory)."""
    from xraygpt_lab.models.released import ReleasedSizes, _build_modules, _required_keys

    sizes = ReleasedSizes(image_size=224, patch_size=14, vision_width=1408, vision_depth=39, vision_blocks_in_file=40,
                          vision_heads=16, vision_mlp=6144, qformer_width=768, qformer_layers=12, qformer_heads=12,
                          qformer_mlp=3072, cross_attention_frequency=2, num_query_tokens=32, llm_width=4096)
    vision, qformer = _build_modules(sizes, meta=True)
    required = _required_keys(sizes)
    targets = {(t, k) for t, k in required.values()}
    assert {k for t, k in targets if t == "vision"} == set(vision.state_dict())
    assert {k for t, k in targets if t == "qformer"} == set(qformer.state_dict())
    assert sum(p.numel() for p in vision.parameters()) == pytest.approx(986e6, rel=0.01)  # EVA ViT-g, 39 blocks
    assert len(required) == 39 * 13 + 4 + 2 + 2 + 12 * 16 + 6 * 10 + 1 + 2


def test_half_precision_files_load_as_float32_on_the_cpu(release, tmp_path, model):
    """eva_vit_g.pth stores float16: the CPU model still runs in float32."""
    torch.save({k: v.half() for k, v in eva_state().items()}, tmp_path / "eva_half.pth")
    from xraygpt_lab.models.released import build_vision_encoder

    report = inspect_release(tmp_path / "eva_half.pth", release["qformer"], release["checkpoint"], **HEADS)
    encoder = build_vision_encoder(report)
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    pixels = images(1, seed=4)
    with torch.no_grad():
        assert (encoder.encode_tokens(pixels) - model.encoder.encode_tokens(pixels)).abs().max().item() < 5e-2


# --------------------------------------------------------------------------- files that are not what they seem


def _init_args(release, out, **paths) -> list[str]:
    files = {k: release[k] for k in ("vit", "qformer", "checkpoint", "llm")} | paths
    return ["release", "init", "--vit", str(files["vit"]), "--qformer", str(files["qformer"]),
            "--checkpoint", str(files["checkpoint"]), "--llm", str(files["llm"]), "--out", str(out),
            "--vision-heads", str(VIT_HEADS), "--qformer-heads", str(QF_HEADS)]


def test_release_init_never_replaces_a_release_json_it_did_not_write(release, tmp_path, capsys):
    from xraygpt_lab.cli import main

    out = tmp_path / "theirs"
    out.mkdir()
    (out / "release.json").write_text('{"tag_name": "v1.0"}')
    assert main(_init_args(release, out)) == 2
    assert "holds files this command did not write" in capsys.readouterr().err
    assert json.loads((out / "release.json").read_text()) == {"tag_name": "v1.0"}
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "release.json").symlink_to(out / "release.json")
    assert main(_init_args(release, linked)) == 2
    assert (linked / "release.json").is_symlink() and json.loads((out / "release.json").read_text()) == {"tag_name": "v1.0"}


def test_a_file_swapped_for_another_of_the_same_size_is_refused(release, tmp_path, capsys):
    import shutil

    from xraygpt_lab.cli import main
    from xraygpt_lab.models.released import load_release_run

    ck = tmp_path / "xraygpt.pth"
    torch.save({"model": checkpoint_state()}, ck)
    out = tmp_path / "run"
    assert main(_init_args(release, out, checkpoint=ck)) == 0
    capsys.readouterr()
    os.utime(ck, ns=(1, 1))  # touched, same content: still the recorded file
    assert load_release_run(out, device="cpu").projection.weight.shape == (LLM_WIDTH, QF_WIDTH)
    (tmp_path / "other").mkdir()
    other = tmp_path / "other" / "xraygpt.pth"  # torch.save stores the file's name inside
    torch.save({"model": reduced.checkpoint_state(LAYOUT, 5)}, other)
    assert other.stat().st_size == ck.stat().st_size
    shutil.copy(other, ck)
    with pytest.raises(ReleasedLoadError, match=r"xraygpt\.pth: its SHA-256 differs from the one .*release\.json"):
        load_release_run(out, device="cpu")
    manifest = json.loads((out / "release.json").read_text())
    assert {"config.json", "tokenizer.json"} <= set(manifest["files"]["llm"]["files"])


def test_a_stray_key_neither_adds_a_block_nor_a_layer(release, tmp_path):
    torch.save(eva_state() | {f"blocks.{VIT_BLOCKS}.attn.extra": torch.zeros(2)}, tmp_path / "eva.pth")
    qf = blip2_state() | {f"Qformer.bert.encoder.layer.{QF_LAYERS}.foo": torch.zeros(2)}
    torch.save({"model": qf}, tmp_path / "blip2.pth")
    report = inspect_release(tmp_path / "eva.pth", tmp_path / "blip2.pth", release["checkpoint"], **HEADS)
    assert (report.sizes.vision_blocks_in_file, report.sizes.vision_depth) == (VIT_BLOCKS, VIT_BLOCKS - 1)
    assert report.sizes.qformer_layers == QF_LAYERS
    lines = "\n".join(map(str, report.unused))
    assert f"eva.pth: 'blocks.{VIT_BLOCKS}.*' (1 key) unused: not part of" in lines
    assert "blip2.pth: 'Qformer.bert.*' (1 key) unused: not part of" in lines


def test_one_file_in_two_roles_is_read_once_and_same_names_are_told_apart(release, tmp_path, model):
    from xraygpt_lab.models.released import build_vision_encoder

    combined = tmp_path / "combined.pth"
    torch.save({"model": blip2_state() | checkpoint_state()}, combined)
    report = inspect_release(release["vit"], combined, combined, **HEADS)
    lines = [str(g) for g in report.unused]
    assert not any("superseded" in line or "query_tokens" in line or "llama_proj" in line for line in lines), lines
    # a built LAVIS / MiniGPT-4 model's whole state: its ViT (prefixed, already cut to the blocks it
    # uses) beside ln_vision and the Q-Former; all of its blocks are used and none is reported unused
    built = {f"visual_encoder.{k}": v for k, v in eva_state().items() if f"blocks.{VIT_BLOCKS - 1}." not in k}
    lavis = tmp_path / "lavis_dump.pth"
    torch.save(built | blip2_state(), lavis)
    report = inspect_release(lavis, lavis, release["checkpoint"], **HEADS)
    assert report.sizes.num_query_tokens == QUERIES and report.sizes.vision_depth == VIT_BLOCKS - 1
    assert report.sizes.vision_blocks_in_file == VIT_BLOCKS - 1
    assert not any("blocks" in str(g) for g in report.unused), report.unused
    torch.save(built | blip2_state() | {"visual_encoder.blocks.8.extra": torch.zeros(1)}, lavis)
    assert inspect_release(lavis, lavis, release["checkpoint"], **HEADS).sizes.vision_depth == VIT_BLOCKS - 1
    torch.save(built | blip2_state(), lavis)
    pixels = images(1, seed=9)
    with torch.no_grad():
        assert torch.equal(build_vision_encoder(report).encode_tokens(pixels), model.encoder.encode_tokens(pixels))
    # EVA's own file (all of its blocks) keeps the original's cut, prefixed or not
    torch.save({f"visual_encoder.{k}": v for k, v in eva_state().items()}, tmp_path / "eva_prefixed.pth")
    report = inspect_release(tmp_path / "eva_prefixed.pth", release["qformer"], release["checkpoint"], **HEADS)
    assert report.sizes.vision_depth == VIT_BLOCKS - 1
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    torch.save({"model": blip2_state() | {"extra.x": torch.zeros(1)}}, tmp_path / "a" / "model.pth")
    torch.save({"model": checkpoint_state() | {"extra.x": torch.zeros(1)}}, tmp_path / "b" / "model.pth")
    report = inspect_release(release["vit"], tmp_path / "a" / "model.pth", tmp_path / "b" / "model.pth", **HEADS)
    line = next(str(g) for g in report.unused if "superseded" in str(g))
    assert line.startswith(f"{tmp_path / 'a' / 'model.pth'}: 'extra.*'") and line.endswith(
        f"same key in {tmp_path / 'b' / 'model.pth'} (loaded later, as MiniGPT-4 does)")


def test_a_safetensors_copy_loads_and_a_folder_is_named_as_one(release, tmp_path, model):
    from safetensors.torch import save_file

    save_file(eva_state(), tmp_path / "eva_vit_g.pth")  # converted, under the original name
    report = inspect_release(tmp_path / "eva_vit_g.pth", release["qformer"], release["checkpoint"], **HEADS)
    assert report.sizes.vision_depth == VIT_BLOCKS - 1
    from xraygpt_lab.models.released import build_vision_encoder

    pixels = images(1, seed=3)
    with torch.no_grad():
        assert torch.equal(build_vision_encoder(report).encode_tokens(pixels), model.encoder.encode_tokens(pixels))
    (tmp_path / "folder.pth").mkdir()
    _expect_one_line(release, r"folder\.pth: is a folder, not a file", vit=tmp_path / "folder.pth")


def test_release_init_checks_the_llm_folder(release, tmp_path, capsys):
    import shutil

    from transformers import AutoModelForCausalLM

    from xraygpt_lab.cli import main

    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(release["llm"], no_tokenizer)
    for name in ("tokenizer.json", "tokenizer.model"):
        (no_tokenizer / name).unlink(missing_ok=True)
    assert main(_init_args(release, tmp_path / "run1", llm=no_tokenizer)) == 2
    assert "missing tokenizer.json" in capsys.readouterr().err and not (tmp_path / "run1" / "release.json").exists()
    sharded = tmp_path / "sharded"
    shutil.copytree(release["llm"], sharded)
    (sharded / "model.safetensors").unlink()
    AutoModelForCausalLM.from_pretrained(release["llm"]).save_pretrained(sharded, max_shard_size="20KB")
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    assert main(_init_args(release, tmp_path / "run2", llm=sharded)) == 2
    err = capsys.readouterr().err.strip()
    assert f"missing {shards[-1].name} of the {len(shards)} shards model.safetensors.index.json lists" in err
    assert len(err.splitlines()) == 1


def test_a_code_carrying_llm_bin_is_refused_by_name(release, tmp_path):
    import shutil

    from xraygpt_lab.errors import CorruptFileError
    from xraygpt_lab.models.llm import load_llm

    folder = tmp_path / "vicuna"
    shutil.copytree(release["llm"], folder)
    (folder / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": _RunsCode()}, folder / "pytorch_model.bin")
    with pytest.raises(CorruptFileError, match=r"pytorch_model\.bin: refused: the pickle carries code") as info:
        load_llm(folder)
    assert "weights_only set to False" not in str(info.value) and "\n" not in str(info.value)


def test_a_terse_7b_config_still_counts_as_7b(release, tmp_path):
    from xraygpt_lab.models.released import llm_parameter_count

    assert llm_parameter_count({"model_type": "llama", "hidden_size": 4096}) > 6.5e9
    folder = tmp_path / "terse"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    g = torch.Generator().manual_seed(0)
    torch.save({"model": _linear(g, "llama_proj", 4096, QF_WIDTH)}, tmp_path / "ck.pth")
    with pytest.raises(ReleasedLoadError, match=r"6\.7B-parameter LLM needs a GPU"):
        load_release(release["vit"], release["qformer"], tmp_path / "ck.pth", folder, device="cpu", **HEADS)
