"""Trained run folders: where the default one lives, training it once, loading it.

The folder's format (its files, its lock, reading its weights with one-line errors) is
:mod:`xraygpt_lab.run_folder`; a run folder is written by ``train.walkthrough``.
Notebook 03 and tests call :func:`ensure_tiny_run` then :func:`load_run`.

**The reference run** ships inside the package (``xraygpt_lab/reference/``, built from a
``walkthrough --long`` run by ``scripts/make_reference.py``; its ``REPRODUCE.md`` says how):
:func:`reference_run` finds it in any install, the name ``reference`` stands for it wherever a
run is named (``--run reference``, ``XRAYGPT_LAB_RUN=reference``: :func:`resolve_run` is the one
place that reads the name), and notebooks 04–07 and the chat page open it by default
(:func:`reference_or_tiny_run`). It is read-only: its out-of-distribution calibration was made
when it was built, and nothing is written into it or beside it at run time.
"""
from __future__ import annotations

import contextlib
import os
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from .errors import RunFolderError
from .data.synthetic.world import WORLD_VERSION
from .run_folder import COMPLETE_MARKER, OOD_FILE, RUN_FILES, load_state, missing_files, read_json, run_lock

ENV_VAR = "XRAYGPT_LAB_RUN"
#: The name of the packaged reference run, wherever a run folder is named.
REFERENCE = "reference"
#: The files of the packaged reference: a run folder's, its loss curves, its out-of-distribution
#: calibration and how to reproduce it (no ``work/`` checkpoints).
REFERENCE_FILES: tuple[str, ...] = (*RUN_FILES, COMPLETE_MARKER, "history.json", OOD_FILE, "REPRODUCE.md")


def packaged_reference_dir() -> Path:
    """Where this install keeps the reference run (``xraygpt_lab/reference``), present or not."""
    folder = resources.files(__package__) / REFERENCE
    if not isinstance(folder, Path):  # e.g. a package imported from a zip file
        raise RunFolderError(f"xraygpt_lab is installed in a form whose files cannot be opened as files "
                             f"({type(folder).__name__}); install it unpacked to use the reference run")
    return folder


def reference_run() -> Path:
    """The reference run shipped with the toolkit (a complete, read-only run folder), from any install.

    ``RunFolderError`` (an ``XrayGPTLabError``) when this install lacks it or holds it incomplete.
    """
    folder = packaged_reference_dir()
    if not folder.is_dir():
        raise RunFolderError("this install of xraygpt-lab has no reference run (xraygpt_lab/reference/ is "
                             "absent): build it from a trained run with `python scripts/make_reference.py RUN`, "
                             "or name a run folder of your own")
    missing = [name for name in REFERENCE_FILES if not (folder / name).is_file()]
    if missing:
        raise RunFolderError(f"the reference run in {folder} is incomplete (missing {', '.join(missing)}); "
                             "rebuild it with `python scripts/make_reference.py RUN`")
    return folder


def is_reference(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` is the packaged reference folder (read-only: nothing is written to it)."""
    try:
        return Path(run_dir).resolve() == packaged_reference_dir().resolve()
    except (OSError, RunFolderError):
        return False


def resolve_run(run: str | os.PathLike | None) -> Path:
    """The run folder a user named: ``None`` → :func:`default_run_dir`; the string ``"reference"`` →
    :func:`reference_run`; anything else is a path (``./reference`` for a folder of that name)."""
    if run is None:
        return default_run_dir()
    if isinstance(run, str) and run.strip() == REFERENCE:
        return reference_run()
    return Path(run).expanduser()


def _repo_root() -> Path | None:
    """The checkout this package lives in (has ``pyproject.toml`` and ``.git``), if any."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / ".git").exists():
        return root
    return None


def default_run_dir() -> Path:
    """``$XRAYGPT_LAB_RUN`` (``reference``: :func:`reference_run`), else ``<repo>/runs/tiny`` in a
    checkout, else ``~/.cache/xraygpt-lab/runs/tiny``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return resolve_run(env)
    root = _repo_root()
    if root is not None:
        return root / "runs" / "tiny"
    return Path.home() / ".cache" / "xraygpt-lab" / "runs" / "tiny"


def results_file(run_dir: str | os.PathLike, kind: str) -> Path:
    """Where a benchmark keeps its table for a run: ``<kind>_<run name>.json`` beside the run folder;
    for the packaged reference (read-only, inside the install) in the runs folder of
    :func:`default_run_dir` instead, so no benchmark writes into the package."""
    run_dir = Path(run_dir)
    if is_reference(run_dir):
        root = _repo_root()
        folder = root / "runs" if root is not None else Path.home() / ".cache" / "xraygpt-lab" / "runs"
    else:
        folder = run_dir.parent
    return folder / f"{kind}_{run_dir.name}.json"


def ensure_tiny_run(run_dir: str | os.PathLike | None = None, seed: int = 0,
                    log: Callable[[str], None] = print, progress: bool = False,
                    retrain_stale: bool | None = None,
                    on_step: Callable[[str, dict], None] | None = None) -> Path:
    """Return a complete tiny run folder, training it with the walkthrough if missing or incomplete.

    The run folder's lock (``run_folder.run_lock``, also taken by ``xraygpt-lab walkthrough``) makes
    concurrent callers (two notebooks, parallel tests) wait for one training instead of training twice. An interrupted training
    resumes where it stopped. ``retrain_stale`` (default: only for the default folder) moves a run
    trained with other settings than today's tiny profile to ``<name>.previous`` and trains anew,
    so notebooks never silently reuse a run of an older recipe or synthetic world; an explicit folder
    is used as is. The packaged reference (``XRAYGPT_LAB_RUN=reference``) is returned as it is,
    never trained or moved. ``on_step(stage, history row)`` follows a training as it runs (a live
    loss plot: ``widgets.live.LiveCurves``).
    """
    if retrain_stale is None:
        retrain_stale = run_dir is None
    run_dir = resolve_run(run_dir)
    if is_reference(run_dir):
        return reference_run()  # read-only and complete, or a one-line error
    if not missing_files(run_dir) and not (retrain_stale and _stale(run_dir, seed)):
        return run_dir
    with run_lock(run_dir):
        if retrain_stale and _stale(run_dir, seed):  # an older recipe or world: keep it aside, train anew
            import shutil

            previous = run_dir.with_name(run_dir.name + ".previous")
            shutil.rmtree(previous, ignore_errors=True)
            run_dir.rename(previous)
            log(f"{run_dir} was trained with other settings (an older recipe or synthetic world); moved it to {previous}")
        if missing_files(run_dir):  # someone else may have finished while we waited
            from .train.walkthrough import run_walkthrough

            log(f"training the tiny run in {run_dir} (a few minutes, once)")
            run_walkthrough(run_dir, "tiny", seed=seed, log=log, progress=progress, on_step=on_step)
    return run_dir


def reference_or_tiny_run(log: Callable[[str], None] = print, progress: bool = False) -> Path:
    """The run notebooks 04–07 and the chat page open: ``$XRAYGPT_LAB_RUN`` when set, else the
    packaged :func:`reference_run` (nothing to train), else — with a note through ``log`` — the
    tiny run of :func:`ensure_tiny_run` (trained once, a few minutes)."""
    if os.environ.get(ENV_VAR):
        return ensure_tiny_run(log=log, progress=progress)
    try:
        return reference_run()
    except RunFolderError as exc:
        log(f"note: {exc}. Using the tiny run instead (trained once if absent).")
        return ensure_tiny_run(log=log, progress=progress)


def _stale(run_dir: Path, seed: int) -> bool:
    """True when ``run_dir`` holds a run whose seed, recipe or synthetic world differs from today's
    tiny profile (so notebooks never silently reuse a run of an older recipe or world). An older
    config.json is read through ``recipe.recipe_of_run``; one that does not map onto a recipe is
    stale."""
    import json

    from .config import get_profile
    from .recipe import recipe_of_run

    path = run_dir / "config.json"
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text())
        return (config.get("seed") != seed or config.get("world", 1) != WORLD_VERSION
                or recipe_of_run(config) != get_profile("tiny").recipe)
    except (OSError, ValueError, AttributeError):  # unreadable, not an object, or no recipe (RecipeError)
        return True


def load_run(run_dir: str | os.PathLike | None = None, device: "str | torch.device | None" = None):
    """Load the ``XrayGPT`` model of a run folder (eval mode). ``RunFolderError`` names a missing file.

    ``run_dir``: a folder, ``"reference"`` or None (:func:`resolve_run`). ``device``:
    ``xraygpt_lab.device.resolve_device`` (CUDA when present, else the CPU).

    ``metrics.json`` is not needed to load; the model files are. A weight file that lacks one of the
    model's tensors is a one-line ``CorruptFileError`` (the LLM's file may add old rotary buffers,
    which are ignored); weights stored as bfloat16 (a reference run built over its size limit) are
    upcast to float32.
    The returned model carries ``run_config`` (``config.json``) and ``image_size``. A folder with
    ``release.json`` (``xraygpt-lab release init``) loads the released XrayGPT instead (``models.released``).
    """
    import torch

    run_dir = resolve_run(run_dir)
    if (run_dir / "release.json").is_file():
        from .models.released import load_release_run

        return load_release_run(run_dir, device=device)
    from .device import resolve_device
    from .models.encoder import VisionEncoder
    from .models.llm import load_llm
    from .models.xraygpt import XrayGPT

    if not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} does not exist (train one with `xraygpt-lab walkthrough`)")
    for name in RUN_FILES:
        if not (run_dir / name).is_file():
            raise RunFolderError(f"run folder {run_dir} is missing {name}")
    config = read_json(run_dir / "config.json")  # one-line CorruptFileError naming a bad file, here and below
    device = resolve_device(device)  # CUDA when present, else the CPU; $XRAYGPT_DEVICE overrides
    encoder = VisionEncoder.from_pretrained(run_dir / "encoder", device=device)  # float32 module: bf16 upcast
    llm, tokenizer = load_llm(run_dir / "llm", dtype=torch.float32, device=device)  # bf16 upcast
    model = XrayGPT(encoder, llm, tokenizer, end_sym=str(config.get("end_sym", "###"))).to(device)
    load_state(model.projection, run_dir / "projection.safetensors",
               against="the encoder and LLM sizes (encoder/encoder_config.json, llm/config.json)")
    model.run_config = config
    model.chat_system = str(config.get("chat_system", "") or "")
    model.image_size = int(encoder.config.image_size)  # the recipe's image_size, via the encoder
    model.run_dir = run_dir  # where ood_detector keeps the out-of-distribution calibration
    return model.eval()


def ood_detector(model: Any, progress: bool = False, log: Callable[[str], None] | None = None) -> Any:
    """The out-of-distribution check (``models.ood.OODDetector``) of a model from :func:`load_run`,
    or None for a model without a run folder or whose encoder has no pooled stages (the released one).

    Read from ``<run>/ood.safetensors`` when it was made for this encoder; otherwise calibrated on
    held-out synthetic films (about 10 s on a CPU core for the tiny run, ``progress`` shows a bar),
    kept on the model and written to the run folder under its lock, atomically. A run folder that
    cannot be written to keeps the calibration in memory only; so does the packaged reference run,
    which is never written to (no lock beside it either: its calibration is made when it is built).
    """
    from .models.ood import FILE_NAME, load_or_calibrate

    cached = getattr(model, "ood", None)
    run_dir = getattr(model, "run_dir", None)
    if cached is not None or run_dir is None or not hasattr(model.encoder, "pooled_stages"):
        return cached
    path = Path(run_dir) / FILE_NAME
    writable = not is_reference(run_dir)
    with contextlib.ExitStack() as stack:
        try:  # a second process waits, then reads the first one's calibration
            if writable:
                stack.enter_context(run_lock(run_dir))
        except OSError:  # the lock's folder cannot be written to: work without it
            pass
        detector, new = load_or_calibrate(path, model.encoder, getattr(model, "run_config", {}), progress, log)
        if new and not writable and log is not None:
            log(f"the reference run {run_dir} is read-only; the out-of-distribution calibration is kept in memory")
        if new and writable:
            try:
                detector.save(path)
            except OSError as exc:  # a read-only run folder: keep the calibration in memory
                if log is not None:
                    log(f"could not store the out-of-distribution calibration in {run_dir} ({exc}); "
                        "it is kept in memory")
    model.ood = detector
    return detector
