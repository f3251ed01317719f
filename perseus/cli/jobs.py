"""``perseus jobs [list | delete JOB | reprofile JOB]``: list, delete or re-profile a server's jobs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from perseus.client.cli_args import add_connection_args

if TYPE_CHECKING:
    from perseus.client import JobInfo, PowerCapInfo
    from perseus.reports import RunInfo

ACTIONS = ("list", "delete", "reprofile")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "jobs",
        help="list the server's jobs; delete or re-profile one",
        description=(
            "list (default): every job on a Perseus server, newest first, with phase, target and plan. "
            "delete JOB: forget the job with its ranks, plans and reports (its ranks' calls then get "
            "NOT_FOUND). reprofile JOB: drop the job's profile and frontier; its ranks sweep the frequencies again "
            "and a new frontier is computed."
        ),
    )
    parser.add_argument("--runs", action="store_true", help="also list each job's training runs")
    parser.add_argument("action", nargs="?", choices=ACTIONS, default="list", help="what to do (default: list)")
    parser.add_argument("job", nargs="?", metavar="JOB", help="the job to delete or re-profile")
    add_connection_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from perseus.client.cli_args import client_from_args
    from perseus.errors import InputError

    if args.action != "list" and not args.job:
        raise InputError("JOB", f"perseus jobs {args.action} needs the job id (see: perseus jobs)")
    if args.action == "list" and args.job:
        raise InputError("JOB", "perseus jobs lists every job; to act on one: perseus jobs delete|reprofile JOB")
    with client_from_args(args) as client:
        if args.action == "list":
            return _list(client.list_jobs(), as_json=args.json, with_runs=args.runs,
                         cap=None if args.json else client.get_power_cap())
        job = client.delete_job(args.job) if args.action == "delete" else client.reprofile_job(args.job)
    if args.json:
        print(json.dumps(dataclasses.asdict(job), indent=1))
    elif args.action == "delete":
        print(f"{job.job_id}: deleted ({job.num_ranks} ranks, {job.num_profile_reports} profile and "
              f"{job.num_iteration_reports} iteration reports)")
    else:
        print(f"{job.job_id}: re-profiling; its {job.num_ranks} ranks sweep the frequencies again")
    return 0


def _list(jobs: list[JobInfo], *, as_json: bool, with_runs: bool = False, cap: PowerCapInfo | None = None) -> int:
    import dataclasses
    import json

    from perseus.client.cli_args import table

    if as_json:
        print(json.dumps([dataclasses.asdict(j) for j in jobs], indent=1))
        return 0
    rows = [
        [
            j.job_id, j.model or "-", j.schedule, f"{j.num_stages}x{j.num_microbatches}", str(j.dp_degree),
            j.phase + (f" ({j.stages_profiled}/{j.num_stages})" if j.phase == "profiling" else ""),
            str(j.target), (j.plan_name or "-") + (" (cap)" if j.power_capped else ""), str(j.num_ranks),
            str(len(j.runs)), str(j.num_iterations),
            ",".join(f"{p}:{f:.3g}{'(auto)' if p in j.auto_stragglers else ''}"
                     for p, f in sorted(j.stragglers.items())) or "-",
            j.drift or "-",
            clocks(j.runs[-1]) if j.runs else "-",
            f"{j.planned_power:.0f}" if j.planned_power else "-", f"{j.measured_power:.0f}" if j.measured_power else "-",
            f"{j.weight:g}",
        ]
        for j in jobs
    ]
    headers = ["JOB", "MODEL", "SCHEDULE", "STAGESxMB", "DP", "PHASE", "TARGET", "PLAN", "RANKS", "RUNS", "ITERS",
               "STRAGGLERS", "DRIFT", "CLOCKS (LAST RUN)", "PLANNED W", "MEASURED W", "WEIGHT"]
    print(table(headers, rows) if rows else "no jobs")
    if cap is not None and (cap.watts is not None or cap.planned_power or cap.measured_power):
        from perseus.cli.cap import summary

        print(summary(cap))  # the total against the cap, and whether it can be met
    if with_runs:
        print(runs_table(jobs))
    for j in jobs:
        if j.error:
            print(f"{j.job_id}: {j.error}")
        if j.target_note:
            print(f"{j.job_id}: note: {j.target_note}")
        if j.sweep_note:
            print(f"{j.job_id}: sweep: {j.sweep_note}")
        if j.drift:
            print(f"{j.job_id}: drift ({j.drift}): {j.drift_note}")
    return 0


def runs_table(jobs: list[JobInfo]) -> str:
    """One row per training run: its ranks, iterations and reports, and when it reported."""
    import time

    from perseus.client.cli_args import table

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))

    rows = [[j.job_id, r.run_id or "(no run id)", str(r.num_ranks), str(r.num_iterations), str(r.num_reports),
             when(r.first_report_at), when(r.last_report_at), clocks(r),
             f"{r.mean_clock_mhz:.0f}" if r.mean_clock_mhz else "-"] for j in jobs for r in j.runs]
    headers = ["JOB", "RUN", "RANKS", "ITERS", "REPORTS", "FIRST REPORT (UTC)", "LAST REPORT (UTC)", "CLOCKS",
               "MEAN MHZ"]
    return table(headers, rows) if rows else "no runs"


def clocks(run: RunInfo) -> str:
    """What a run's GPUs did, from its reports (read back): measure-only, or the share at the planned clock."""
    if run.measure_only_reports:
        if run.measure_only_reports == run.num_reports:
            return "measure-only"
        return f"measure-only ({run.measure_only_reports}/{run.num_reports} reports)"
    share = run.planned_clock_share
    return "-" if share is None else f"{100 * share:.0f}% at planned clock"
