"""``perseus plan export``: plans of a compact plan store as plan JSON files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan", help="work with the plans `perseus optimize` wrote",
        description="Work with the plans `perseus optimize` wrote to DIR/plans.npz.",
    )
    actions = parser.add_subparsers(dest="plan_action", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export", help="write plans as OUTDIR/<plan>.json",
        description="Write plans of DIR/plans.npz as OUTDIR/<plan>.json in the plan JSON schema "
        "(what workers' --plan and `perseus plot timeline` read).",
    )
    export.add_argument("directory", type=Path, metavar="DIR", help="output directory of `perseus optimize`")
    export.add_argument("plans", nargs="*", metavar="PLAN", help="plan names, e.g. p000 (see DIR/frontier.csv)")
    export.add_argument("--all", action="store_true", help="export every plan")
    export.add_argument("--out", type=Path, required=True, metavar="OUTDIR", help="directory for the JSON files")
    export.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from perseus.errors import InputError
    from perseus.plan.store import PlanStore

    if bool(args.plans) == args.all:
        raise InputError("perseus plan export", "name the plans to export, or pass --all (not both)")
    if args.out.exists() and not args.out.is_dir():
        raise InputError("--out", f"{args.out} is a file, expected a directory")
    store = PlanStore.load(args.directory)
    missing = [name for name in args.plans if name not in store.names]
    if missing:
        raise InputError(str(args.directory), f"no plan named {missing[0]!r} (plans are listed in frontier.csv)")
    indices = range(len(store)) if args.all else [store.index(name) for name in args.plans]
    try:
        written = store.export(indices, args.out)
    except OSError as exc:
        raise InputError("--out", f"cannot write {exc.filename or args.out}: {exc.strerror}") from None
    print(f"wrote {len(written)} plan(s) to {args.out}")
    return 0
