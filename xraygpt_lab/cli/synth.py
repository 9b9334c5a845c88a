"""``xraygpt-lab synth``: write a synthetic chest-radiograph dataset in XrayGPT's layout."""
from __future__ import annotations

import argparse
from pathlib import Path

from xraygpt_lab.cli._common import checked, non_negative_int, positive_int
from xraygpt_lab.config import TINY

#: Kept equal to ``synthetic.MIN_SIZE`` / ``export.MAX_SIZE`` (not imported: --help stays fast).
MIN_SIZE, MAX_SIZE = 32, 2048


#: argparse type: an image side in pixels between MIN_SIZE and MAX_SIZE.
image_size = checked(int, lambda v: MIN_SIZE <= v <= MAX_SIZE,
                     f"an image side in whole pixels between {MIN_SIZE} and {MAX_SIZE}")
#: argparse type: a number in [0, 1).
fraction = checked(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def register(subparsers) -> None:
    """Add the ``synth`` sub-command."""
    p = subparsers.add_parser(
        "synth", help="write a synthetic chest x-ray dataset (XrayGPT layout)",
        description="Render N synthetic frontal chest radiographs with findings, masks, reports and "
                    "conversations; write DIR/image/*.png, DIR/filter_cap.json, DIR/labels.csv, "
                    "DIR/reports.jsonl and DIR/masks/. The same seed gives the same bytes.")
    p.add_argument("--n", type=positive_int, required=True, help="number of images (>= 1)")
    p.add_argument("--size", type=image_size, default=TINY.image_size,
                   help=f"image side in pixels (default: the tiny profile's {TINY.image_size})")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output folder: new or empty (created if missing)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that holds files: replace the files synth writes, delete nothing")
    p.add_argument("--workers", type=positive_int, default=None, help="worker processes (default: all CPUs)")
    p.add_argument("--normal-fraction", type=fraction, default=None,
                   help="share of images with no finding (default: follows the prevalences)")
    p.add_argument("--lung-shapes", choices=("builtin", "real"), default="builtin",
                   help="lung-field shapes: built-in, or drawn from the real lung segmentations of the "
                        "torchxrayvision wheel when they are cached (default: builtin)")
    p.add_argument("--finding-geometry", choices=("builtin", "real"), default="builtin",
                   help="where findings sit and how big they are: built-in, or drawn from the NIH, RSNA "
                        "and SIIM annotations of the torchxrayvision wheel when they are cached "
                        "(default: builtin)")
    p.add_argument("--fetch-tables", action="store_true",
                   help="first download the torchxrayvision wheel (pip, no install) and keep its lung "
                        "masks and finding tables in the cache, for --lung-shapes / --finding-geometry real")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export the dataset and print where it went."""
    from xraygpt_lab.data.synthetic.export import export_dataset
    from xraygpt_lab.data.synthetic.world import WorldConfig

    if args.fetch_tables:
        from xraygpt_lab.data.synthetic.real_findings import obtain_finding_tables
        from xraygpt_lab.data.synthetic.real_shapes import obtain_lung_masks

        obtain_lung_masks(allow_download=True)
        obtain_finding_tables(allow_download=True)
    config = WorldConfig(normal_fraction=args.normal_fraction, lung_shapes=args.lung_shapes,
                         finding_geometry=args.finding_geometry)
    path = export_dataset(args.out, n=args.n, size=args.size, seed=args.seed, config=config,
                          progress=not args.quiet, workers=args.workers,
                          overwrite=args.overwrite)
    print(f"wrote {args.n} images ({args.size} px, seed {args.seed}) to {path.parent}")
    return 0
