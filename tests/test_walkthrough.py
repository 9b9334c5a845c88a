"""The walkthrough end to end at toy sizes, resuming, run folders, and the quality bar (slow)."""
from __future__ import annotations

import json

import pytest
import torch

from xraygpt_lab.errors import RunFolderError, XrayGPTLabError
from xraygpt_lab.run_folder import RUN_FILES, load_weights, missing_files
from xraygpt_lab.runs import default_run_dir, ensure_tiny_run, load_run
from xraygpt_lab.train.walkthrough import laterality_labels, llm_examples, run_walkthrough

#: Toy sizes: exercises every stage in well under a minute (quality is not the point here).
TOY = {
    "n_stage1": 24, "n_stage2": 8, "n_eval": 6,
    "encoder_steps": 2, "encoder_batch": 8, "encoder_lr": 1e-3,
    "llm_steps": 3, "llm_batch": 2, "llm_lr": 1e-3, "llm_min_lr": 1e-4, "llm_warmup": 1,
    "stage1_steps": 3, "stage1_batch": 2, "stage1_lr": 1e-3, "stage1_min_lr": 1e-4, "stage1_warmup": 1,
    "stage2_steps": 2, "stage2_batch": 2, "stage2_lr": 1e-3, "stage2_min_lr": 1e-4, "stage2_warmup": 1,
    "max_new_tokens": 6,
}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "toy"
    logs: list[str] = []
    metrics = run_walkthrough(out, "tiny", seed=3, overrides=TOY, log=logs.append, progress=False, keep_work=True)
    return out, metrics, logs


def test_run_folder_is_complete(toy_run):
    out, metrics, logs = toy_run
    assert missing_files(out) == []
    for name in RUN_FILES + ("metrics.json", "history.json"):
        assert (out / name).is_file(), name
    for key in ("rouge1", "rouge2", "rougeL", "bleu4", "ce_f1_macro", "ce_f1_micro", "per_observation"):
        assert key in metrics and key in metrics["baselines"]["image_blind"]
    assert "vs_ground_truth" in metrics
    history = json.loads((out / "history.json").read_text())
    assert [len(history[k]) for k in ("encoder", "llm", "stage1", "stage2")] == [2, 3, 3, 2]
    stages = [line.split("]")[0] + "]" for line in logs if line.startswith("[")]
    assert stages.index("[encoder]") < stages.index("[llm]") < stages.index("[stage1]") < stages.index("[stage2]") < stages.index("[eval]")
    assert any("done in" in line for line in logs)


def test_rerun_resumes_instead_of_retraining(toy_run):
    out, _, _ = toy_run
    before = load_weights(out / "projection.safetensors")[0]
    for name in ("metrics.json", "projection.safetensors", "work/projection_stage2.safetensors"):
        (out / name).unlink()
    logs: list[str] = []
    run_walkthrough(out, "tiny", seed=3, overrides=TOY, log=logs.append, progress=False, keep_work=True)
    text = "\n".join(logs)
    assert "[encoder] found in run folder, skipped" in text and "[llm] found in run folder, skipped" in text
    assert "[stage1] found, skipped" in text and "[stage2] aligning" in text
    after = load_weights(out / "projection.safetensors")[0]
    assert all(torch.equal(before[k], after[k]) for k in before)  # stage 2 resumed from its checkpoint
    with pytest.raises(XrayGPTLabError, match="other settings"):
        run_walkthrough(out, "tiny", seed=4, overrides=TOY, log=logs.append, progress=False)


def test_load_run_and_missing_files(toy_run, tmp_path):
    out, _, _ = toy_run
    model = load_run(out)
    assert not model.training and model.image_size == 128
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["projection.weight", "projection.bias"]
    assert isinstance(model.describe(pixel_values=torch.zeros(1, 1, 128, 128), max_new_tokens=3)[0], str)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(out, broken, ignore=shutil.ignore_patterns("work"))
    (broken / "projection.safetensors").unlink()
    with pytest.raises(RunFolderError, match="projection.safetensors"):
        load_run(broken)
    with pytest.raises(RunFolderError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_ensure_tiny_run_returns_a_complete_run_without_training(toy_run):
    out, _, _ = toy_run
    assert ensure_tiny_run(out, log=lambda m: pytest.fail(f"should not train: {m}")) == out


def test_default_run_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("XRAYGPT_LAB_RUN", str(tmp_path / "r"))
    assert default_run_dir() == tmp_path / "r"
    monkeypatch.delenv("XRAYGPT_LAB_RUN")
    assert default_run_dir().parts[-2:] == ("runs", "tiny")


def test_full_profile_walkthrough_is_refused_with_a_reason(tmp_path):
    with pytest.raises(XrayGPTLabError, match="tiny profile only"):
        run_walkthrough(tmp_path / "x", "full")


def test_llm_examples_and_laterality_labels():
    from xraygpt_lab.data.synthetic.lesions import Finding

    conv = [[{"question": f"q{i}", "answer": f"a{i}"} for i in range(5)]]
    ex = llm_examples(conv, seed=0, chains_per_case=2)
    assert len(ex) == 7 and all(t.endswith("###") for _, t in ex)
    assert sum(p.count("###Patient:") > 1 for p, _ in ex) == 2  # the chains carry earlier turns
    labels = laterality_labels([[Finding("Pleural Effusion", side="left")], []])
    assert labels.shape[0] == 2 and labels[0].sum() == 1 and labels[1].sum() == 0
    right = laterality_labels([[Finding("Pleural Effusion", side="right")]])
    assert not torch.equal(labels[0], right[0])


@pytest.fixture(scope="module")
def unseen_seed_metrics():
    """Train (or reuse) the default tiny run and score it on 150 images of a seed it never saw."""
    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.data.synthetic.world import generate_cases
    from xraygpt_lab.train.evaluation import evaluate_model

    model = load_run(ensure_tiny_run())
    cases = list(generate_cases(150, model.image_size, 777_777))
    pixels = torch.stack([preprocess(c.image, model.image_size) for c in cases])
    m = evaluate_model(model, [c.summary for c in cases], pixel_values=pixels,
                       ground_truth=[c.labels for c in cases], max_new_tokens=140, n_boot=0)
    print(json.dumps({k: m[k] for k in ("rougeL", "ce_f1_macro")} | {"blind": m["baselines"]["image_blind"]["ce_f1_macro"]}))
    return m


@pytest.mark.slow
def test_tiny_run_reads_the_image_on_an_unseen_seed(unseen_seed_metrics):
    """The parts of the bar the recipe meets: ROUGE-L ≥ 0.55, image-blind CE ≤ 0.5, and the
    image is worth ≥ 0.4 CE macro-F1 over withholding it (measured ~0.6 over ~0.03)."""
    m = unseen_seed_metrics
    blind = m["baselines"]["image_blind"]["ce_f1_macro"]
    assert blind <= 0.5
    assert m["rougeL"] >= 0.55
    assert m["ce_f1_macro"] >= blind + 0.4, (m["ce_f1_macro"], blind)


@pytest.mark.slow
def test_tiny_run_ce_on_an_unseen_seed_stays_near_the_bar(unseen_seed_metrics):
    """CE macro-F1 ≥ 0.85 on these 150 films. The project's bar is 0.90: three trainings of the
    recipe score 0.88–0.94 on five held-out seeds of 300 films (docs/design-notes.md, "The first word
    of a yes/no answer"), seed 0's 0.90 on these, so a fresh training lands on either side of 0.90
    and a test there would fail at random. 0.85 sits below every training measured so far (the
    previous recipe's seed-0 runs: 0.86–0.88 here) and fails when the model stops writing a finding
    (each of the nine observations is a ninth of the macro-F1)."""
    assert unseen_seed_metrics["ce_f1_macro"] >= 0.85, unseen_seed_metrics["ce_f1_macro"]


@pytest.mark.slow
def test_tiny_run_tokens_fire_where_the_finding_is_on_an_unseen_seed():
    """The encoder's token label head (trained with per-token targets from the masks) peaks, for
    each large localized finding, in a token cell the finding's region covers — far above the
    share of cells a random token would hit. The tokens say *where*, not only *what*."""
    import math

    from xraygpt_lab.data.synthetic.world import generate_cases
    from xraygpt_lab.models.encoder import VisionEncoder
    from xraygpt_lab.train.label_supervision import TokenLabelHead, token_targets
    from xraygpt_lab.train.walkthrough import LABEL_HEAD_FILE, laterality_columns

    run = ensure_tiny_run()
    encoder = VisionEncoder.from_pretrained(run / "encoder").eval()
    columns = laterality_columns()
    head = TokenLabelHead(encoder.token_dim, len(columns))
    head.load_state_dict(load_weights(run / "encoder" / LABEL_HEAD_FILE)[0])
    from xraygpt_lab.data.readers.images import preprocess

    hits, chance = [], []
    for case in generate_cases(120, encoder.config.image_size, 424_242):
        with torch.no_grad():
            pixels = preprocess(case.image, encoder.config.image_size)[None]
            logits = head.token_logits(encoder.encode_tokens(pixels))[0]  # [16, L]
        targets = token_targets(case.masks, case.findings, columns, encoder.config.grid)  # [16, L]
        for f in case.findings:
            if f.observation not in ("Pleural Effusion", "Pneumothorax", "Consolidation", "Atelectasis"):
                continue
            j = columns.index((f.observation, f.side))
            hits.append(bool(targets[logits[:, j].argmax(), j]))
            chance.append(float(targets[:, j].mean()))
    rate, expected = sum(hits) / len(hits), sum(chance) / len(chance)
    print(f"token peak inside the finding: {rate:.2f} over {len(hits)} findings (random token: {expected:.2f})")
    assert len(hits) >= 40 and not math.isnan(rate)
    assert rate >= 0.9 and rate >= expected + 0.4, (rate, expected)


def test_make_split_in_worker_processes_matches_generate_cases():
    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.data.synthetic.world import generate_cases
    from xraygpt_lab.train.walkthrough import make_split

    cases = list(generate_cases(5, 64, seed=5))
    parallel, serial = make_split(5, 64, seed=5, workers=2), make_split(5, 64, seed=5, workers=1)
    assert torch.equal(parallel.pixels, serial.pixels)
    assert torch.equal(parallel.pixels, torch.stack([preprocess(c.image, 64) for c in cases]))
    assert parallel.summaries == [c.summary for c in cases] and parallel.labels == [c.labels for c in cases]
    assert parallel.token_labels is None


def test_make_split_with_a_grid_gives_per_token_targets_from_the_masks():
    from xraygpt_lab.data.synthetic.world import generate_cases
    from xraygpt_lab.train.label_supervision import token_targets
    from xraygpt_lab.train.walkthrough import laterality_columns, make_split

    split = make_split(4, 64, seed=6, workers=1, grid=(2, 2))
    cases = list(generate_cases(4, 64, seed=6))
    expected = torch.stack([token_targets(c.masks, c.findings, laterality_columns(), (2, 2)) for c in cases])
    assert split.token_labels.shape == (4, 4, len(laterality_columns()))
    assert torch.equal(split.token_labels, expected)
    # a case's findings are exactly the columns that fire somewhere
    assert torch.equal(split.token_labels.amax(1), laterality_labels(split.findings))


def test_ensure_tiny_run_sets_aside_a_run_of_an_older_recipe(tmp_path, monkeypatch):
    """A run folder trained with other settings is moved to ``<name>.previous`` and retrained."""
    import xraygpt_lab.train.walkthrough as walkthrough
    from xraygpt_lab.config import TINY_RECIPE

    run = tmp_path / "tiny"
    run.mkdir()
    old = walkthrough.run_config(TINY_RECIPE.override({"encoder_steps": 1}), "tiny", 0)
    for name in RUN_FILES + ("metrics.json",):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("old")
    (run / "config.json").write_text(json.dumps(old))
    trained = []

    def fake_walkthrough(out, profile, seed, log, progress, on_step=None):
        trained.append(out)
        out.mkdir()
        for name in RUN_FILES + ("metrics.json",):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text("new")
        (out / "config.json").write_text(json.dumps(walkthrough.run_config(TINY_RECIPE, profile, seed)))

    monkeypatch.setattr(walkthrough, "run_walkthrough", fake_walkthrough)
    logs: list[str] = []
    assert ensure_tiny_run(run, log=logs.append) == run and trained == []  # an explicit folder is used as is
    assert ensure_tiny_run(run, log=logs.append, retrain_stale=True) == run
    assert trained == [run] and (run / "metrics.json").read_text() == "new"
    assert (tmp_path / "tiny.previous" / "metrics.json").read_text() == "old"
    assert any("older recipe" in line for line in logs)
    assert ensure_tiny_run(run, log=logs.append, retrain_stale=True) == run and trained == [run]  # current: reused


def test_stale_reads_both_config_formats(tmp_path, monkeypatch):
    """A config.json of the older flat format reads as a recipe, but its run was trained on the
    first synthetic world (no ``world`` entry), so it is stale, as are other numbers, another
    seed, an older world or an unreadable entry; today's config is current."""
    from xraygpt_lab import config as profiles
    from xraygpt_lab.config import TINY_RECIPE
    from xraygpt_lab.runs import _stale
    from xraygpt_lab.train.walkthrough import run_config

    from test_recipe import LEGACY_CHANGED_SINCE, LEGACY_TINY, legacy_config

    path = tmp_path / "config.json"
    current = run_config(TINY_RECIPE, "tiny", 0)
    older_world = {k: v for k, v in current.items() if k != "world"}
    legacy_today = {**legacy_config(**LEGACY_CHANGED_SINCE), "world": current["world"]}
    # the older format cannot state lung-lesion oversampling: stale against today's recipe, current
    # against a tiny profile without it
    path.write_text(json.dumps(legacy_today))
    assert _stale(tmp_path, 0)
    monkeypatch.setitem(profiles.PROFILES, "tiny", profiles.Profile(name="tiny", recipe=LEGACY_TINY))
    assert not _stale(tmp_path, 0)
    monkeypatch.undo()
    cases = [(legacy_config(), 0, True),
             ({**legacy_config(), "world": current["world"]}, 0, True),
             (legacy_config(), 1, True), (older_world, 0, True),
             (legacy_config(encoder_steps=1), 0, True), (legacy_config(encoder_lora_r=8), 0, True),
             (run_config(TINY_RECIPE, "tiny", 0), 0, False),
             (run_config(TINY_RECIPE.override({"stage1_init": "random"}), "tiny", 0), 0, True),
             ({**run_config(TINY_RECIPE, "tiny", 0), "recipe_version": 99}, 0, True), ([1, 2], 0, True)]
    for config, seed, stale in cases:
        path.write_text(json.dumps(config))
        assert _stale(tmp_path, seed) is stale, (config, seed)
    path.write_text("{not json")
    assert _stale(tmp_path, 0)
    path.unlink()
    assert not _stale(tmp_path, 0)  # nothing there yet


def test_a_run_of_the_older_format_resumes_and_other_settings_are_refused(tmp_path):
    """open_run migrates an older config.json with the same numbers (and leaves it as it is)."""
    from xraygpt_lab.config import TINY_RECIPE
    from xraygpt_lab.train.walkthrough import open_run

    from test_recipe import LEGACY_CHANGED_SINCE, LEGACY_TINY, legacy_config

    from xraygpt_lab.data.synthetic.world import WORLD_VERSION

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(legacy_config(**LEGACY_CHANGED_SINCE)))
    with pytest.raises(XrayGPTLabError, match="older synthetic world"):  # no "world": the first world
        open_run(out, LEGACY_TINY, "tiny", 0, print, False, "cpu")
    text = json.dumps({**legacy_config(**LEGACY_CHANGED_SINCE), "world": WORLD_VERSION})
    (out / "config.json").write_text(text)
    open_run(out, LEGACY_TINY, "tiny", 0, print, False, "cpu")
    assert (out / "config.json").read_text() == text
    for recipe, seed in ((LEGACY_TINY.override({"llm_steps": 5}), 0), (TINY_RECIPE, 0), (LEGACY_TINY, 1)):
        with pytest.raises(XrayGPTLabError, match="other settings"):
            open_run(out, recipe, "tiny", seed, print, False, "cpu")
    (out / "config.json").write_text(json.dumps({**legacy_config(llm_lora_r=8), "world": WORLD_VERSION}))
    with pytest.raises(XrayGPTLabError, match="do not read as a recipe.*llm_lora_r"):
        open_run(out, TINY_RECIPE, "tiny", 0, print, False, "cpu")


def test_a_finished_walkthrough_is_set_beside_the_reference() -> None:
    from xraygpt_lab.cli.walkthrough import COMPARED, beside_reference

    ours = {"eval_seed": 2000, "n": 100, "vs_ground_truth": {"ce_f1_macro": 0.63}, "rougeL": 0.61,
            "baselines": {"image_blind": {"ce_f1_macro": 0.03}}, "repetition_rate": 0.02, "contradiction_rate": 0.17}
    reference = {"eval_seed": 2000, "vs_ground_truth": {"ce_f1_macro": 0.82}, "rougeL": 0.67,
                 "repetition_rate": 0.0, "contradiction_rate": 0.02}
    lines = beside_reference(ours, reference)
    assert "the same 100 held-out films (seed 2000)" in lines[0]
    row = next(line for line in lines if "CE macro-F1 vs true labels" in line).split()
    assert row[-2:] == ["0.630", "0.820"]
    assert next(line for line in lines if "image-blind" in line).split()[-1] == "—"  # missing: shown, not invented
    assert "each on its own held-out films" in beside_reference({**ours, "eval_seed": 2001}, reference)[0]
    shipped = beside_reference(ours)  # the packaged reference's own metrics.json
    assert len(shipped) == 2 + len(COMPARED) and "0.630" in shipped[2]
    # the numbers line up in two columns, whatever the length of a row's label
    assert len({len(line) for line in lines[2:]}) == 1 and len({line.rindex(".") for line in shipped[2:]}) == 1
