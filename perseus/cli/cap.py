"""``perseus cap [--watts W | --clear]``: the cluster power cap over every serving job of a server."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from perseus.client.cli_args import add_connection_args

if TYPE_CHECKING:
    from perseus.client import PowerCapInfo

MAX_WATTS = 1e8
"""The server's limit (perseus.server.capping.MAX_CAP_WATTS), checked here for a one-line error without a call."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cap",
        help="show, set or clear the cluster power cap over every serving job",
        description=(
            "Without flags: show the cap, whether it is met, and each serving job's plan with its planned power "
            "(energy per iteration / iteration time x pipelines) and measured power (its latest iteration reports). "
            "--watts W: keep the summed planned power of all serving jobs within W watts with the least total "
            "weighted slowdown (weights: perseus target JOB --weight; a job's max-slowdown or deadline target is a "
            "floor the cap never breaks). --clear: every job runs its own target again."
        ),
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--watts", type=float, metavar="W", help="the budget in watts, in (0, 1e8]")
    group.add_argument("--clear", action="store_true", help="remove the cap")
    add_connection_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from perseus.client.cli_args import client_from_args
    from perseus.errors import InputError

    if args.watts is not None and not (math.isfinite(args.watts) and 0 < args.watts <= MAX_WATTS):
        raise InputError("--watts", f"must be a number of watts in (0, {MAX_WATTS:.0e}], got {args.watts}")
    with client_from_args(args) as client:
        if args.clear:
            cap = client.set_power_cap(None)
        elif args.watts is not None:
            cap = client.set_power_cap(args.watts)
        else:
            cap = client.get_power_cap()
    if args.json:
        print(json.dumps(dataclasses.asdict(cap), indent=1))
        return 0
    print(render(cap))
    return 0


def summary(cap: PowerCapInfo) -> str:
    """One line: the cap against the planned and measured totals, and its state."""
    totals = f"planned {cap.planned_power:.0f} W, measured {cap.measured_power:.0f} W"
    if cap.watts is None:
        return f"power cap: none ({totals})"
    line = f"power cap: {cap.watts:.0f} W ({totals})"
    if not cap.feasible:
        return f"{line}; CANNOT BE MET: {cap.note}"
    line += f"; met, weighted slowdown {100 * cap.weighted_slowdown:.2f}%"
    return line + (f" ({cap.note})" if cap.note else " (exact)")


def render(cap: PowerCapInfo) -> str:
    from perseus.client.cli_args import table

    rows = [
        [j.job_id, j.plan_name, f"{j.planned_power:.0f}", f"{j.measured_power:.0f}" if j.measured_power else "-",
         f"{j.weight:g}", f"{100 * j.slowdown:.2f}%",
         "pinned" if j.pinned else (f"{j.max_slowdown:g}x" if j.max_slowdown else "-")]
        for j in cap.jobs
    ]
    headers = ["JOB", "PLAN", "PLANNED W", "MEASURED W", "WEIGHT", "SLOWDOWN", "FLOOR"]
    return "\n".join([table(headers, rows) if rows else "no serving jobs", summary(cap)])
