#!/usr/bin/env python3
"""Build the reference run shipped with the toolkit (``xraygpt_lab/reference/``) from a trained run.

    xraygpt-lab walkthrough --long --seed 0 --out runs/reference
    python scripts/make_reference.py runs/reference

Copies from a complete tiny-profile run folder exactly what loading, chatting, explaining and
evaluating need — ``config.json``, ``encoder/`` (config, weights), ``llm/`` (weights, configs,
tokenizer), ``projection.safetensors``, ``metrics.json``, ``history.json``; no ``work/``
checkpoints, text encoder or training-only label head — adds the out-of-distribution calibration (``ood.safetensors``, made here so that a
read-only install never calibrates) and ``REPRODUCE.md`` (the command and seed that reproduce it,
dates, toolkit version, git commit, held-out quality, file sizes and checksums), checks that the
result loads with every weight file matching its model exactly, and puts it in place atomically
(``atomic.atomic_folder``: the old reference or the new one, never a mix).

Weights stay float32 safetensors unless the folder would exceed ``--max-mb`` (10 MB); then the
float tensors are stored as bfloat16 (``runs.load_run`` upcasts them) and the calibration is made
for the rounded encoder. Still too large: a one-line error, nothing written.

A script, not an ``xraygpt-lab`` sub-command: it writes into the package's source folder, which
only a checkout has (an installed toolkit reads its reference and never rebuilds it), while the
command's sub-commands are meant for every install.

Refused with one line (exit status 2): a run folder that is incomplete, of another profile or
synthetic world, or the released model; a destination holding files this script did not write
(it never deletes anything it did not create).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import xraygpt_lab  # noqa: E402
from xraygpt_lab.atomic import atomic_folder, atomic_write_text  # noqa: E402
from xraygpt_lab.config import TINY_LONG, TINY_RECIPE  # noqa: E402
from xraygpt_lab.data.synthetic.world import WORLD_VERSION  # noqa: E402
from xraygpt_lab.errors import RecipeError, XrayGPTLabError  # noqa: E402
from xraygpt_lab.models.ood import OODDetector, load_or_calibrate  # noqa: E402
from xraygpt_lab.run_folder import (COMPLETE_MARKER, OOD_FILE, check_shapes, load_weights,  # noqa: E402
                                    missing_files, read_header, read_json, save_weights)
from xraygpt_lab.recipe import recipe_of_run  # noqa: E402
from xraygpt_lab.runs import load_run, packaged_reference_dir  # noqa: E402

#: Largest reference folder, in bytes (10 MB): it travels inside every wheel and checkout.
MAX_BYTES = 10_000_000
#: The files copied as they are, and the model folder copied whole (weights, configs, tokenizer). The
#: encoder's training-only label head (``encoder/label_head.safetensors``) and ``work/`` stay behind.
COPIED_FILES = ("config.json", COMPLETE_MARKER, "history.json", "projection.safetensors",
                "encoder/encoder_config.json", "encoder/encoder.safetensors")
LLM_FOLDER = "llm"
WEIGHT_FILES = ("encoder/encoder.safetensors", "llm/model.safetensors", "projection.safetensors")
README = "REPRODUCE.md"
TITLE = "# The reference run of xraygpt-lab"
#: The walkthrough's own recipes, by the options that select them.
RECIPES = {"--long": TINY_LONG, "": TINY_RECIPE}


class BuildError(XrayGPTLabError):
    """The run folder or the destination cannot be used; the message says why, on one line."""


def check_source(run: Path) -> dict:
    """The run's ``config.json`` if ``run`` is a complete tiny-profile run of today's synthetic world."""
    if not run.is_dir():
        raise BuildError(f"{run} is not a folder (train one with `xraygpt-lab walkthrough --long --out {run}`)")
    if (run / "release.json").is_file():
        raise BuildError(f"{run} points at the released XrayGPT; the reference is a run trained by the walkthrough")
    missing = missing_files(run)
    if missing:
        raise BuildError(f"{run} is not a complete run folder (missing {', '.join(missing)}); finish it with "
                         f"`xraygpt-lab walkthrough --long --out {run}`")
    config = read_json(run / "config.json")
    if config.get("profile") != "tiny":
        raise BuildError(f"{run} is a run of the {config.get('profile')!r} profile; the reference is a tiny-profile "
                         "run (`xraygpt-lab walkthrough --long`)")
    if config.get("world", 1) != WORLD_VERSION:
        raise BuildError(f"{run} was trained on synthetic world {config.get('world', 1)}; this toolkit renders "
                         f"world {WORLD_VERSION}: retrain it")
    try:
        recipe_of_run(config)
    except RecipeError as exc:
        raise BuildError(f"{run}/config.json: {exc}") from None
    return config


def walkthrough_command(config: dict, out: str = "runs/reference") -> str:
    """The ``xraygpt-lab walkthrough`` command that trains this run: ``--long`` or the default recipe,
    whichever is nearer, plus a ``--set`` for each setting that differs from it."""
    flat = recipe_of_run(config).flat()
    diffs = {}
    for option, recipe in RECIPES.items():
        base = recipe.flat()
        diffs[option] = {k: v for k, v in flat.items() if base.get(k) != v}
    option = min(diffs, key=lambda o: len(diffs[o]))  # "--long" first on a tie
    sets = "".join(f" --set {k}={json.dumps(v)}" for k, v in sorted(diffs[option].items()))
    return f"xraygpt-lab walkthrough{' ' + option if option else ''} --seed {int(config.get('seed', 0))}{sets} --out {out}"


def check_destination(dest: Path, run: Path) -> None:
    """Refuse a destination that overlaps ``run`` or holds anything this script did not write."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise BuildError(f"{dest} exists and is not a folder; give another --dest")
    a, b = dest.resolve(), run.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise BuildError(f"the run folder {run} and the destination {dest} overlap; build from a run folder elsewhere")
    present = [p for p in dest.rglob("*") if p.is_file() or p.is_symlink()]
    if not present:
        return
    ours = (dest / README).is_file() and (dest / README).read_text(encoding="utf-8").startswith(TITLE)
    foreign = [p.relative_to(dest).as_posix() for p in present if not ours or not _written_here(p.relative_to(dest))]
    if foreign:
        raise BuildError(f"{dest} holds files this script did not write ({', '.join(sorted(foreign)[:3])}"
                         f"{', …' if len(foreign) > 3 else ''}); move them away or give another --dest")


def _written_here(relative: Path) -> bool:
    """True for a path this script writes into a reference folder."""
    parts = relative.parts
    if relative.as_posix() in (*COPIED_FILES, OOD_FILE, README):
        return True
    return len(parts) == 2 and parts[0] == LLM_FOLDER and not parts[1].startswith(".")


def copy_run(run: Path, tmp: Path) -> None:
    """Copy the files loading, chatting, explaining and evaluating need (no ``work/``)."""
    for name in COPIED_FILES:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / name, tmp / name)
    (tmp / LLM_FOLDER).mkdir()
    for path in sorted((run / LLM_FOLDER).iterdir()):
        if path.name.startswith("."):  # leftovers of an interrupted write
            continue
        if not path.is_file():
            raise BuildError(f"{path} is not a plain file; the LLM folder holds files only")
        shutil.copyfile(path, tmp / LLM_FOLDER / path.name)


def store_bf16(tmp: Path) -> None:
    """Rewrite the weight files with their float tensors as bfloat16 (``runs.load_run`` upcasts)."""
    for name in WEIGHT_FILES:
        tensors, metadata = load_weights(tmp / name)
        tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}
        save_weights(tmp / name, tensors, {**metadata, "stored_dtype": "bfloat16"})


def calibrate_ood(run: Path, tmp: Path, config: dict, log: Callable[[str], None]) -> OODDetector:
    """The out-of-distribution calibration for the encoder as stored in ``tmp``: the run's own when it
    was made for exactly these weights, else a new one (``models.ood``); written to ``tmp``."""
    model = load_run(tmp, device="cpu")
    detector, new = load_or_calibrate(run / OOD_FILE, model.encoder, config, progress=True, log=log)
    if not new:
        log(f"reusing {run / OOD_FILE} (made for these encoder weights)")
    detector.save(tmp / OOD_FILE)
    return detector


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build(run: Path, dest: Path, max_bytes: int = MAX_BYTES, log: Callable[[str], None] = print) -> Path:
    """Build the reference from ``run`` into ``dest`` (atomically); returns ``dest``."""
    run, dest = Path(run), Path(dest)
    config = check_source(run)
    check_destination(dest, run)

    def write(tmp: Path) -> None:
        copy_run(run, tmp)
        calibrate_ood(run, tmp, config, log)
        dtype = "float32"
        if folder_bytes(tmp) > max_bytes:
            log(f"{folder_bytes(tmp) / 1e6:.2f} MB in float32 is over {max_bytes / 1e6:g} MB: storing the weights "
                "as bfloat16")
            store_bf16(tmp)
            _check_size(tmp, max_bytes)  # before recalibrating: the calibration's size does not change
            calibrate_ood(run, tmp, config, log)  # the rounded encoder is another encoder
            dtype = "bfloat16"
        _check_size(tmp, max_bytes)
        atomic_write_text(tmp / README, reproduce_text(run, tmp, config, dtype))
        verify(tmp)

    atomic_folder(dest, write)
    log(f"wrote {dest} ({folder_bytes(dest) / 1e6:.2f} MB)")
    return dest


def _check_size(tmp: Path, max_bytes: int) -> None:
    size = folder_bytes(tmp)
    if size > max_bytes:
        raise BuildError(f"the reference would be {size / 1e6:.2f} MB even with bfloat16 weights, over the "
                         f"{max_bytes / 1e6:g} MB limit; nothing was written")


def verify(folder: Path) -> None:
    """Load the built folder, check that every weight file holds exactly its model's tensors (none
    missing, none unexpected; the LLM's tied output layer may be left out) and that the calibration
    belongs to the encoder."""
    model = load_run(folder, device="cpu")
    for name, module in zip(WEIGHT_FILES, (model.encoder, model.llm, model.projection)):
        state = module.state_dict()
        found = read_header(folder / name)[0]
        stored = {state[k].data_ptr() for k in found if k in state}
        tied = [k for k in state if k not in found and state[k].data_ptr() in stored]
        check_shapes(folder / name, {k: tuple(v.shape) for k, v in state.items()}, "the loaded model",
                     found=found, may_lack=tied)
    if not OODDetector.load(folder / OOD_FILE).matches(model.encoder):
        raise BuildError(f"{folder / OOD_FILE} was not made for the encoder stored beside it")


def git_commit() -> str:
    """The checkout's commit (``+ uncommitted changes`` when dirty), or ``unknown`` outside a checkout."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not built in a git checkout)"
    return head + (" + uncommitted changes" if dirty else "")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reproduce_text(run: Path, folder: Path, config: dict, dtype: str) -> str:
    """``REPRODUCE.md``: how to train and build this reference again, and what it is."""
    metrics = read_json(folder / COMPLETE_MARKER)
    ood = OODDetector.load(folder / OOD_FILE)
    trained = dt.datetime.fromtimestamp((run / COMPLETE_MARKER).stat().st_mtime, dt.timezone.utc)
    truth = metrics.get("vs_ground_truth", {}).get("ce_f1_macro")
    blind = metrics.get("baselines", {}).get("image_blind", {})
    blind_truth = blind.get("vs_ground_truth", {}).get("ce_f1_macro")
    command = walkthrough_command(config)
    commit = str(config.get("git_commit") or "")
    commit_line = (f"`{commit}` (recorded by the walkthrough)" if commit else
                   f"`{git_commit()}` — the checkout it was built from; the run folder does not record the "
                   "commit it was trained at")
    rows = "\n".join(f"| `{p.relative_to(folder).as_posix()}` | {p.stat().st_size:,} | `{sha256(p)[:16]}` |"
                     for p in sorted(folder.rglob("*")) if p.is_file() and p.name != README)
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    return f"""{TITLE}

The trained run that ships inside the toolkit (`xraygpt_lab/reference/`): `--run reference` in every
command, `XRAYGPT_LAB_RUN=reference`, and the default of notebooks 04–07 and the chat page
(`make chat-app`). It is read-only: nothing is written into it at run time.

## Reproduce it

```
{command}
python scripts/make_reference.py runs/reference
```

Training is seeded (seed {int(config.get('seed', 0))}); its numbers may still differ slightly between
machines and thread counts.

| | |
|---|---|
| trained | {trained:%Y-%m-%d %H:%M} UTC (when its `metrics.json` was written) |
| built | {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC |
| toolkit version (when built) | {config.get('toolkit_version') or xraygpt_lab.__version__} |
| git commit | {commit_line} |
| profile · synthetic world | {config.get('profile')} · {config.get('world', 1)} |
| seeds (stage 1 · stage 2 · held-out evaluation) | {' · '.join(str(v) for v in (config.get('seeds') or {}).values())} |
| weights | safetensors, {dtype}{' (upcast to float32 when loaded)' if dtype != 'float32' else ''} |
| out-of-distribution calibration | seeds {ood.info.get('fit_seed')} (fit) and {ood.info.get('threshold_seed')} (threshold), threshold {ood.threshold:.3f} |

## Held-out quality (its `metrics.json`: seed {metrics.get('eval_seed', '—')}, {metrics.get('n', '—')} images)

| | model | image-blind baseline |
|---|---|---|
| CE macro-F1 against the true labels | {fmt(truth)} | {fmt(blind_truth)} |
| CE macro-F1 against the labeled reference reports | {fmt(metrics.get('ce_f1_macro'))} | {fmt(blind.get('ce_f1_macro'))} |
| ROUGE-L | {fmt(metrics.get('rougeL'))} | {fmt(blind.get('rougeL'))} |

## Files

| file | bytes | sha256 (first 16 hex digits) |
|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build xraygpt_lab/reference/ from a trained run folder.")
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a complete run of `xraygpt-lab walkthrough --long`")
    parser.add_argument("--dest", type=Path, default=None,
                        help="where to write it (default: the package's reference folder, xraygpt_lab/reference)")
    parser.add_argument("--max-mb", type=float, default=MAX_BYTES / 1e6, help="size limit in MB (default 10)")
    args = parser.parse_args(argv)
    try:
        build(args.run, args.dest or packaged_reference_dir(), max_bytes=int(args.max_mb * 1e6))
    except (XrayGPTLabError, OSError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"make_reference: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
