"""``perseus jobs``: list the jobs a Perseus server knows."""

from __future__ import annotations

import argparse

from perseus.client.cli_args import add_connection_args


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "jobs",
        help="list the server's jobs with their phase, target and current plan",
        description="List every job on a Perseus server, newest first.",
    )
    add_connection_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from perseus.client.cli_args import client_from_args, table

    with client_from_args(args) as client:
        jobs = client.list_jobs()
    if args.json:
        print(json.dumps([dataclasses.asdict(j) for j in jobs], indent=1))
        return 0
    rows = [
        [
            j.job_id, j.model or "-", j.schedule, f"{j.num_stages}x{j.num_microbatches}", str(j.dp_degree),
            j.phase + (f" ({j.stages_profiled}/{j.num_stages})" if j.phase == "profiling" else ""),
            str(j.target), j.plan_name or "-", str(j.num_ranks), str(j.num_iteration_reports),
            ",".join(f"{p}:{f:g}" for p, f in sorted(j.stragglers.items())) or "-",
        ]
        for j in jobs
    ]
    headers = ["JOB", "MODEL", "SCHEDULE", "STAGESxMB", "DP", "PHASE", "TARGET", "PLAN", "RANKS", "ITERS",
               "STRAGGLERS"]
    print(table(headers, rows) if rows else "no jobs")
    for j in jobs:
        if j.error:
            print(f"{j.job_id}: {j.error}")
    return 0
