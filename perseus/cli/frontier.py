"""``perseus frontier JOB``: show a job's time-energy frontier from the server."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from perseus.client.cli_args import add_connection_args

if TYPE_CHECKING:
    from perseus.client import PerseusClient


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "frontier",
        help="show a job's time-energy frontier (the plans its target can choose from)",
        description="Print the frontier the server computed for JOB, fastest plan first; '*' marks the served plan.",
    )
    parser.add_argument("job", metavar="JOB", help="job id (see: perseus jobs)")
    parser.add_argument("--save", metavar="NAME=FILE", help="also write plan NAME as JSON to FILE")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="also write every plan as DIR/<plan>.json (fetched page by page, with progress)")
    add_connection_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    from perseus.client.cli_args import client_from_args, table
    from perseus.errors import InputError

    name, _, path = (args.save or "").partition("=")
    if args.save and (not name or not path):
        raise InputError("--save", f"expected NAME=FILE, got {args.save!r}")
    if args.export is not None and args.export.exists() and not args.export.is_dir():
        raise InputError("--export", f"{args.export} is a file, expected a directory")
    with client_from_args(args) as client:
        frontier = client.get_frontier(args.job)
        if args.save:
            if name not in {p.name for p in frontier.plans}:
                raise InputError("--save", f"{args.job} has no frontier plan {name!r} (see: perseus frontier {args.job})")
            plan = client.get_frontier(args.job, include_plans=True, names=[name]).plans[0].plan
            assert plan is not None
            _write(plan.save, Path(path), "--save")
            print(f"saved plan {name} of {args.job} to {path}")
        if args.export is not None:
            print(f"exported {export(client, args.job, args.export)} plans of {args.job} to {args.export}")
    if args.json:
        print(json.dumps({"job_id": frontier.job_id, "phase": frontier.phase, "selected": frontier.selected,
                          "plans": [{"plan_id": p.plan_id, "name": p.name, "iteration_time": p.iteration_time,
                                     "energy": p.energy} for p in frontier.plans]}, indent=1))
        return 0
    if not frontier.plans:
        print(f"{args.job}: no frontier yet (job is {frontier.phase})")
        return 0
    fastest = frontier.plans[0]
    rows = [
        ["*" if p.name == frontier.selected else "", p.name, f"{p.iteration_time:.4f}", f"{p.energy:.1f}",
         f"{p.iteration_time / fastest.iteration_time:.3f}", f"{100 * (1 - p.energy / fastest.energy):.1f}%"]
        for p in frontier.plans
    ]
    print(table(["", "PLAN", "TIME_S", "ENERGY_J", "SLOWDOWN", "SAVED"], rows))
    if frontier.selected and frontier.selected not in {p.name for p in frontier.plans}:
        print(f"served: {frontier.selected} (not a frontier plan)")
    return 0


def export(client: PerseusClient, job: str, directory: Path) -> int:
    """Write every plan of ``job``'s frontier as ``directory/<plan>.json``, a page at a time; returns how many."""
    from perseus.cli.progress import fraction_progress
    from perseus.plan import FrequencyPlan

    _write(lambda d: d.mkdir(parents=True, exist_ok=True), directory, "--export")
    written = 0
    with fraction_progress(f"fetching the plans of {job}") as progress:
        for page in client.frontier_pages(job, include_plans=True):
            for summary in page.plans:
                plan = FrequencyPlan.from_json(summary.plan_json)
                _write(plan.save, directory / f"{summary.name}.json", "--export")
                written += 1
            progress(written / max(page.total_plans, 1))
    return written


def _write(action: Callable[[Path], object], path: Path, flag: str) -> None:
    """``action(path)``, a write; an OSError becomes one line naming ``flag``."""
    from perseus.errors import InputError

    try:
        action(path)
    except OSError as exc:
        raise InputError(flag, f"cannot write {exc.filename or path}: {exc.strerror}") from None
