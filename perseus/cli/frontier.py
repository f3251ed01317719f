"""``perseus frontier JOB``: show a job's time-energy frontier from the server."""

from __future__ import annotations

import argparse

from perseus.client.cli_args import add_connection_args


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "frontier",
        help="show a job's time-energy frontier (the plans its target can choose from)",
        description="Print the frontier the server computed for JOB, fastest plan first; '*' marks the served plan.",
    )
    parser.add_argument("job", metavar="JOB", help="job id (see: perseus jobs)")
    parser.add_argument("--save", metavar="NAME=FILE", help="also write plan NAME as JSON to FILE")
    add_connection_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    from perseus.client.cli_args import client_from_args, table
    from perseus.errors import InputError

    with client_from_args(args) as client:
        frontier = client.get_frontier(args.job, include_plans=bool(args.save))
    if args.save:
        name, _, path = args.save.partition("=")
        plans = {p.name: p.plan for p in frontier.plans}
        if not path or plans.get(name) is None:
            raise InputError("--save", f"expected NAME=FILE with NAME a plan of {args.job}, got {args.save!r}")
        plan = plans[name]
        assert plan is not None
        plan.save(path)
        print(f"saved plan {name} of {args.job} to {path}")
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
