"""``xraygpt-lab data``: inspect dataset folders and get the OpenI reports offline."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

LAYOUT_CHOICES = ("xraygpt", "mimic-cxr-jpg", "openi", "folder")  # = readers.LAYOUTS


def register(subparsers) -> None:
    """Add ``data summary`` and ``data openi-reports``."""
    p = subparsers.add_parser("data", help="inspect datasets; get the OpenI reports",
                              description="Dataset tools: summarise a folder, fetch OpenI reports.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    p.set_defaults(func=lambda args: _missing_action(p))

    s = sub.add_parser("summary", help="detect a dataset's layout and count records / skips",
                       description="Read DIR (XrayGPT layout, MIMIC-CXR-JPG, OpenI or a folder of "
                                   'images) and print {"layout", "records", "skipped", "details"} '
                                   "as JSON. Each image's header is opened (not its pixels): files "
                                   "that are no image, truncated, DICOMs without pixel data and "
                                   "decompression bombs are counted under skipped by reason.")
    s.add_argument("dir", type=Path, help="dataset folder")
    s.add_argument("--layout", choices=LAYOUT_CHOICES, default=None,
                   help="force a layout instead of detecting it")
    s.set_defaults(func=run_summary)

    o = sub.add_parser("openi-reports", help="extract the 3,955 OpenI XML reports to a folder",
                       description="Write OpenI's ecgen-radiology/*.xml reports to OUT. Uses --tgz "
                                   "when given, else the cache ($XRAYGPT_LAB_CACHE/openi or "
                                   "~/.cache/xraygpt-lab/openi), else downloads the torchxrayvision "
                                   "wheel with 'pip download --no-deps' (nothing is installed) and "
                                   "takes the NLMCXR_reports.tgz it ships.")
    o.add_argument("--out", type=Path, required=True, help="output folder")
    o.add_argument("--tgz", type=Path, default=None, help="a local NLMCXR_reports.tgz")
    o.add_argument("--no-download", action="store_true", help="never call pip")
    o.add_argument("--timeout", type=float, default=180.0, help="pip download timeout, seconds")
    o.set_defaults(func=run_openi_reports)


def _missing_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_summary(args: argparse.Namespace) -> int:
    """Print the dataset summary as JSON."""
    from xraygpt_lab.data.readers import open_dataset
    from xraygpt_lab.data.readers.headers import check_records

    dataset = check_records(open_dataset(args.dir, layout=args.layout))
    print(json.dumps(dataset.summary(), indent=2))
    return 0


def run_openi_reports(args: argparse.Namespace) -> int:
    """Obtain NLMCXR_reports.tgz (cached) and extract its XML reports into --out."""
    from xraygpt_lab.data.text.openi_reports import extract_reports, obtain_openi_reports

    if args.tgz is not None and not args.tgz.is_file():
        raise FileNotFoundError(f"{args.tgz}: " + ("is a folder, not the .tgz archive" if args.tgz.is_dir()
                                                   else "no such file"))
    tgz = obtain_openi_reports(args.tgz, allow_download=not args.no_download,
                               timeout=args.timeout)
    written = extract_reports(tgz, args.out)
    print(json.dumps({"reports": written, "out": str(Path(args.out) / "ecgen-radiology"),
                      "tgz": str(tgz)}))
    return 0
