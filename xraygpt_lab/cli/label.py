"""``xraygpt-lab label``: CheXpert-style labels (1 / 0 / -1 / null) for report text."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``label`` sub-command."""
    p = subparsers.add_parser(
        "label", help="label report text with the 14 CheXpert observations",
        description='Print one JSON object keyed by the 14 CheXpert names for TEXT, or read a JSONL '
                    'file of {"id": ..., "text": ...} lines (--in) and write '
                    '{"id": ..., "labels": {...}} lines (--out, or stdout). An empty text has no labels '
                    '(every value null).')
    p.add_argument("text", nargs="?", default=None, help="report text (or use --in)")
    p.add_argument("--in", dest="input", type=Path, default=None, help="JSONL input file")
    p.add_argument("--out", type=Path, default=None, help="JSONL output file (default: stdout)")
    p.set_defaults(func=run)


def _read_jsonl(path: Path) -> list[tuple[object, str]]:
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; --in takes a JSONL file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "--in takes a JSONL file of {\"id\": ..., \"text\": ...} lines") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f'{path}:{number}: expected an object with a "text" string')
        rows.append((row.get("id", number), row["text"]))
    return rows


def run(args: argparse.Namespace) -> int:
    """Label TEXT or the --in file."""
    from xraygpt_lab.atomic import atomic_write
    from xraygpt_lab.data.text.labeler import label_report
    from xraygpt_lab.paths import check_output_file

    if (args.text is None) == (args.input is None):
        raise ValueError("give either TEXT or --in FILE (not both)")
    if args.text is not None:
        if not args.text.strip():
            raise ValueError("TEXT is empty: there is no report to label")
        print(json.dumps(label_report(args.text)))
        return 0
    if args.out is not None:
        check_output_file(args.out, inputs=[args.input])
    lines = [json.dumps({"id": ident, "labels": label_report(text)})
             for ident, text in _read_jsonl(args.input)]
    payload = "".join(line + "\n" for line in lines)
    if args.out is None:
        sys.stdout.write(payload)
        return 0
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(payload, encoding="utf-8"))
    return 0
