"""``xraygpt-lab evaluate``: ROUGE, BLEU, clinical efficacy and the image-blind baseline on a folder."""
from __future__ import annotations

from pathlib import Path

from xraygpt_lab.cli._common import add_device_argument, positive_int


def register(subparsers) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate", help="score a trained run on a dataset folder (JSON)",
        description="Generate a report for every image of DIR (any layout open_dataset reads, e.g. a "
                    "`xraygpt-lab synth` folder with an unseen seed) and print JSON with rouge1/2/L, "
                    "bleu1..4, ce_f1_macro/micro, per_observation, vs_ground_truth (when DIR has "
                    "labels.csv) and baselines.image_blind (projection output replaced by zeros).")
    p.add_argument("--run", type=Path, default=None, help="run folder (default: $XRAYGPT_LAB_RUN or runs/tiny)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder with images and reference reports")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here (default: stdout)")
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N records")
    p.add_argument("--max-new-tokens", type=positive_int, default=160, help="longest report in tokens (160)")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    import torch

    from xraygpt_lab.data.readers.images import load_image, preprocess
    from xraygpt_lab.data.readers import open_dataset
    from xraygpt_lab.errors import XrayGPTLabError
    from xraygpt_lab.runs import default_run_dir, load_run
    from xraygpt_lab.atomic import atomic_write_text
    from xraygpt_lab.train.evaluation import evaluate_model

    model = load_run(args.run or default_run_dir(), device=args.device)
    records = [r for r in open_dataset(args.data).records if r.summary and r.image_path is not None]
    if args.limit:
        records = records[: args.limit]
    if not records:
        raise XrayGPTLabError(f"{args.data}: no records with both an image and a reference report")
    pixels = torch.stack([preprocess(load_image(r.image_path), model.image_size) for r in records])
    truth = [r.labels for r in records] if all(r.labels for r in records) else None
    metrics = evaluate_model(model, [r.summary for r in records], pixel_values=pixels, ground_truth=truth,
                             max_new_tokens=args.max_new_tokens,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    metrics["data"] = str(args.data)
    text = json.dumps(metrics, indent=2)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")
        print(f"wrote {args.out}: ROUGE-L {metrics['rougeL']:.3f}, CE macro-F1 {metrics['ce_f1_macro']:.3f}, "
              f"image-blind CE macro-F1 {metrics['baselines']['image_blind']['ce_f1_macro']:.3f}", file=sys.stderr)
    else:
        print(text)
    return 0
