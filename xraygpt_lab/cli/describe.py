"""``xraygpt-lab describe``: one generated report per image."""
from __future__ import annotations

from pathlib import Path

from xraygpt_lab.cli._common import add_device_argument, positive_int

DEFAULT_INSTRUCTION = "Describe the given chest x-ray image in detail."


def register(subparsers) -> None:
    """Add the ``describe`` sub-command."""
    p = subparsers.add_parser(
        "describe", help="write a report for each image with a trained run",
        description="Load the run folder and print one generated report per image (PNG, JPEG, DICOM … "
                    "any size load_image reads).")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="radiograph files")
    p.add_argument("--run", type=Path, default=None, help="run folder (default: $XRAYGPT_LAB_RUN or runs/tiny)")
    p.add_argument("--instruction", default=DEFAULT_INSTRUCTION, help="the question asked about each image")
    p.add_argument("--max-new-tokens", type=positive_int, default=160, help="longest report in tokens (160)")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from xraygpt_lab.data.readers.images import load_image
    from xraygpt_lab.runs import default_run_dir, load_run

    for path in args.images:  # fail on a bad file before loading the model
        load_image(path)
    model = load_run(args.run or default_run_dir(), device=args.device)
    # the model's own transform: MedCLIP's grey [B, 1, S, S], or BLIP-2's RGB [B, 3, S, S] for the release
    pixels = torch.cat([model.image_processor(path) for path in args.images])
    reports = model.describe(pixel_values=pixels, instruction=args.instruction, max_new_tokens=args.max_new_tokens)
    for path, report in zip(args.images, reports):
        print(f"{path}: {report}" if len(args.images) > 1 else report)
    return 0
