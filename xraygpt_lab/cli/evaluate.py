"""``xraygpt-lab evaluate``: ROUGE, BLEU, clinical efficacy and the image-blind baseline on a folder."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from xraygpt_lab.cli._common import add_device_argument, add_run_argument, positive_int
from xraygpt_lab.eval.consistency import CONSISTENCY_METRICS
from xraygpt_lab.eval.details import DETAIL_METRICS


def register(subparsers) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate", help="score a trained run on a dataset folder (JSON)",
        description="Generate a report for every image of DIR (any layout open_dataset reads, e.g. a "
                    "`xraygpt-lab synth` folder with an unseen seed) and print JSON with rouge1/2/L, "
                    "bleu1..4, ce_f1_macro/micro, per_observation, repetition_rate, contradiction_rate, "
                    "side_agreement, grade_agreement, "
                    "vs_ground_truth (when DIR has labels.csv), baselines.image_blind (projection output "
                    "replaced by zeros) and skipped (records left out, by reason: missing image, malformed "
                    "labels, unreadable file …). "
                    + " ".join(f"{name}: {what}." for name, what in
                               {**CONSISTENCY_METRICS, **DETAIL_METRICS}.items()))
    add_run_argument(p)
    p.add_argument("--data", type=Path, required=True, help="dataset folder with images and reference reports")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here (default: stdout)")
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N records")
    p.add_argument("--max-new-tokens", type=positive_int, default=160, help="longest report in tokens (160)")
    add_device_argument(p)
    p.set_defaults(func=run)


def _share(value: float | None) -> str:
    """``0.987``, or ``n/a`` where no finding had the side (or grade) in both texts."""
    return "n/a" if value is None else f"{value:.3f}"


def usable_records(dataset) -> tuple[list, Counter]:
    """Records with an image and a reference report, and the reader's skips plus the ones left out here."""
    skipped: Counter[str] = Counter(dataset.skipped)
    records = []
    for record in dataset.records:
        if record.image_path is None:
            skipped["no image"] += 1
        elif not record.summary:
            skipped["no reference report"] += 1
        else:
            records.append(record)
    return records, skipped


def skip_line(skipped: Counter, total: int) -> str:
    """``skipped 3 of 12 records: missing image 2, not an image 1``."""
    n = sum(skipped.values())
    reasons = ", ".join(f"{reason} {count}" for reason, count in skipped.most_common())
    return f"skipped {n} of {total} records: {reasons}"


def run(args) -> int:
    import json
    import sys

    import torch

    from xraygpt_lab.atomic import atomic_write
    from xraygpt_lab.data.readers import open_dataset
    from xraygpt_lab.data.readers.headers import check_records
    from xraygpt_lab.errors import ImageLoadError, XrayGPTLabError
    from xraygpt_lab.paths import check_output_file
    from xraygpt_lab.runs import load_run
    from xraygpt_lab.train.evaluation import evaluate_model

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.out is not None:
        check_output_file(args.out)  # before the work, not after it
    dataset = check_records(open_dataset(args.data))
    records, skipped = usable_records(dataset)
    total = len(records) + sum(skipped.values())
    if args.limit:
        records = records[: args.limit]
    unreadable = list(dataset.details.get("unreadable", []))
    model = load_run(args.run, device=args.device) if records else None
    pixels, kept = [], []
    for record in records:
        try:
            pixels.append(model.image_processor(record.image_path))  # [1, C, S, S], the model's transform
            kept.append(record)
        except ImageLoadError as exc:  # one bad file costs one record, not the run
            skipped[exc.reason] += 1
            unreadable.append({"image_id": record.image_id, "error": str(exc)})
    if skipped:
        say(skip_line(skipped, total))
    if not kept:
        raise XrayGPTLabError(f"{args.data}: no usable records (need an image and a reference report)"
                              + (f"; {skip_line(skipped, total)}" if skipped else ""))
    truth = [r.labels for r in kept] if all(r.labels for r in kept) else None
    metrics = evaluate_model(model, [r.summary for r in kept], pixel_values=torch.cat(pixels),
                             ground_truth=truth, max_new_tokens=args.max_new_tokens, log=say)
    metrics["data"] = str(args.data)
    metrics["skipped"] = dict(skipped.most_common())
    if unreadable:
        metrics["unreadable"] = unreadable[:20]
    text = json.dumps(metrics, indent=2)
    if args.out is not None:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
        say(f"wrote {args.out}: ROUGE-L {metrics['rougeL']:.3f}, CE macro-F1 {metrics['ce_f1_macro']:.3f}, "
            f"image-blind CE macro-F1 {metrics['baselines']['image_blind']['ce_f1_macro']:.3f}, "
            f"repetition rate {metrics['repetition_rate']:.3f}, contradiction rate "
            f"{metrics['contradiction_rate']:.3f}, side agreement {_share(metrics.get('side_agreement'))}, "
            f"grade agreement {_share(metrics.get('grade_agreement'))}")
    else:
        print(text)
    return 0
