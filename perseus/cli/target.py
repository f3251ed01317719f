"""``perseus target JOB ...``: choose which plan a job runs."""

from __future__ import annotations

import argparse

from perseus.client.cli_args import add_connection_args

BASELINES = ("max-frequency", "global-power-limit", "per-stage-power-limit")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "target",
        help="set a job's target: fastest, max slowdown, deadline, energy budget, a plan file or a baseline",
        description=(
            "Pick the plan JOB runs. Frontier targets choose the least-energy plan that meets them; "
            "--plan serves a FrequencyPlan JSON; --baseline serves a comparison baseline "
            "(power limits are derived from the profile unless --power-limit is given). "
            "--weight W sets how much the job's slowdown counts under the cluster power cap (perseus cap), "
            "alone or with a target; under a cap a frontier target is a floor the cap never breaks."
        ),
    )
    parser.add_argument("job", metavar="JOB", help="job id (see: perseus jobs)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fastest", action="store_true", help="the fastest plan")
    group.add_argument("--max-slowdown", type=float, metavar="F", help="least energy within F x the fastest time")
    group.add_argument("--deadline", type=float, metavar="S", help="least energy with iteration time <= S seconds")
    group.add_argument("--energy-budget", type=float, metavar="J", help="fastest plan using <= J joules/iteration")
    group.add_argument("--plan", metavar="FILE", help="serve this plan (perseus.plan.FrequencyPlan JSON)")
    group.add_argument("--baseline", choices=BASELINES, help="serve a baseline the paper compares with")
    parser.add_argument("--power-limit", type=float, action="append", metavar="W",
                        help="baseline watts: once for a global limit, once per stage for per-stage limits")
    parser.add_argument("--baseline-slowdown", type=float, default=1.0, metavar="F",
                        help="derived baseline power limits keep iteration time within F x (default 1.0)")
    parser.add_argument("--weight", type=float, metavar="W",
                        help="how much this job's slowdown counts under the power cap, in (0, 1e6] (default 1)")
    parser.add_argument("--nearest", action="store_true",
                        help="when no plan meets --deadline or --energy-budget, run the closest plan instead of failing")
    add_connection_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import math

    from perseus.client import Target
    from perseus.client.cli_args import client_from_args
    from perseus.errors import InputError

    targets = (args.fastest, args.max_slowdown, args.deadline, args.energy_budget, args.plan, args.baseline)
    has_target = any(t not in (None, False) for t in targets)
    if not has_target and args.weight is None:
        raise InputError("target", "give one of --fastest, --max-slowdown, --deadline, --energy-budget, --plan, "
                                   "--baseline, or --weight")
    if args.weight is not None and not (math.isfinite(args.weight) and 0 < args.weight <= 1e6):
        raise InputError("--weight", f"must be a number in (0, 1e6], got {args.weight}")
    if args.power_limit and not args.baseline:
        raise InputError("--power-limit", "only applies with --baseline")
    if args.nearest and args.deadline is None and args.energy_budget is None:
        raise InputError("--nearest", "only applies with --deadline or --energy-budget")
    if args.max_slowdown is not None:
        target = Target.max_slowdown(args.max_slowdown)
    elif args.deadline is not None:
        target = Target.deadline(args.deadline)
    elif args.energy_budget is not None:
        target = Target.energy_budget(args.energy_budget)
    elif args.plan:
        target = Target.plan(args.plan)
    elif args.baseline:
        target = Target.of_baseline(args.baseline, args.baseline_slowdown, tuple(args.power_limit or ()))
    else:
        target = Target.fastest()
    with client_from_args(args) as client:
        if args.weight is not None:
            job = client.set_weight(args.job, args.weight)
        if has_target:
            job = client.set_target(args.job, target, nearest=args.nearest)
    if args.json:
        print(json.dumps(dataclasses.asdict(job), indent=1))
        return 0
    if args.weight is not None:
        print(f"{job.job_id}: weight {job.weight:g} under the power cap")
    if not has_target:
        return 0
    if job.plan_name:
        t, e = job.plan_iteration_time, job.plan_energy
        print(f"{job.job_id}: target {job.target}; serving {job.plan_name}: {t:.4g} s, {e:.4g} J, "
              f"{e / t:.4g} W average per iteration")
    else:
        print(f"{job.job_id}: target {job.target}; serving (chosen once the frontier is ready; job is {job.phase})")
    if job.power_capped:
        print(f"{job.job_id}: note: the cluster power cap chose {job.plan_name}; the target is its floor (perseus cap)")
    if job.target_note:
        print(f"{job.job_id}: note: {job.target_note}")
    return 0
