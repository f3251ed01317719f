"""Frontier solver vs lowtime 0.3.0 (the Perseus paper's solver): speed and plan quality.

For the shipped GPT-3 175B / A100 profile (8 stages, 1F1B) and each microbatch count, runs
our ``compute_frontier`` and lowtime the way the paper drives it (see ``lowtime_runner``), then
re-evaluates every plan of both with our exact evaluator (longest path on profiled times,
profiled energies plus blocking power) and compares:

* wall time (lowtime: cost-model fitting + DAG construction + Phillips-Dessouky iterations),
* energy at matched iteration time: for each lowtime plan (t, e), our least energy among our
  plans no slower than t, as ``(ours - lowtime) / lowtime`` (negative = ours better),
* the fastest plan of each, against running everything at the maximum frequency.

Results are printed as tables and written to ``benchmarks/results/frontier.json``.

    .venv/bin/python benchmarks/frontier.py [--microbatches 12 24 48 96] [--lowtime-timeout 900]
                                            [--skip-lowtime] [--extra-large]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lowtime_runner import LowtimeConfig, LowtimeRun, ProfileRow, run_lowtime  # noqa: E402

from perseus.pipeline.dag import PipelineDAG  # noqa: E402
from perseus.pipeline.evaluate import evaluate_frequencies, evaluate_plan  # noqa: E402
from perseus.profile import InstructionProfile, PipelineProfile, load_profile  # noqa: E402
from perseus.solver import compute_frontier  # noqa: E402

PROFILE = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"
RESULTS = ROOT / "benchmarks" / "results" / "frontier.json"
SCHEDULE, STAGES = "1f1b", 8
WORSE_THRESHOLD_PCT = 0.1
"""Ours is flagged 'worse' at a lowtime plan when its energy is above lowtime's by more than this."""

Point = tuple[float, float]  # (iteration time s, energy J)


@dataclass
class OursResult:
    """Our frontier for one case, with every plan re-evaluated exactly."""

    wall_seconds: float
    iterations: int
    points: list[Point]
    max_report_error: float
    """Largest relative difference between a plan's stored (time, energy) and its re-evaluation."""


@dataclass
class LowtimeResult:
    """lowtime's plans for one case, re-evaluated exactly, plus its timings."""

    solver_seconds: float
    total_seconds: float
    fit_seconds: float
    dag_seconds: float
    pd_seconds: float
    iterations: int
    expected_iterations: int | None
    timed_out: bool
    error: str | None
    points: list[Point]


@dataclass
class Comparison:
    """Energy of our frontier at each lowtime plan's iteration time."""

    matched: int
    """lowtime plans at least as slow as our fastest plan (the ones we can match)."""
    faster_than_ours: int
    """lowtime plans faster than our fastest plan (no plan of ours to compare with)."""
    max_gap_pct: float | None
    mean_gap_pct: float | None
    worse_count: int
    """Matched plans where ours uses more than ``WORSE_THRESHOLD_PCT`` more energy."""


@dataclass
class Case:
    """One (stages, microbatches) case: both solvers and their comparison."""

    num_stages: int
    num_microbatches: int
    max_frequency_time: float
    max_frequency_energy: float
    ours: OursResult
    lowtime: LowtimeResult | None = None
    comparison: Comparison | None = None
    timeout: float | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- solving


def run_ours(profile: PipelineProfile, num_stages: int, num_microbatches: int, reevaluate: bool = True) -> OursResult:
    """Our frontier, timed; every plan re-evaluated with ``evaluate_plan`` unless told not to."""
    started = time.perf_counter()
    frontier = compute_frontier(profile, SCHEDULE, num_stages, num_microbatches)
    wall = time.perf_counter() - started
    points, worst = [], 0.0
    for plan in frontier.plans:
        point = evaluate_plan(profile, plan) if reevaluate else (plan.iteration_time, plan.energy)
        worst = max(worst, _relative(point[0], plan.iteration_time), _relative(point[1], plan.energy))
        points.append(point)
    return OursResult(wall, frontier.iterations, points, worst)


def run_lowtime_case(profile: PipelineProfile, dag: PipelineDAG, timeout: float) -> LowtimeResult:
    """lowtime in a subprocess, then each of its plans re-evaluated with our evaluator."""
    config = LowtimeConfig(_profile_rows(profile), dag.num_stages, dag.num_microbatches, profile.blocking_power)
    run = run_lowtime(config, timeout)
    points = _evaluate_lowtime_plans(profile, dag, run) if run.iterations else []
    return LowtimeResult(
        solver_seconds=run.solver_seconds,
        total_seconds=run.total_seconds,
        fit_seconds=run.fit_seconds,
        dag_seconds=run.dag_seconds,
        pd_seconds=run.pd_seconds,
        iterations=len(run.iterations),
        expected_iterations=run.expected_iterations,
        timed_out=run.timed_out,
        error=run.error,
        points=points,
    )


def _evaluate_lowtime_plans(profile: PipelineProfile, dag: PipelineDAG, run: LowtimeRun) -> list[Point]:
    """Exact (time, energy) of every lowtime iteration's frequency assignment."""
    ours_keys = [(i.stage, i.kind, i.microbatch) for stage in dag.stage_nodes for i in (dag.nodes[n] for n in stage)]
    if ours_keys != run.keys:
        raise SystemExit("lowtime's 1F1B instruction order differs from ours; plans cannot be compared")
    node_ids = np.fromiter((n for stage in dag.stage_nodes for n in stage), dtype=np.int64)
    points = []
    for it in run.iterations:
        frequencies = np.empty(dag.num_nodes, dtype=np.int64)
        frequencies[node_ids] = it.frequencies
        points.append(evaluate_frequencies(profile, dag, frequencies.tolist()))
    return points


def _profile_rows(profile: PipelineProfile) -> tuple[ProfileRow, ...]:
    return tuple(
        (p.stage, p.instruction, m.frequency, m.time, m.energy) for p in profile for m in p.measurements
    )


def max_frequency_point(profile: PipelineProfile, dag: PipelineDAG) -> Point:
    """(time, energy) with every instruction at its stage's highest profiled frequency."""
    return evaluate_frequencies(profile, dag, [profile[(i.stage, i.kind)].max_frequency for i in dag.nodes])


def stacked_profile(profile: PipelineProfile, copies: int) -> PipelineProfile:
    """A deeper pipeline: stage ``k * S + s`` is a copy of stage ``s``."""
    depth = profile.num_stages
    instructions = {
        (k * depth + stage, kind): InstructionProfile(k * depth + stage, kind, p.measurements)
        for k in range(copies)
        for (stage, kind), p in profile.instructions.items()
    }
    return PipelineProfile(instructions, profile.blocking_power, source=f"{profile.source} (stacked x{copies})")


# ---------------------------------------------------------------- comparing


def compare(ours: list[Point], theirs: list[Point]) -> Comparison:
    """Our step-function frontier against each of lowtime's plans (see ``Comparison``)."""
    ordered = sorted(ours)
    times = [t for t, _ in ordered]
    best = np.minimum.accumulate([e for _, e in ordered])  # least energy among plans no slower
    gaps = []
    for t, e in theirs:
        k = int(np.searchsorted(times, t * (1 + 1e-12), side="right"))
        if k:
            gaps.append(100.0 * (float(best[k - 1]) - e) / e)
    return Comparison(
        matched=len(gaps),
        faster_than_ours=len(theirs) - len(gaps),
        max_gap_pct=max(gaps) if gaps else None,
        mean_gap_pct=statistics.fmean(gaps) if gaps else None,
        worse_count=sum(g > WORSE_THRESHOLD_PCT for g in gaps),
    )


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# ---------------------------------------------------------------- reporting


def speed_table(cases: list[Case]) -> Table:
    table = Table(title="Solver wall time (GPT-3 175B, A100, 1F1B)")
    for name in ("S x M", "ours s", "ours iters", "ours plans", "lowtime s", "lowtime iters",
                 "lowtime plans", "speedup"):
        table.add_column(name, justify="right")
    for c in cases:
        lt = c.lowtime
        table.add_row(
            f"{c.num_stages} x {c.num_microbatches}",
            f"{c.ours.wall_seconds:.2f}",
            str(c.ours.iterations),
            str(len(c.ours.points)),
            _lowtime_seconds(c),
            _lowtime_iterations(lt),
            str(len(lt.points)) if lt else "-",
            _speedup(c),
        )
    return table


def quality_table(cases: list[Case]) -> Table:
    table = Table(title="Energy at matched iteration time, exact evaluation ((ours - lowtime) / lowtime)")
    for name in ("S x M", "lowtime plans matched", "max gap %", "mean gap %", f"ours >{WORSE_THRESHOLD_PCT}% worse",
                 "all-max-freq s", "ours fastest s", "lowtime fastest s"):
        table.add_column(name, justify="right")
    for c in cases:
        cmp, lt = c.comparison, c.lowtime
        table.add_row(
            f"{c.num_stages} x {c.num_microbatches}",
            f"{cmp.matched} of {cmp.matched + cmp.faster_than_ours}" if cmp else "-",
            _pct(cmp.max_gap_pct) if cmp else "-",
            _pct(cmp.mean_gap_pct) if cmp else "-",
            (f"yes ({cmp.worse_count})" if cmp.worse_count else "no") if cmp else "-",
            f"{c.max_frequency_time:.4f}",
            f"{c.ours.points[0][0]:.4f}",
            f"{min(t for t, _ in lt.points):.4f}" if lt and lt.points else "-",
        )
    return table


def _lowtime_seconds(case: Case) -> str:
    lt = case.lowtime
    if lt is None:
        return "skipped"
    if lt.timed_out:
        return f"> {case.timeout:g} s (timed out)"
    if lt.error:
        return "failed"
    return f"{lt.solver_seconds:.1f}"


def _lowtime_iterations(lt: LowtimeResult | None) -> str:
    if lt is None:
        return "-"
    if lt.timed_out and lt.expected_iterations:
        return f"{lt.iterations} of ~{lt.expected_iterations}"
    return str(lt.iterations)


def _speedup(case: Case) -> str:
    lt = case.lowtime
    if lt is None or (lt.error and not lt.timed_out):
        return "-"
    if lt.timed_out:
        return f"> {case.timeout / case.ours.wall_seconds:.1f}x" if case.timeout else "-"
    return f"{lt.solver_seconds / case.ours.wall_seconds:.1f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def write_results(cases: list[Case], args: argparse.Namespace, profile: PipelineProfile) -> None:
    """All cases (including every plan's exact (time, energy)) as JSON."""
    import lowtime

    payload: dict[str, Any] = {
        "profile": str(PROFILE.relative_to(ROOT)),
        "blocking_power": profile.blocking_power,
        "schedule": SCHEDULE,
        "lowtime_version": lowtime.__version__,
        "lowtime_unit_time": 0.001,
        "lowtime_timeout": args.lowtime_timeout,
        "worse_threshold_pct": WORSE_THRESHOLD_PCT,
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": [asdict(c) for c in cases],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=1) + "\n")


# ---------------------------------------------------------------- main


def run_case(profile: PipelineProfile, num_stages: int, num_microbatches: int, args: argparse.Namespace,
             console: Console, with_lowtime: bool) -> Case:
    """Solve one case with ours (and lowtime, if asked) and compare them."""
    dag = PipelineDAG.build(SCHEDULE, num_stages, num_microbatches)
    fast_time, fast_energy = max_frequency_point(profile, dag)
    console.print(f"[bold]{num_stages} stages x {num_microbatches} microbatches[/]: ours ...", end=" ")
    ours = run_ours(profile, num_stages, num_microbatches, reevaluate=with_lowtime)
    console.print(f"{ours.wall_seconds:.2f} s, {len(ours.points)} plans", end="")
    case = Case(num_stages, num_microbatches, fast_time, fast_energy, ours)
    if not with_lowtime:
        console.print()
        return case
    console.print("; lowtime ...", end=" ")
    case.timeout = args.lowtime_timeout
    case.lowtime = run_lowtime_case(profile, dag, args.lowtime_timeout)
    console.print(_lowtime_seconds(case))
    if case.lowtime.error:
        case.notes.append(f"lowtime failed: {case.lowtime.error}")
        console.print(f"[red]lowtime failed:[/] {case.lowtime.error}")
    if case.lowtime.points:
        case.comparison = compare(ours.points, case.lowtime.points)
    if case.lowtime.timed_out:
        case.notes.append("lowtime timed out; its wall time and the speedup are lower bounds, "
                          "and the comparison covers only the plans it produced before the timeout")
    return case


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--microbatches", type=int, nargs="+", default=[12, 24, 48, 96])
    parser.add_argument("--lowtime-timeout", type=float, default=900.0, metavar="SECONDS",
                        help="kill lowtime after this many seconds per case (default 900)")
    parser.add_argument("--skip-lowtime", action="store_true", help="run only our solver")
    parser.add_argument("--extra-large", action="store_true",
                        help="also run ours on 16 stages x 256 microbatches (the 8-stage profile stacked twice)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    console = Console(width=None if sys.stdout.isatty() else 150)
    profile = load_profile(PROFILE)
    cases = [run_case(profile, STAGES, m, args, console, not args.skip_lowtime) for m in args.microbatches]
    if args.extra_large:
        cases.append(run_case(stacked_profile(profile, 2), 2 * STAGES, 256, args, console, False))
    console.print(speed_table(cases))
    if not args.skip_lowtime:
        console.print(quality_table(cases))
    for case in cases:
        for note in case.notes:
            console.print(f"[yellow]{case.num_stages} x {case.num_microbatches}:[/] {note}")
    write_results(cases, args, profile)
    console.print(f"lowtime s = cost-model fitting + DAG construction + PD iterations, in a subprocess; "
                  f"results in {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
