"""``perseus jobs``: list the jobs a Perseus server knows."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from perseus.client.cli_args import add_connection_args

if TYPE_CHECKING:
    from perseus.client.types import JobInfo


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "jobs",
        help="list the server's jobs with their phase, target and current plan",
        description="List every job on a Perseus server, newest first.",
    )
    parser.add_argument("--runs", action="store_true", help="also list each job's training runs")
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
            str(j.target), j.plan_name or "-", str(j.num_ranks), str(len(j.runs)), str(j.num_iterations),
            ",".join(f"{p}:{f:g}" for p, f in sorted(j.stragglers.items())) or "-",
        ]
        for j in jobs
    ]
    headers = ["JOB", "MODEL", "SCHEDULE", "STAGESxMB", "DP", "PHASE", "TARGET", "PLAN", "RANKS", "RUNS", "ITERS",
               "STRAGGLERS"]
    print(table(headers, rows) if rows else "no jobs")
    if args.runs:
        print(runs_table(jobs))
    for j in jobs:
        if j.error:
            print(f"{j.job_id}: {j.error}")
    return 0


def runs_table(jobs: list[JobInfo]) -> str:
    """One row per training run: its ranks, iterations and reports, and when it reported."""
    import time

    from perseus.client.cli_args import table

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))

    rows = [[j.job_id, r.run_id or "(no run id)", str(r.num_ranks), str(r.num_iterations), str(r.num_reports),
             when(r.first_report_at), when(r.last_report_at)] for j in jobs for r in j.runs]
    headers = ["JOB", "RUN", "RANKS", "ITERS", "REPORTS", "FIRST REPORT (UTC)", "LAST REPORT (UTC)"]
    return table(headers, rows) if rows else "no runs"
