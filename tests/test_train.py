"""Training machinery: schedule values, exact resume, checkpoints, feature cache."""
from __future__ import annotations

import math

import pytest
import torch

from xraygpt_lab.errors import RunFolderError
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.llm import tiny_llm, train_tokenizer
from xraygpt_lab.models.xraygpt import XrayGPT
from xraygpt_lab.train.align import AlignmentSet, align_stage, alignment_batches
from xraygpt_lab.run_folder import load_weights, save_weights
from xraygpt_lab.train.feature_cache import FeatureCache, module_hash
from xraygpt_lab.train.llm_finetune import conversation_examples, domain_finetune, text_batch
from xraygpt_lab.train.schedule import XRAYGPT_STAGE1, XRAYGPT_STAGE2, StageConfig, warmup_cosine_lr

REPORTS = [
    "There is a small left pleural effusion. The heart size is normal.",
    "The heart is enlarged. No pleural effusion or pneumothorax.",
    "Lungs are clear. No acute cardiopulmonary process.",
    "There is a right pneumothorax. No effusion.",
]


def small_encoder() -> VisionEncoder:
    torch.manual_seed(0)
    return VisionEncoder(EncoderConfig(image_size=32, patch_size=8, embed_dim=16, depths=[1, 1],
                                       num_heads=[2, 2], window_size=2, projection_dim=16))


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(REPORTS * 10 + ["###Patient: <Img><ImageHere></Img> Describe. ###Doctor: "], vocab_size=320)


def small_model(tokenizer) -> XrayGPT:
    llm = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, max_position_embeddings=256)
    torch.manual_seed(1)
    return XrayGPT(small_encoder(), llm, tokenizer)


def test_schedule_follows_xraygpt_values():
    s = XRAYGPT_STAGE1
    assert (s.init_lr, s.min_lr, s.warmup_lr, s.warmup_steps, s.weight_decay) == (1e-4, 8e-5, 1e-6, 500, 0.05)
    assert (XRAYGPT_STAGE2.init_lr, XRAYGPT_STAGE2.min_lr, XRAYGPT_STAGE2.warmup_steps) == (3e-5, 1e-5, 200)
    assert warmup_cosine_lr(0, s) == pytest.approx(1e-6)
    assert warmup_cosine_lr(250, s) == pytest.approx(1e-6 + (1e-4 - 1e-6) / 2)
    assert warmup_cosine_lr(500, s) == pytest.approx(1e-4)
    assert warmup_cosine_lr(s.steps, s) == pytest.approx(8e-5)
    mid = 500 + (s.steps - 500) // 2
    assert warmup_cosine_lr(mid, s) == pytest.approx(9e-5, rel=1e-3)
    lrs = [warmup_cosine_lr(k, s) for k in range(500, s.steps, 997)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay after warm-up


def test_stage_config_rejects_bad_values():
    with pytest.raises(ValueError, match="min_lr"):
        StageConfig(name="x", steps=10, batch_size=1, init_lr=1e-4, min_lr=1e-3, warmup_lr=0, warmup_steps=0)
    with pytest.raises(ValueError, match="steps"):
        StageConfig(name="x", steps=0, batch_size=1, init_lr=1e-4, min_lr=0, warmup_lr=0, warmup_steps=0)


def _stage(steps: int) -> StageConfig:
    return StageConfig(name="t", steps=steps, batch_size=3, init_lr=3e-3, min_lr=1e-3, warmup_lr=1e-4,
                       warmup_steps=2, seed=5, save_every=100)


def test_alignment_trains_only_the_projection_and_loss_falls(tokenizer):
    model = small_model(tokenizer)
    before = {n: p.clone() for n, p in model.named_parameters()}
    data = AlignmentSet(torch.randn(4, 4, model.projection.in_features), REPORTS)
    result = align_stage(model, data, _stage(30), progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"projection.weight", "projection.bias"}
    first = sum(h["loss"] for h in result.history[:5]) / 5
    last = sum(h["loss"] for h in result.history[-5:]) / 5
    assert last < first
    assert result.history[0]["lr"] == pytest.approx(1e-4)


def test_resume_midway_gives_identical_weights(tokenizer, tmp_path):
    data = AlignmentSet(torch.randn(4, 4, 32), REPORTS)
    straight = small_model(tokenizer)
    align_stage(straight, data, _stage(8), progress=False)

    resumed = small_model(tokenizer)
    ckpt = tmp_path / "stage.safetensors"
    first = align_stage(resumed, data, _stage(8), ckpt, stop_after=4, progress=False)
    assert not first.finished and first.steps_done == 4 and ckpt.is_file()
    again = small_model(tokenizer)  # a fresh process: new model, state only from the file
    assert not torch.equal(again.projection.weight, resumed.projection.weight)
    second = align_stage(again, data, _stage(8), ckpt, progress=False)
    assert second.finished and len(second.history) == 8
    assert torch.equal(again.projection.weight, straight.projection.weight)
    assert torch.equal(again.projection.bias, straight.projection.bias)


def test_fused_adamw_resumes_channels_last_weights_exactly():
    """A checkpoint stores the AdamW moments contiguous; a channels_last parameter (the encoder's
    layout) must get them back in its own layout, since the fused kernel (the training loop's
    choice on the CPU) pairs a parameter with its moments element by element in memory order."""
    from xraygpt_lab.train.checkpoint import load_optimizer_state, optimizer_state
    from xraygpt_lab.train.loop import fusable

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    images = torch.randn(4, 3, 8, 8)
    assert fusable(list(conv.parameters()))

    def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
        for step in steps:
            optimizer.zero_grad()
            (model(images) * (step + 1)).sin().sum().backward()
            optimizer.step()

    straight = torch.optim.AdamW(conv.parameters(), lr=1e-2, fused=True)
    train(conv, straight, range(3))
    tensors, groups = optimizer_state(straight)
    saved = {k: v.contiguous().clone() for k, v in tensors.items()}  # as the safetensors file holds them
    resumed_conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    resumed_conv.load_state_dict(conv.state_dict())
    resumed = torch.optim.AdamW(resumed_conv.parameters(), lr=1e-2, fused=True)
    load_optimizer_state(resumed, saved, groups)
    moment = resumed.state[resumed_conv.weight]["exp_avg"]
    assert moment.stride() == resumed_conv.weight.stride() != moment.contiguous().stride()
    train(conv, straight, range(3, 6))
    train(resumed_conv, resumed, range(3, 6))
    assert torch.equal(resumed_conv.weight, conv.weight) and torch.equal(resumed_conv.bias, conv.bias)
    assert not fusable([torch.zeros(2, dtype=torch.long)]) and not fusable([])


def test_checkpoint_from_other_model_is_rejected(tokenizer, tmp_path):
    data = AlignmentSet(torch.randn(4, 4, 32), REPORTS)
    ckpt = tmp_path / "stage.safetensors"
    align_stage(small_model(tokenizer), data, _stage(2), ckpt, progress=False)
    llm = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(RunFolderError, match="checkpoint holds"):
        domain_finetune(llm, tokenizer, conversation_examples([[{"question": "q", "answer": "a"}]]),
                        _stage(4), ckpt, progress=False)


def test_alignment_batches_are_a_function_of_the_step():
    data = AlignmentSet(torch.randn(5, 2, 3), [f"report {i}" for i in range(5)])
    make = alignment_batches(data, 4)
    from xraygpt_lab.train.loop import step_rng

    a, b = make(3, step_rng(0, 3)), make(3, step_rng(0, 3))
    assert a["prompts"] == b["prompts"] and torch.equal(a["features"], b["features"])
    assert all("<ImageHere>" in p and p.endswith("###Doctor: ") for p in a["prompts"])


def test_draw_weights_draw_an_image_that_often_and_uniform_draws_stay_as_they_were():
    from xraygpt_lab.train.loop import step_rng

    data = AlignmentSet(torch.arange(4.0).view(4, 1, 1).expand(4, 2, 3).clone(), [f"report {i}" for i in range(4)])
    uniform, weighted = alignment_batches(data, 8), alignment_batches(data, 8, draw_weights=[3, 1, 1, 1])
    counts = torch.zeros(4)
    for step in range(300):
        picked = weighted(step, step_rng(0, step))["features"][:, 0, 0].long()  # [8] image indices
        counts += torch.bincount(picked, minlength=4)
    share = counts / counts.sum()
    assert abs(share[0] - 0.5) < 0.04 and (share[1:] - 1 / 6).abs().max() < 0.04, share
    # without weights the draws are those of a run trained before the option existed
    rng = step_rng(0, 7)
    expected = [rng.randrange(4) for _ in range(8)]
    assert uniform(7, step_rng(0, 7))["features"][:, 0, 0].long().tolist() == expected
    with pytest.raises(ValueError, match="draw_weights"):
        alignment_batches(data, 8, draw_weights=[1, 1])


def test_yes_no_share_asks_each_images_own_questions_balanced_per_question():
    from xraygpt_lab.train.align import yes_no_turns
    from xraygpt_lab.train.loop import step_rng

    effusion = {"question": "Is there a pleural effusion?", "answer": "Yes, a small left pleural effusion."}
    clear = {"question": "Is there a pleural effusion?", "answer": "No, there is no pleural effusion."}
    heart = {"question": "Is the heart enlarged?", "answer": "No. The heart is normal in size."}
    describe = {"question": "Describe the image.", "answer": "A report."}
    # one image in four has an effusion: unbalanced, the question alone would predict "No"
    conversations = [[describe, effusion, heart]] + [[describe, clear, heart]] * 3
    questions = yes_no_turns(conversations)
    assert questions[0] == [(effusion["question"], effusion["answer"]), (heart["question"], heart["answer"])]
    data = AlignmentSet(torch.arange(4.0).view(4, 1, 1).expand(4, 2, 3).clone(), [f"report {i}" for i in range(4)],
                        questions=questions)
    make = alignment_batches(data, 8, yes_no_share=1.0)
    answers = {"yes": 0, "no": 0}
    for step in range(400):
        batch = make(step, step_rng(0, step))
        for prompt, target, feature in zip(batch["prompts"], batch["targets"], batch["features"]):
            image = int(feature[0, 0])
            assert (prompt.split("</Img> ")[1].removesuffix(" ###Doctor: "), target) in questions[image]
            if target.startswith(("Yes, a small", "No, there is no pleural")):
                answers["yes" if target.startswith("Yes") else "no"] += 1
    assert 0.4 < answers["yes"] / sum(answers.values()) < 0.6, answers  # 0.25 without the balance
    mixed = alignment_batches(data, 8, yes_no_share=0.5)
    targets = [t for step in range(50) for t in mixed(step, step_rng(0, step))["targets"]]
    assert 0.35 < sum(t.startswith("report") for t in targets) / len(targets) < 0.65
    with pytest.raises(ValueError, match="needs an alignment set with yes/no questions"):
        alignment_batches(AlignmentSet(data.features, data.targets), 8, yes_no_share=0.3)
    # the image with the effusion drawn three times as often: the balance holds over the draws
    weighted = alignment_batches(data, 8, yes_no_share=1.0, draw_weights=[3, 1, 1, 1])
    said = [t.startswith("Yes") for step in range(400) for t in weighted(step, step_rng(0, step))["targets"]
            if t.startswith(("Yes, a small", "No, there is no pleural"))]
    assert 0.4 < sum(said) / len(said) < 0.6, sum(said) / len(said)  # 0.75 with weights fitted to even draws

def test_text_batch_masks_bos_and_prompt(tokenizer):
    batch = text_batch(tokenizer, ["###Patient: Is there an effusion? ###Doctor: "], ["Yes.###"])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    assert ids[0] == tokenizer.bos_token_id and labels[0] == -100
    target = tokenizer("Yes.###", add_special_tokens=False)["input_ids"]
    assert labels[labels != -100].tolist() == target
    assert tokenizer.decode(ids[-len(target):]) == "Yes.###"


def test_packed_batch_gives_each_example_its_own_logits_and_the_padded_loss(tokenizer):
    """Packing (the LLM stage's batches) changes the layout only: one long example and several
    short ones share rows, yet each example's logits are those of a batch of its own, and the
    loss equals the right-padded batch's. Two layers, so a leak between examples would show."""
    from xraygpt_lab.train.llm_finetune import packed_text_batch

    torch.manual_seed(0)
    llm = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=2, max_position_embeddings=256).eval()
    prompts = [f"###Patient: {q} ###Doctor: " for q in
               ("Describe the film in detail, please, everything you see.", "Effusion?", "Heart?", "Any pneumothorax?")]
    targets = [REPORTS[0] + " " + REPORTS[1] + "###", "Yes.###", "No.###", REPORTS[3] + "###"]
    packed = packed_text_batch(tokenizer, prompts, targets)
    padded = text_batch(tokenizer, prompts, targets)
    assert packed["input_ids"].shape[1] == padded["input_ids"].shape[1]
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
    assert (packed["labels"] != -100).sum() == (padded["labels"] != -100).sum()
    with torch.no_grad():
        loss_packed = llm(**packed).loss
        loss_padded = llm(**padded).loss
        logits = llm(**{k: v for k, v in packed.items() if k != "labels"}).logits  # [R, T, vocab], as trained
        starts = (packed["position_ids"] == 0).nonzero().tolist()  # [row, column] of each sequence's first token
        found = 0
        for i in range(len(prompts)):
            ids = padded["input_ids"][i, : int(padded["attention_mask"][i].sum())]
            alone = llm(input_ids=ids[None]).logits[0]  # [T, vocab]
            for row, col in starts:
                if torch.equal(packed["input_ids"][row, col:col + len(ids)], ids):
                    assert torch.allclose(logits[row, col:col + len(ids)], alone, atol=1e-5), (i, row, col)
                    found += col > 0  # an example that does not start its row
                    break
            else:
                raise AssertionError(f"example {i} not found in the packed rows")
    assert found >= 1
    assert torch.allclose(loss_packed, loss_padded, rtol=0, atol=1e-6)


def test_domain_finetune_learns_the_answers(tokenizer):
    torch.manual_seed(0)
    llm = tiny_llm(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    examples = conversation_examples([[{"question": "Is the heart enlarged?", "answer": r}] for r in REPORTS[:1]])
    stage = _stage(40).scaled(init_lr=1e-2, min_lr=3e-3)
    result = domain_finetune(llm, tokenizer, examples, stage, progress=False)
    assert result.history[-1]["loss"] < 0.2 * result.history[0]["loss"]


def test_feature_cache_encodes_each_image_once(tmp_path):
    encoder = small_encoder().eval()
    images = [torch.randn(1, 32, 32) for _ in range(3)]
    cache = FeatureCache(tmp_path, encoder)
    first = cache.features(images)  # [3, N, d]
    assert first.shape == (3, encoder.num_tokens, encoder.token_dim) and cache.misses == 3
    second = cache.features([images[2], images[0]])
    assert cache.misses == 3 and cache.hits == 2
    assert torch.allclose(second[0], first[2]) and torch.allclose(second[1], first[0])
    with torch.no_grad():
        assert torch.allclose(first, encoder.encode_tokens(torch.stack(images)), atol=1e-5)
    # other encoder weights -> other key: nothing stale is served
    other = small_encoder()
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert module_hash(other) != cache.encoder_hash
    assert FeatureCache(tmp_path, other).path(images[0]) != cache.path(images[0])


def test_save_weights_is_atomic_and_load_names_missing_file(tmp_path):
    path = save_weights(tmp_path / "w.safetensors", {"a": torch.ones(2)}, {"k": "v"})
    tensors, meta = load_weights(path)
    assert torch.equal(tensors["a"], torch.ones(2)) and meta["k"] == "v"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left behind
    with pytest.raises(RunFolderError, match="missing.safetensors"):
        load_weights(tmp_path / "missing.safetensors")


def test_warmup_cosine_is_continuous_at_warmup_end():
    s = _stage(50)
    assert math.isclose(warmup_cosine_lr(s.warmup_steps, s), s.init_lr)
