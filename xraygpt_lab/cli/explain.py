"""``xraygpt-lab explain``: which pixels of a radiograph made the model say a phrase.

Writes an overlay PNG and prints one JSON object, e.g.::

    {"method": "ig", "phrase": "pleural effusion", "explained_phrase": "moderate left pleural effusion",
     "phrase_in_answer": true, "peak": [412, 655], ...}

``peak`` is ``[row, col]`` in the INPUT image's pixel coordinates, whatever its size or aspect:
the map is brought back through the MedCLIP preprocessing (pad to square, resize, centre crop;
``interpret.geometry``). The model first writes its report for the image (``--prompt``) and the
phrase is explained inside it, expanded to the whole noun phrase the model wrote: ``--phrase
"pleural effusion"`` explains ``"moderate left pleural effusion"`` when that is what the report says
(``interpret.phrases``). A plain finding name the report does not mention is looked for in the
model's answer to the finding's yes/no question; if neither names it, the phrase is explained on
its own (``"phrase_in_answer": false``). ``explained_phrase``, ``phrase_source`` and
``instruction`` say what was explained where. ``--answer`` fixes the teacher-forced answer instead.

A run folder of the released XrayGPT (``xraygpt-lab release init``) works the same: its images
go through BLIP-2's processor (resized without padding, so maps come back by a plain resize),
and ``cross_attention`` (the Q-Former's queries, rolled out to the patches) is its own kind.

The JSON also says whether the image is like the run's training films (``models.ood``):
``in_distribution``, ``ood_score``, ``ood_threshold``, ``ood_reasons`` (``null`` for the released
model, which has no such check); a flagged image also gets a warning on stderr.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from xraygpt_lab.cli._common import add_device_argument, add_run_argument, non_negative_float, positive_int

#: Kept equal to ``interpret.attribution.MAP_KINDS`` (not imported: --help stays fast).
METHODS = ("ig", "smoothgrad", "occlusion", "gradcam", "attention", "saliency", "gradientshap", "layer_ig",
           "feature_ig", "rollout", "grad_rollout", "cross_attention")
#: Map kinds read from attention weights: no baseline, no smoothing.
ATTENTION_KINDS = ("attention", "rollout", "grad_rollout", "cross_attention")
BASELINES = ("blur", "black", "mean")


def _baseline(text: str) -> tuple[str, ...]:
    """``blur``, ``black``, ``mean`` or several joined by ``+`` (IG averages over them)."""
    names = tuple(part.strip() for part in text.split("+"))
    bad = [n for n in names if n not in BASELINES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown baseline {text!r}; use {', '.join(BASELINES)} or several "
                                         "joined by + (e.g. blur+black)")
    return names


def _phrase(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("phrase is empty or only whitespace")
    return text.strip()


def register(subparsers) -> None:
    """Add the ``explain`` sub-command."""
    p = subparsers.add_parser(
        "explain", help="attribute a phrase of the report to the image's pixels (overlay + JSON)",
        description="Explain which pixels of IMAGE support PHRASE in the model's answer; write an overlay "
                    "PNG and print JSON with the peak in the input image's pixel coordinates.")
    p.add_argument("image", type=Path, help="radiograph (PNG, JPEG or DICOM), any size")
    add_run_argument(p, required=True, what="run folder (xraygpt-lab walkthrough, or xraygpt-lab release init for "
                                            "the released model)")
    p.add_argument("--phrase", type=_phrase, required=True,
                   help='text to explain: a finding name ("pleural effusion", "pneumothorax", "consolidation", '
                        '"atelectasis", "nodule", "mass") is expanded to the whole noun phrase the model wrote '
                        '(e.g. "moderate left pleural effusion"); other text is explained as written')
    p.add_argument("--method", choices=METHODS, default="ig",
                   help="map kind (default ig); cross_attention needs the released model")
    p.add_argument("--out", type=Path, required=True, help="overlay PNG to write")
    p.add_argument("--baseline", type=_baseline, default=None,
                   help="what 'absent' means for ig / occlusion / layer_ig / feature_ig: blur, black, mean, or for "
                        "ig several joined by + to average over them (default: blur+black for ig, black for "
                        "feature_ig, blur otherwise)")
    p.add_argument("--gate", action=argparse.BooleanOptionalAction, default=None,
                   help="ig only: multiply the pixel map by the positive part of the feature-level IG at "
                        "strides 4 and 8 (default: on, the recommended setting; --no-gate for plain IG)")
    p.add_argument("--smooth", type=non_negative_float, default=None,
                   help="Gaussian σ in px applied to the map (default: 1 for ig at the model's resolution, 0 otherwise)")
    p.add_argument("--steps", type=positive_int, default=32,
                   help="integration steps for ig / layer_ig / feature_ig (default 32)")
    p.add_argument("--prompt", default=None, help="instruction (default: describe the x-ray in detail)")
    p.add_argument("--answer", default=None, help="teacher-forced answer containing the phrase (default: generate)")
    p.add_argument("--max-new-tokens", type=positive_int, default=96, help="length of the generated report")
    add_device_argument(p)
    p.set_defaults(func=run)


def _method_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``interpret.attribution.explain`` for the command's options."""
    from xraygpt_lab.interpret.attribution import FEATURE_BASELINE, RECOMMENDED_IG

    kwargs = {}
    defaults = {"ig": tuple(RECOMMENDED_IG["baseline"]), "feature_ig": (FEATURE_BASELINE,)}
    baseline = args.baseline or defaults.get(args.method, ("blur",))
    if len(baseline) > 1 and args.method != "ig":
        raise ValueError(f"several baselines ({'+'.join(baseline)}) are averaged by --method ig only")
    if args.method in ("ig", "occlusion", "layer_ig", "feature_ig"):
        kwargs["baseline"] = list(baseline) if len(baseline) > 1 else baseline[0]
    if args.gate and args.method != "ig":
        raise ValueError(f"--gate applies to --method ig only, not {args.method!r}")
    if args.method == "ig":
        kwargs["gate"] = RECOMMENDED_IG["gate"] if args.gate is None else args.gate
    smooth = args.smooth if args.smooth is not None else (RECOMMENDED_IG["smooth"] if args.method == "ig" else 0.0)
    if smooth > 0:
        if args.method in ATTENTION_KINDS:
            raise ValueError(f"--smooth applies to the attribution methods, not to {args.method!r}")
        kwargs["smooth"] = smooth
    if args.method in ("ig", "layer_ig", "feature_ig"):
        kwargs["n_steps"] = args.steps
    return kwargs


def _save_overlay(path: Path, image, restored, title: str, baseline: str) -> None:
    """Draw the map over the radiograph and write the PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xraygpt_lab.atomic import atomic_write
    from xraygpt_lab.interpret.plots import DPI, overlay

    aspect = min(max(image.shape[0] / image.shape[1], 0.25), 3.0)  # a strip of a film still gets a normal page
    fig, ax = plt.subplots(figsize=(5, 5 * aspect + 0.6), dpi=DPI)
    try:
        overlay(ax, image, restored, title=title, baseline=baseline)
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)


def _ood_fields(model, pixels, shape: tuple[int, int], image: Path) -> dict:
    """The out-of-distribution fields of the JSON (``runs.ood_detector``); a warning on stderr when flagged."""
    import sys

    from xraygpt_lab.models.ood import UNCHECKED
    from xraygpt_lab.runs import ood_detector

    detector = ood_detector(model, progress=True, log=lambda m: print(m, file=sys.stderr, flush=True))
    if detector is None:
        return dict(UNCHECKED)
    verdict = detector.check(model.encoder, pixels, [shape])[0]
    if not verdict.in_distribution:
        print(f"warning: {image}: {verdict.warning()}", file=sys.stderr, flush=True)
    return verdict.as_json()


def run(args: argparse.Namespace) -> int:
    """Load, generate, attribute, map back, draw, print."""
    from xraygpt_lab.paths import check_output_file

    check_output_file(args.out, inputs=[args.image], suffixes=(".png",))  # before any work
    import torch  # heavy imports here, not at module level: --help stays fast

    from xraygpt_lab.data.readers.images import load_image
    from xraygpt_lab.interpret.attribution import explain
    from xraygpt_lab.interpret.geometry import map_to_image, model_to_image
    from xraygpt_lab.interpret.phrases import noun_phrase, resolve_phrase
    from xraygpt_lab.interpret.targets import find_phrase, phrase_target
    from xraygpt_lab.runs import load_run

    from transformers.utils import logging as hf_logging

    if args.answer is not None and find_phrase(args.answer, args.phrase) is None and noun_phrase(args.answer, args.phrase) is None:
        raise ValueError(f"--phrase {args.phrase!r} does not occur in --answer")
    image = load_image(args.image)  # [H, W]; a missing file, a folder or a damaged one: ImageLoadError
    kwargs = _method_kwargs(args)
    hf_logging.disable_progress_bar()  # stdout carries JSON only, stderr one line on error
    model = load_run(args.run, device=args.device)
    size, fit = model.encoder.image_size, model.pixel_space.fit
    pixels = model.image_processor(args.image)  # [1, C, S, S]: the model's own transform
    resolved = resolve_phrase(model, pixels, args.phrase, args.prompt, args.answer, args.max_new_tokens)
    target = phrase_target(model, resolved.phrase, resolved.answer, resolved.instruction)
    torch.manual_seed(0)  # SmoothGrad / GradientShap noise
    result = explain(target, pixels, args.method, **kwargs)
    restored = map_to_image(result.map, image.shape, fit)  # [H, W]
    r, c = (int(v) for v in divmod(int(restored.argmax()), restored.shape[1]))
    _save_overlay(args.out, image, restored, f"{args.method}: {resolved.phrase!r}", result.baseline)
    checked = _ood_fields(model, pixels, image.shape, args.image)  # after the work: an error stays one line
    mr, mc = result.peak
    print(json.dumps({
        "method": args.method, "phrase": args.phrase, "peak": [r, c],
        "peak_model": [mr, mc], "peak_model_in_image": [round(v, 1) for v in model_to_image(mr, mc, size, image.shape, fit)],
        "image_shape": list(image.shape), "model_size": size, "baseline": result.baseline,
        "target": result.target, "score": result.score, "resolution": result.resolution,
        "answer": resolved.report, "explained_phrase": resolved.phrase, "phrase_in_answer": resolved.written,
        "phrase_source": resolved.source, "instruction": resolved.instruction,
        "explained_answer": resolved.answer, "out": str(args.out), **checked,
    }))
    return 0
