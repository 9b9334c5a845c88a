"""``xraygpt-lab describe``: one generated report per image, and whether the image is like the training films.

Each image is also checked against the run's training world (``models.ood``: a feature score of the
frozen encoder and input checks); one that is not gets a warning on stderr. ``--json`` prints one
JSON object per line and image instead: ``image``, ``report``, ``in_distribution``, ``ood_score``,
``ood_threshold`` and ``ood_reasons`` (``null`` scores for a model without the check, the released one).

An image that cannot be read (damaged, not an image, a DICOM without pixels) is skipped with its
reason on stderr (``--json``: an object with ``image`` and ``error``) and the others are described;
the exit status is then 2. A single unreadable image is a one-line error before the model loads.
"""
from __future__ import annotations

from pathlib import Path

from xraygpt_lab.cli._common import add_device_argument, add_run_argument, positive_int

DEFAULT_INSTRUCTION = "Describe the given chest x-ray image in detail."


def register(subparsers) -> None:
    """Add the ``describe`` sub-command."""
    p = subparsers.add_parser(
        "describe", help="write a report for each image with a trained run",
        description="Load the run folder and print one generated report per image (PNG, JPEG, DICOM … "
                    "any size load_image reads).")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="radiograph files")
    add_run_argument(p)
    p.add_argument("--instruction", default=DEFAULT_INSTRUCTION, help="the question asked about each image")
    p.add_argument("--max-new-tokens", type=positive_int, default=160, help="longest report in tokens (160)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line and image: image, report, in_distribution, ood_score, "
                        "ood_threshold, ood_reasons")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    import torch

    from xraygpt_lab.data.readers.images import load_image
    from xraygpt_lab.errors import ImageLoadError
    from xraygpt_lab.models.ood import UNCHECKED
    from xraygpt_lab.runs import load_run, ood_detector

    readable, shapes, unreadable = [], [], []
    for path in args.images:  # every file is read before the model loads: a bad one costs no model time
        try:
            shapes.append(load_image(path).shape)
            readable.append(path)
        except ImageLoadError as error:
            if len(args.images) == 1:
                raise
            unreadable.append((path, error))
    for path, error in unreadable:
        if args.json:
            print(json.dumps({"image": str(path), "error": str(error)}), flush=True)
        print(f"skipped: {error}", file=sys.stderr, flush=True)
    if not readable:
        raise ImageLoadError(f"none of the {len(args.images)} images could be read (reasons above)")
    model = load_run(args.run, device=args.device)
    # the model's own transform: MedCLIP's grey [B, 1, S, S], or BLIP-2's RGB [B, 3, S, S] for the release
    pixels = torch.cat([model.image_processor(path) for path in readable])
    reports = model.describe(pixel_values=pixels, instruction=args.instruction, max_new_tokens=args.max_new_tokens)
    # checked after the reports, so that a refused request (too many tokens) stays a one-line error
    detector = ood_detector(model, progress=True, log=lambda m: print(m, file=sys.stderr, flush=True))
    verdicts = detector.check(model.encoder, pixels, shapes) if detector is not None else [None] * len(shapes)
    for path, report, verdict in zip(readable, reports, verdicts):
        if args.json:
            checked = verdict.as_json() if verdict is not None else dict(UNCHECKED)
            print(json.dumps({"image": str(path), "report": report, **checked}), flush=True)
            continue
        if verdict is not None and not verdict.in_distribution:
            print(f"warning: {path}: {verdict.warning()}", file=sys.stderr, flush=True)
        print(f"{path}: {report}" if len(args.images) > 1 else report, flush=True)
    return 2 if unreadable else 0
