"""``xraygpt-lab label``: CheXpert-style labels (1 / 0 / -1 / null) for report text."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``label`` sub-command."""
    p = subparsers.add_parser(
        "label", help="label report text with the 14 CheXpert observations",
        description='Print one JSON object keyed by the 14 CheXpert names for TEXT, or read a JSONL '
                    'file of {"id": ..., "text": ...} lines (--in) and write '
                    '{"id": ..., "labels": {...}} lines (--out, or stdout).')
    p.add_argument("text", nargs="?", default=None, help="report text (or use --in)")
    p.add_argument("--in", dest="input", type=Path, default=None, help="JSONL input file")
    p.add_argument("--out", type=Path, default=None, help="JSONL output file (default: stdout)")
    p.set_defaults(func=run)


def _read_jsonl(path: Path) -> list[tuple[object, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
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
    from xraygpt_lab.data.text.labeler import label_report

    if (args.text is None) == (args.input is None):
        raise ValueError("give either TEXT or --in FILE (not both)")
    if args.text is not None:
        print(json.dumps(label_report(args.text)))
        return 0
    lines = [json.dumps({"id": ident, "labels": label_report(text)})
             for ident, text in _read_jsonl(args.input)]
    payload = "".join(line + "\n" for line in lines)
    if args.out is None:
        sys.stdout.write(payload)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload)
        os.replace(tmp, args.out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return 0
