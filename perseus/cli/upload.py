"""``perseus upload``: send iteration reports a training run could not deliver (its spill files)."""

from __future__ import annotations

import argparse
from pathlib import Path

from perseus.client.cli_args import add_connection_args
from perseus.errors import InputError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "upload",
        help="send the iteration reports training kept while the server was away (perseus-unsent/ files)",
        description="Send spill files (OUT_DIR/perseus-unsent/*.jsonl) to the server, then delete each file whose "
        "reports were all acknowledged. Sending a report twice is harmless: the server keeps one copy.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="spill files, or folders holding them")
    add_connection_args(parser)
    parser.set_defaults(handler=run)


def spill_files(paths: list[str]) -> list[Path]:
    """The ``*.jsonl`` files named or found (not recursively) in the folders named."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found += sorted(path.glob("*.jsonl"))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(text, "no such file or folder")
    return found


def run(args: argparse.Namespace) -> int:
    import json

    from perseus.client.cli_args import client_from_args
    from perseus.client.reporter import BATCH_SIZE
    from perseus.reports import read_spill

    summary = []
    with client_from_args(args) as client:
        for path in spill_files(args.paths):
            groups, truncated = read_spill(path)
            stored = duplicates = 0
            for (job_id, run_id), reports in groups.items():
                for start in range(0, len(reports), BATCH_SIZE):
                    ack = client.report_iterations(job_id, run_id, reports[start:start + BATCH_SIZE])
                    stored, duplicates = stored + ack.stored, duplicates + ack.duplicates
            path.unlink()
            summary.append({"file": str(path), "stored": stored, "duplicates": duplicates,
                            "cut_short_line_skipped": truncated})
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    for s in summary:
        note = "; its cut-short last line was skipped" if s["cut_short_line_skipped"] else ""
        print(f"{s['file']}: {s['stored']} reports stored, {s['duplicates']} already there{note}")
    if not summary:
        print("no spill files found")
    return 0
