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
from perseus.cli.flags import FlagParser
from perseus.errors import PerseusError

# Every command: its module and the one line `perseus --help` shows for it, in listing order.
# Listing a command does not import its module, so `perseus --help` stays instant even though
# the client commands pull in gRPC and the planner numpy.
COMMANDS: dict[str, tuple[str, str]] = {
    "optimize": ("perseus.cli.optimize", "compute the iteration time-energy frontier of a profiled pipeline"),
    "plan": ("perseus.cli.plan", "work with the plans `perseus optimize` wrote"),
    "plot": ("perseus.cli.plot", "draw a frontier or a plan timeline as PNG"),
    "devices": ("perseus.cli.devices", "list GPUs with their clocks, power limits and energy counters"),
    "serve": ("perseus.cli.serve", "run the Perseus server that profiles jobs and serves frequency plans to workers"),
    "jobs": ("perseus.cli.jobs", "list the server's jobs; delete or re-profile one"),
    "upload": ("perseus.cli.upload", "send iteration reports a training run kept while the server was away"),
    "frontier": ("perseus.cli.frontier", "show a job's time-energy frontier (the plans its target can choose from)"),
    "target": (
        "perseus.cli.target",
        "set a job's target: fastest, max slowdown, deadline, energy budget, a plan file or a baseline",
    ),
    "cap": ("perseus.cli.cap", "show, set or clear the cluster power cap over every serving job"),
    "bso": ("perseus.cli.bso", "batch size optimizer for recurring jobs (trace-driven simulation)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``perseus`` parser with ``command``'s full flags (every command's when ``None``).

    Other commands are listed by name and one-line help only, without importing their modules.
    """
    parser = FlagParser(
        prog="perseus",
        description="Perseus: remove energy bloat from pipeline-parallel training by planning GPU frequencies.",
    )
    parser.add_argument("--version", action="version", version=f"perseus {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(module_name).register(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The top-level parser has no options taking values, so the first word is the command.
    command = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(command if command in COMMANDS else "")
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
