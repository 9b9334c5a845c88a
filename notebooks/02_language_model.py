# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The language model: LLaMA piece by piece
#
# XrayGPT (arXiv 2306.07971, Sec. 3) writes its reports with **Vicuna-7B**, a LLaMA model
# fine-tuned on conversations, then on medical and radiology dialogues. The image enters as a
# few "soft tokens"; everything else is an ordinary decoder-only transformer.
#
# **Learning goals.** After this notebook you can
# 1. train a BPE tokenizer with `tokenizers` and read how it cuts radiology words;
# 2. write RMSNorm, rotary position embeddings (RoPE), the SwiGLU MLP and causal
#    self-attention in a few lines each — and check each against `LlamaForCausalLM`'s own module;
# 3. fine-tune a tiny LLaMA on report text and watch it pick up the domain;
# 4. count what LoRA trains, on the toy model and on a 7B-shaped one.
#
# Everything runs on a CPU in about a minute. The model is tiny and random at the start;
# the point is that **the code path is exactly the 7B one**, only the sizes differ. The
# fine-tuning of section 3 runs on the toolkit's device (`xraygpt_lab.device`: a CUDA GPU when
# present, else the CPU); the by-hand checks of section 2 stay on the CPU, where our code and the
# library's run the same kernels.

# %%
import math
import time
import warnings

import matplotlib.pyplot as plt
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from xraygpt_lab.data.synthetic.world import generate_cases
from xraygpt_lab.device import default_device, describe_device

torch.manual_seed(0)
torch.set_num_threads(2)
device = default_device()  # CUDA when present, else the CPU; XRAYGPT_DEVICE=cpu forces the CPU
print("Running on:", describe_device(device))
cases = list(generate_cases(240, size=64, seed=2))
corpus = [c.summary for c in cases]
print(len(corpus), "reports; first one:\n", corpus[0][:200], "…")

# %% [markdown]
# ## 1 · A tokenizer trained on our reports
#
# LLaMA uses a 32,000-piece SentencePiece BPE vocabulary. We train a byte-level BPE with the
# Hugging Face `tokenizers` library on the synthetic reports: 512 pieces are enough for a world
# with a few hundred distinct words. Byte-level means any string can be encoded — unseen words
# simply fall back to smaller pieces.

# %%
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=512, special_tokens=["<s>", "</s>", "<unk>", "<pad>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
)
bpe.train_from_iterator(corpus[:200], trainer=trainer)
for text in ["Small left pleural effusion.", "Pneumomediastinum is absent."]:
    pieces = bpe.encode(text).tokens
    print(f"{len(pieces):2d} pieces:", [p.replace("Ġ", "▁") for p in pieces])
assert bpe.decode(bpe.encode(corpus[0]).ids) == corpus[0]  # lossless round trip

# %% [markdown]
# Frequent words of the corpus ("effusion", "pleural") became single pieces; a word the corpus
# never used ("Pneumomediastinum") is spelled out from smaller ones. Vicuna's tokenizer does the
# same at a larger scale.
#
# ## 2 · A tiny LLaMA with random weights
#
# `LlamaConfig` with toy sizes builds the same classes as Vicuna-7B
# (hidden 4096, 32 layers, 32 heads, MLP 11008). We now rebuild its four ideas by hand.

# %%
config = LlamaConfig(
    vocab_size=bpe.get_vocab_size(), hidden_size=64, intermediate_size=172, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
    bos_token_id=0, eos_token_id=1, pad_token_id=3, attn_implementation="eager",
)
model = LlamaForCausalLM(config).eval()
ids = torch.tensor([[0] + bpe.encode(corpus[1]).ids[:23]])  # [1, T]  BOS + 23 tokens
print(model.model.layers[0])
print(f"{sum(p.numel() for p in model.parameters()):,} parameters; input ids {list(ids.shape)}")

# %% [markdown]
# We record what every sub-module receives and returns with forward hooks, so each hand-written
# piece can be compared against the real one on the real activations.

# %%
captured: dict[str, tuple] = {}


def keep(name):
    def hook(module, args, kwargs, output):
        captured[name] = (args, kwargs, output)
    return hook


layer = model.model.layers[0]
handles = [
    layer.input_layernorm.register_forward_hook(keep("norm"), with_kwargs=True),
    layer.self_attn.register_forward_hook(keep("attn"), with_kwargs=True),
    layer.mlp.register_forward_hook(keep("mlp"), with_kwargs=True),
]
with torch.no_grad():
    logits = model(ids).logits  # [1, T, vocab]
for h in handles:
    h.remove()
print({k: tuple(v[2][0].shape if isinstance(v[2], tuple) else v[2].shape) for k, v in captured.items()})

# %% [markdown]
# ### 2a · RMSNorm
# LLaMA normalises by the root-mean-square only (no mean subtraction, no bias; Zhang & Sennrich
# 2019): `y = x / sqrt(mean(x²) + ε) · g`. You write it yourself in **Exercise 1** at the end;
# here we use the layer's own module and check the property that makes it a *norm*: whatever the
# input's scale, every output vector has a root-mean-square of about 1 before the gain `g`.

# %%
x_in = captured["norm"][0][0]  # [1, T, h]
out = layer.input_layernorm(x_in * 10.0) / layer.input_layernorm.weight  # [1, T, h], gain divided out
rms = out.pow(2).mean(-1).sqrt()  # [1, T]
assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3)
assert torch.allclose(layer.input_layernorm(x_in), captured["norm"][2])
print(f"RMS of each normalised vector: {rms.min():.4f}–{rms.max():.4f} (input scaled by 10)")

# %% [markdown]
# ### 2b · Rotary position embeddings (RoPE)
# RoPE (Su et al. 2021) rotates each pair of query/key channels by an angle
# `position · θ_i`, with `θ_i = 10000^(−2i/d)`. The dot product of a rotated query and key then
# depends only on their **distance**. LLaMA pairs channel `i` with channel `i + d/2`
# ("rotate half").

# %%
head_dim = config.hidden_size // config.num_attention_heads
positions = torch.arange(ids.shape[1], dtype=torch.float32)  # [T]
inv_freq = 1.0 / (config.rope_parameters["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))  # [d/2]
angles = torch.outer(positions, inv_freq)  # [T, d/2]
cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()  # [T, d]

ref_cos, ref_sin = model.model.rotary_emb(x_in, positions[None].long())  # [1, T, d]
assert torch.allclose(cos, ref_cos[0], atol=1e-5) and torch.allclose(sin, ref_sin[0], atol=1e-5)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: torch.Tensor) -> torch.Tensor:  # x [..., T, d] or [d] (broadcast over positions)
    return x * cos + rotate_half(x) * sin


# The score between a query at position m and a key at position n depends only on m − n:
q_vec, k_vec = torch.randn(head_dim), torch.randn(head_dim)
near = apply_rope(q_vec)[10] @ apply_rope(k_vec)[7]  # positions (10, 7)
far = apply_rope(q_vec)[20] @ apply_rope(k_vec)[17]  # positions (20, 17): same distance
assert torch.isclose(near, far, atol=1e-4)
print(f"RoPE cos/sin match LlamaRotaryEmbedding ✓; score(10, 7) = {near:.3f} = score(20, 17) = {far:.3f}")


# %% [markdown]
# ### 2c · Causal self-attention
# Project to queries, keys, values; rotate queries and keys; scaled dot products; mask the
# future (a token may only look left); softmax; mix the values; project back.

# %%
def causal_attention(x: torch.Tensor, attn: nn.Module) -> torch.Tensor:
    b, t, _ = x.shape
    heads = config.num_attention_heads
    q = attn.q_proj(x).view(b, t, heads, head_dim).transpose(1, 2)  # [B, H, T, d]
    k = attn.k_proj(x).view(b, t, heads, head_dim).transpose(1, 2)  # [B, H, T, d]
    v = attn.v_proj(x).view(b, t, heads, head_dim).transpose(1, 2)  # [B, H, T, d]
    q, k = apply_rope(q), apply_rope(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)  # [B, H, T, T]
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    weights = scores.masked_fill(future, float("-inf")).softmax(-1)  # [B, H, T, T]
    out = (weights @ v).transpose(1, 2).reshape(b, t, -1)  # [B, T, h]
    return attn.o_proj(out)


attn_in = captured["attn"][1]["hidden_states"] if "hidden_states" in captured["attn"][1] else captured["attn"][0][0]
ours = causal_attention(attn_in, layer.self_attn)
assert torch.allclose(ours, captured["attn"][2][0], atol=1e-5)
print("causal attention matches LlamaAttention ✓")

# %% [markdown]
# ### 2d · The SwiGLU MLP
# LLaMA's feed-forward block is a gated linear unit with the SiLU ("swish") gate
# (Shazeer 2020): `down(silu(gate(x)) ⊙ up(x))`, hidden width ≈ 8/3 · h (11008 for h = 4096).

# %%
def swiglu(x: torch.Tensor, mlp: nn.Module) -> torch.Tensor:
    return mlp.down_proj(nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))  # [B, T, h]


mlp_in = captured["mlp"][0][0]
assert torch.allclose(swiglu(mlp_in, layer.mlp), captured["mlp"][2], atol=1e-6)
print("SwiGLU matches LlamaMLP ✓")

# %% [markdown]
# ### 2e · Put together: the whole forward pass
# Embedding → for each layer: `x + attn(norm(x))`, then `x + mlp(norm(x))` → final norm →
# `lm_head`. Our hand-built model must give the same next-token logits as `LlamaForCausalLM`.

# %%
with torch.no_grad():
    hidden = model.model.embed_tokens(ids)  # [1, T, h]
    for block in model.model.layers:
        hidden = hidden + causal_attention(block.input_layernorm(hidden), block.self_attn)
        hidden = hidden + swiglu(block.post_attention_layernorm(hidden), block.mlp)
    ours = model.lm_head(model.model.norm(hidden))  # [1, T, vocab]
assert torch.allclose(ours, logits, atol=1e-4)
print("hand-built forward == LlamaForCausalLM ✓ (max |Δ| = %.1e)" % (ours - logits).abs().max())

# %% [markdown]
# ## 3 · Domain fine-tuning: teach the tiny LLaMA to write reports
#
# XrayGPT's "MedVicuna"/"RadVicuna" steps fine-tune Vicuna on medical text. Our model starts from
# random weights, so this is pre-training and fine-tuning at once: next-token cross-entropy on the
# reports. Watch the loss fall while it trains (the plot redraws every 10 steps) and the greedy
# continuation change.

# %%
def batches(texts, size, generator):
    encoded = [[0] + bpe.encode(t).ids[:63] + [1] for t in texts]
    while True:
        order = torch.randperm(len(encoded), generator=generator)[:size]
        rows = [encoded[i] for i in order]
        width = max(map(len, rows))
        ids = torch.full((size, width), 3)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
        labels = ids.masked_fill(ids == 3, -100)  # no loss on padding
        yield ids, labels


def greedy(prompt: str, steps: int = 14) -> str:
    ids = torch.tensor([[0] + bpe.encode(prompt).ids], device=device)
    out = model.generate(ids, max_new_tokens=steps, do_sample=False, pad_token_id=3, eos_token_id=1)
    return bpe.decode(out[0, 1:].tolist())


from xraygpt_lab.widgets.live import LiveCurves

prompt = "The heart"
model.to(device)  # the same weights, now on the training device
print("before:", greedy(prompt))
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
stream = batches(corpus[:200], 12, torch.Generator().manual_seed(0))
losses, start = [], time.perf_counter()
live = LiveCurves(every=10, window=8, width=6, titles={"lm": "tiny LLaMA on synthetic reports"})
for step in range(80):
    ids_b, labels_b = (t.to(device) for t in next(stream))  # batches are built on the CPU
    loss = model(ids_b, labels=labels_b).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    live("lm", {"loss": losses[-1]})
live.close()
model.eval()
print(f"{len(losses)} steps in {time.perf_counter() - start:.0f} s; loss {losses[0]:.2f} → {losses[-1]:.2f}")
print("after: ", greedy(prompt))
assert losses[-1] < 0.5 * losses[0]

# %%
with torch.no_grad():
    held_out = [[0] + bpe.encode(t).ids[:63] + [1] for t in corpus[200:]]
    nll = [model(torch.tensor([r], device=device), labels=torch.tensor([r], device=device)).loss.item()
           for r in held_out]
print(f"held-out perplexity {math.exp(sum(nll) / len(nll)):.1f} (vocabulary {config.vocab_size}: uniform guessing = {config.vocab_size})")

# %% [markdown]
# **Caveat.** A low perplexity here means the model learned the synthetic world's phrasing,
# which is far more repetitive than real radiology reports. It says nothing about clinical
# knowledge — that is why XrayGPT starts from a 7B model trained on much more text.
#
# ## 4 · LoRA: what would we train at 7B?
#
# Full fine-tuning of 7B parameters needs ~4 × 7B × 4 bytes of optimizer state. LoRA (Hu et al.
# 2021) freezes the weights and learns a low-rank update `W + B·A` (rank r) in chosen projections.
# `peft` wraps the model; we count trainable parameters.

# %%
from peft import LoraConfig, get_peft_model

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # a library's own deprecation notice

lora = get_peft_model(
    LlamaForCausalLM(config),
    LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM"),
)
trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
total = sum(p.numel() for p in lora.parameters())
print(f"tiny: {trainable:,} trainable of {total:,} ({trainable / total:.2%})")
expected = config.num_hidden_layers * 2 * 4 * (config.hidden_size + config.hidden_size)  # layers × {q,v} × r·(in+out)
assert trainable == expected

# the same arithmetic at Vicuna-7B's shape (32 layers, hidden 4096, r = 8 on q and v)
lora_7b = 32 * 2 * 8 * (4096 + 4096)
print(f"7B, r=8 on q,v: {lora_7b:,} trainable of ~6.74 B ({lora_7b / 6.74e9:.3%})")

# %% [markdown]
# ## 5 · The library wraps the same classes
#
# `xraygpt_lab.models.llm` builds the project's tiny LLM and tokenizer (and loads Vicuna from a
# folder in the `full` profile). It is the same `LlamaForCausalLM`; only the sizes and the
# template tokens (`<Img>`, `<ImageHere>`, `###`) differ.

# %%
try:
    from xraygpt_lab.models import llm as llm_module
except ImportError as err:  # the module is written by another part of the project
    llm_module = None
    print("xraygpt_lab.models.llm not available:", err)
if llm_module is not None and hasattr(llm_module, "train_tokenizer") and hasattr(llm_module, "tiny_llm"):
    tokenizer = llm_module.train_tokenizer(corpus, vocab_size=512)
    library_model = llm_module.tiny_llm(tokenizer)
    assert isinstance(library_model, LlamaForCausalLM)
    print(type(library_model).__name__, library_model.config.hidden_size, "hidden,",
          library_model.config.num_hidden_layers, "layers,", len(tokenizer), "tokens")
    print("template pieces:", tokenizer.tokenize("###Patient: <Img><ImageHere></Img> Describe. ###Doctor:"))

# %% [markdown]
# **Takeaways.** LLaMA is four small ideas (RMSNorm, RoPE, SwiGLU, causal attention) stacked.
# XrayGPT keeps all of it frozen and learns only how to *speak into* it: notebook 03 splices
# image tokens into this very forward pass.

# %% [markdown]
# ## Exercises: RMSNorm and RoPE (checked against the 7B model's code)
#
# Both checkers compare your function with `transformers`' LLaMA implementation on random inputs.
# Solutions: `tutorials/solutions/s02_language_model.py`.
#
# **Exercise 1 — RMSNorm** (Zhang & Sennrich 2019). Write `rms_norm(x, weight, eps)`: divide
# `x [..., d]` by the root mean square of its last dimension (plus `eps` inside the root) and
# multiply by `weight [d]`. No mean subtraction, no bias: that is what makes it cheaper than LayerNorm.

# %%
import torch

from xraygpt_lab.exercises import check_rms_norm, check_rope


def rms_norm(x, weight, eps=1e-6):
    # YOUR CODE HERE
    raise NotImplementedError


check_rms_norm(rms_norm)

# %% [markdown]
# What LayerNorm gets from the checker (it subtracts the mean first):

# %%
check_rms_norm(lambda x, weight, eps: torch.nn.functional.layer_norm(x, x.shape[-1:], weight, None, eps))

# %% [markdown]
# **Exercise 2 — rotary position embedding** (Su et al. 2021). Write
# `apply_rope(x, position_ids, base)` for `x [B, heads, T, d]`: rotate each pair of dimensions
# `(i, i + d/2)` by the angle `position · base^(-2i/d)`, i.e.
# `x · cos + rotate_half(x) · sin` with `rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2])`.
# (LLaMA's code pairs `i` with `i + d/2`, not the neighbours `2i, 2i+1` of the paper: the
# checker tells you if you used the paper's pairing.)

# %%
def apply_rope(x, position_ids, base=10000.0):
    # YOUR CODE HERE
    raise NotImplementedError


check_rope(apply_rope)

# %% [markdown]
# Question: why does the dot product of a rotated query and a rotated key depend only on the
# *difference* of their positions? (Hint: a rotation by α followed by the transpose of a rotation
# by β is a rotation by α − β.)
#
# <details><summary>Answer (click)</summary>
#
# RoPE multiplies each channel pair of the query at position m by a rotation `R(mθ)` and of the key
# at position n by `R(nθ)`. Their dot product is `(R(mθ) q)ᵀ (R(nθ) k) = qᵀ R(mθ)ᵀ R(nθ) k =
# qᵀ R((n − m)θ) k`, because rotations compose by adding angles and `R(α)ᵀ = R(−α)`. Only `n − m`
# is left: attention sees how far apart two tokens are, not where they are (the cell of §2b printed
# the same score for positions (10, 7) and (20, 17)).
#
# </details>
