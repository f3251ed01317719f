"""``perseus``: the single command-line entry point.

Each command lives in its own module under :mod:`perseus.cli` exposing
``register(subparsers)``; heavy imports stay inside the command handlers so
``perseus --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from perseus import __version__
from perseus.errors import PerseusError

# Command modules, in the order `perseus --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "perseus.cli.optimize",
    "perseus.cli.plan",
    "perseus.cli.plot",
    "perseus.cli.devices",
    "perseus.cli.serve",
    "perseus.cli.jobs",
    "perseus.cli.frontier",
    "perseus.cli.target",
    "perseus.cli.bso",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perseus",
        description="Perseus: remove energy bloat from pipeline-parallel training by planning GPU frequencies.",
    )
    parser.add_argument("--version", action="version", version=f"perseus {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except PerseusError as exc:
        print(f"perseus: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perseus: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
