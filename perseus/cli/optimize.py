"""``perseus optimize``: compute a profile's time-energy frontier and write every plan."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perseus.errors import InputError
from perseus.plan.model import SCHEDULES

if TYPE_CHECKING:
    from perseus.plan.model import FrequencyPlan
    from perseus.plan.store import PlanStore
    from perseus.profile import PipelineProfile

MAX_STAGES = 1024
"""Pipelines run 16-64 stages; the profile format allows at most 1024 (perseus.profile.io)."""
MAX_MICROBATCHES = 65_536
MAX_CHUNKS = 64
"""Interleaving uses 2-4 model chunks per GPU; more than 64 would leave a few layers per chunk."""
BYTES_PER_INSTRUCTION = 20_000
"""Peak solver memory per DAG node (DAG objects, cut network, about 10,000 recorded steps of
int16 choices); measured 510 MB at 16 x 256 (8,192 nodes), rounded up."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "optimize",
        help="compute the iteration time-energy frontier of a profiled pipeline",
        description="Compute the iteration time-energy Pareto frontier of a pipeline from its instruction "
        "profile. Writes DIR/frontier.csv (plan,iteration_time,energy) and every plan in one compact file, "
        "DIR/plans.npz (see `perseus plan export`; workers take --plan DIR:PLAN), and DIR/split_profile/profile.csv with "
        "--backward-input-share.",
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
        "--schedule", choices=SCHEDULES, default="1f1b", type=schedule_name,
        help="pipeline schedule (default 1f1b); zb, zbv and dualpipev are torch's zero-bubble schedules",
    )
    parser.add_argument(
        "--chunks", "--num-chunks", type=int, default=None,
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
    parser.add_argument(
        "--plan-files", action="store_true",
        help="also write every plan as DIR/plans/<plan>.json (the layout before plans.npz; large)",
    )
    parser.set_defaults(handler=run)


def schedule_name(text: str) -> str:
    """A schedule as ``perseus optimize`` names it; ``interleaved`` (``bash run.sh``'s name) is accepted too."""
    return "interleaved-1f1b" if text == "interleaved" else text


def check_args(args: argparse.Namespace) -> int:
    """Validate every flag before any work; returns the number of model chunks per stage."""
    from perseus.pipeline.instruction import SPLIT_BACKWARD_SCHEDULES, schedule_chunks
    from perseus.profile.io import check_blocking_power

    for name, top in (("stages", MAX_STAGES), ("microbatches", MAX_MICROBATCHES), ("chunks", MAX_CHUNKS)):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= top:  # chunks None: the schedule's default
            raise InputError(f"--{name}", f"must be between 1 and {top}, got {value}")
    chunks = schedule_chunks(args.schedule, args.chunks)
    # Zero-bubble schedules split each backward in two: three instructions per microbatch and chunk.
    per_microbatch = 3 if args.schedule in SPLIT_BACKWARD_SCHEDULES else 2
    instructions = per_microbatch * args.stages * args.microbatches * chunks
    limit = memory_bytes() // 2 // BYTES_PER_INSTRUCTION
    if instructions > limit:
        raise InputError(
            "--stages/--microbatches/--chunks",
            f"{instructions:,} instructions would need about {instructions * BYTES_PER_INSTRUCTION / 2**30:.1f} GiB; "
            f"this machine allows {limit:,} (half its memory)",
        )
    if args.time_resolution is not None and not (math.isfinite(args.time_resolution) and args.time_resolution > 0):
        raise InputError("--time-resolution", f"must be a positive number of seconds, got {args.time_resolution}")
    if args.blocking_power is not None:
        check_blocking_power(args.blocking_power, "--blocking-power")
    if args.out.exists() and not args.out.is_dir():
        raise InputError("--out", f"{args.out} is a file, expected a directory")
    return chunks


def memory_bytes() -> int:
    """Physical memory of this machine."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def run(args: argparse.Namespace) -> int:
    from perseus.cli.progress import fraction_progress
    from perseus.pipeline.costs import check_profile_kinds
    from perseus.profile import load_profile, save_profile, split_backward
    from perseus.profile.io import read_meta
    from perseus.solver import compute_frontier
    from perseus.solver.baselines import max_frequency_plan

    chunks = check_args(args)
    profile = load_profile(args.profile, blocking_power=args.blocking_power)
    if args.schedule == "1f1b" and args.microbatches < args.stages:
        # Valid 1F1B (Megatron-Core runs it), but torch's Schedule1F1B, which bash run.sh uses, refuses it.
        print(f"note: {args.microbatches} microbatches < {args.stages} stages: bash run.sh (torch's Schedule1F1B) "
              "cannot run this shape; Megatron-Core's 1F1B can")
    measured_under = read_meta(args.profile).get("schedule")
    if isinstance(measured_under, str) and measured_under != args.schedule:
        print(f"note: {args.profile} was measured under {measured_under}; planning {args.schedule} with its "
              "per-instruction costs")
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
        try:
            frontier = compute_frontier(
                profile, args.schedule, args.stages, args.microbatches, chunks, progress, args.time_resolution
            )
        except InputError as exc:
            if exc.where == "time resolution":
                raise InputError("--time-resolution", exc.problem) from None
            raise
    bounds: list[float] = []
    if args.lower_bound:
        bounds = lower_bounds(profile, args, chunks, frontier.store.iteration_time.tolist())
    write_outputs(args.out, frontier.store, bounds, args.plan_files)
    write_baseline(args.out, max_frequency_plan(profile, args.schedule, args.stages, args.microbatches, chunks))
    times, energies = frontier.store.iteration_time, frontier.store.energy
    print(
        f"{len(frontier.store)} plans in {frontier.solve_seconds:.2f}s ({frontier.iterations} cuts): "
        f"{times[0]:.4f}s/{energies[0]:.1f}J (fastest) .. "
        f"{times[-1]:.4f}s/{energies[-1]:.1f}J (least energy) -> {args.out}"
    )
    if frontier.capped:
        print(f"warning: the solver stopped at its cap of {frontier.iterations} cuts before the fastest plan; "
              "pass a coarser --time-resolution")
    if bounds:
        gaps = [100 * (e - b) / b for e, b in zip(energies.tolist(), bounds, strict=True)]
        print(f"optimality gap vs convex relaxation: max {max(gaps):.3f}%, mean {sum(gaps) / len(gaps):.3f}%")
    return 0


def lower_bounds(profile: PipelineProfile, args: argparse.Namespace, chunks: int, times: list[float]) -> list[float]:
    """The convex relaxation's energy at each plan's iteration time (imports scipy: only when asked)."""
    from perseus.cli.progress import fraction_progress
    from perseus.pipeline.costs import OptionTable
    from perseus.pipeline.dag import PipelineDAG
    from perseus.solver.lower_bound import LowerBound

    dag = PipelineDAG.build(args.schedule, args.stages, args.microbatches, chunks)
    bound = LowerBound(OptionTable.build(profile, dag))
    bounds: list[float] = []
    with fraction_progress("lower bounds") as progress:
        for k, t in enumerate(times):
            bounds.append(bound.energy_at(t))
            progress((k + 1) / len(times))
    return bounds


def write_baseline(out: Path, plan: FrequencyPlan) -> None:
    """``out/baseline.csv``: the all-max-frequency plan's time and energy, what the frontier improves on."""
    from perseus.plan.store import BASELINE_FILENAME

    try:
        (out / BASELINE_FILENAME).write_text(
            f"plan,iteration_time,energy\nmax-frequency,{plan.iteration_time:.9f},{plan.energy:.6f}\n")
    except OSError as exc:
        raise InputError("--out", f"cannot write {exc.filename or out}: {exc.strerror}") from None


def write_outputs(out: Path, store: PlanStore, bounds: list[float], plan_files: bool) -> None:
    """``out/frontier.csv`` and ``out/plans.npz`` (plus ``out/plans/*.json`` with ``plan_files``)."""
    import csv

    from perseus.plan.store import PLANS_FILENAME

    try:
        out.mkdir(parents=True, exist_ok=True)
        with (out / "frontier.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["plan", "iteration_time", "energy", *(["lower_bound", "gap_percent"] if bounds else [])])
            rows = zip(store.names, store.iteration_time.tolist(), store.energy.tolist(), strict=True)
            for k, (name, t, e) in enumerate(rows):
                extra = [f"{bounds[k]:.6f}", f"{100 * (e - bounds[k]) / bounds[k]:.4f}"] if bounds else []
                writer.writerow([name, f"{t:.9f}", f"{e:.6f}", *extra])
        store.save(out / PLANS_FILENAME)
        if plan_files:
            store.export(range(len(store)), out / "plans")
    except OSError as exc:
        raise InputError("--out", f"cannot write {exc.filename or out}: {exc.strerror}") from None

