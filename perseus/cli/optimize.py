"""``perseus optimize``: compute a profile's time-energy frontier and write every plan."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from perseus.plan.model import SCHEDULES


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "optimize",
        help="compute the iteration time-energy frontier of a profiled pipeline",
        description="Compute the iteration time-energy Pareto frontier of a pipeline from its instruction "
        "profile. Writes DIR/frontier.csv (plan,iteration_time,energy) and DIR/plans/<plan>.json "
        "(and DIR/split_profile/profile.csv with --backward-input-share).",
    )
    parser.add_argument("profile", type=Path, metavar="PROFILE.csv", help="stage,instruction,frequency,time,energy")
    parser.add_argument("--stages", type=int, required=True, help="number of pipeline stages (GPUs)")
    parser.add_argument("--microbatches", type=int, required=True, help="microbatches per iteration")
    parser.add_argument(
        "--blocking-power", type=float, default=None, metavar="W",
        help="watts a GPU draws while blocked on communication (default: meta.json beside the profile)",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--schedule", choices=SCHEDULES, default="1f1b",
        help="pipeline schedule (default 1f1b); zb, zbv and dualpipev are torch's zero-bubble schedules",
    )
    parser.add_argument(
        "--chunks", type=int, default=None,
        help="model chunks per stage: interleaved-1f1b (default 2) and zb (default 1, ZB-H1); zbv and dualpipev use 2",
    )
    parser.add_argument(
        "--backward-input-share", type=float, default=None, metavar="X",
        help="for a profile without backward_input/backward_weight rows: split every backward, X of its time "
        "and energy to the input gradient and the rest to the weight gradient (see README, zero-bubble)",
    )
    parser.add_argument(
        "--time-resolution", type=float, default=None, metavar="S",
        help="iteration-time step of the solver and between plans, seconds (default: span/1000, at most 2%% "
        "of the shortest instruction, at least span/10000)",
    )
    parser.add_argument(
        "--lower-bound", action="store_true",
        help="also solve the convex relaxation at every plan's time and report the optimality gap",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from perseus.cli.progress import fraction_progress
    from perseus.errors import InputError
    from perseus.pipeline.costs import OptionTable, check_profile_kinds
    from perseus.pipeline.dag import PipelineDAG
    from perseus.pipeline.instruction import schedule_chunks
    from perseus.profile import load_profile, save_profile, split_backward
    from perseus.solver import compute_frontier
    from perseus.solver.lower_bound import LowerBound

    for name in ("stages", "microbatches", "chunks"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InputError(f"--{name}", f"must be >= 1, got {getattr(args, name)}")
    if args.time_resolution is not None and args.time_resolution <= 0:
        raise InputError("--time-resolution", f"must be positive, got {args.time_resolution}")
    chunks = schedule_chunks(args.schedule, args.chunks)
    profile = load_profile(args.profile, blocking_power=args.blocking_power)
    if args.backward_input_share is not None:
        if not 0 < args.backward_input_share < 1:
            raise InputError("--backward-input-share", f"must lie strictly between 0 and 1, got {args.backward_input_share}")
        if not profile.has_split_backward():
            profile = split_backward(profile, args.backward_input_share)
            saved = save_profile(profile, args.out / "split_profile", backward_input_share=args.backward_input_share,
                                 split_from=str(args.profile))
            print(f"split every backward of {args.profile}: {args.backward_input_share:g} input gradient, "
                  f"{1 - args.backward_input_share:g} weight gradient (time and energy) -> {saved}")
    check_profile_kinds(profile, args.schedule)
    with fraction_progress("solving frontier") as progress:
        frontier = compute_frontier(
            profile, args.schedule, args.stages, args.microbatches, chunks, progress, args.time_resolution
        )
    bounds: list[float] = []
    if args.lower_bound:
        dag = PipelineDAG.build(args.schedule, args.stages, args.microbatches, chunks)
        bound = LowerBound(OptionTable.build(profile, dag))
        with fraction_progress("lower bounds") as progress:
            for k, plan in enumerate(frontier.plans):
                bounds.append(bound.energy_at(plan.iteration_time))
                progress((k + 1) / len(frontier.plans))

    plans_dir = args.out / "plans"
    plans_dir.mkdir(parents=True, exist_ok=True)
    with (args.out / "frontier.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["plan", "iteration_time", "energy", *(["lower_bound", "gap_percent"] if bounds else [])])
        for k, plan in enumerate(frontier.plans):
            extra = [f"{bounds[k]:.6f}", f"{100 * (plan.energy - bounds[k]) / bounds[k]:.4f}"] if bounds else []
            writer.writerow([plan.name, f"{plan.iteration_time:.9f}", f"{plan.energy:.6f}", *extra])
            plan.save(plans_dir / f"{plan.name}.json")
    fastest, cheapest = frontier.fastest, frontier.min_energy
    print(
        f"{len(frontier.plans)} plans in {frontier.solve_seconds:.2f}s ({frontier.iterations} cuts): "
        f"{fastest.iteration_time:.4f}s/{fastest.energy:.1f}J (fastest) .. "
        f"{cheapest.iteration_time:.4f}s/{cheapest.energy:.1f}J (least energy) -> {args.out}"
    )
    if bounds:
        gaps = [100 * (p.energy - b) / b for p, b in zip(frontier.plans, bounds, strict=True)]
        print(f"optimality gap vs convex relaxation: max {max(gaps):.3f}%, mean {sum(gaps) / len(gaps):.3f}%")
    return 0

