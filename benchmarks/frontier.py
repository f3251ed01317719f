"""`perseus optimize` vs lowtime 0.3.0 (the Perseus paper's solver), end to end, in one run.

Each case is a profile (shipped, stacked deeper, or synthetic) and a 1F1B pipeline shape.

* Ours: ``python -m perseus optimize PROFILE --out DIR`` as a user runs it, timed from
  process start to exit (imports, solve, ``frontier.csv`` and ``plans.npz`` written), with
  the child's peak resident memory and the size of what it wrote.
* lowtime: driven as the paper's driver does (see ``lowtime_runner``) in a spawned process,
  timed from process start to its last plan received by the parent (it writes no files: the
  harness favours it there).

Every plan of both is then re-evaluated with our exact evaluator (longest path on profiled
times, profiled energies plus blocking power) and compared at matched iteration time: for
each lowtime plan (t, e), our least energy among our plans no slower than t.

Synthetic profiles (seeded, the seed is in the case name) stress what the shipped ones do
not: more stages, unequal stages, many frequency options.

Quality against the optimum: at a few of our plans, evenly spaced in time, the energy of the
convex relaxation (``perseus.solver.lower_bound``, an LP) bounds what any plan could use, and
the table gives our mean and largest gap to it (on pipelines of up to ``BOUND_MAX_NODES``
instructions: one LP at 16 x 256 takes about 23 s).

    .venv/bin/python benchmarks/frontier.py [--cases NAME ...] [--lowtime-timeout 240] [--skip-lowtime]
        [--bound-plans 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lowtime_runner import LowtimeConfig, run_lowtime  # noqa: E402

from perseus.pipeline.costs import OptionTable  # noqa: E402
from perseus.pipeline.dag import PipelineDAG  # noqa: E402
from perseus.pipeline.evaluate import evaluate_frequencies  # noqa: E402
from perseus.plan.store import PLANS_FILENAME, PlanStore  # noqa: E402
from perseus.profile import InstructionProfile, Measurement, PipelineProfile, load_profile, save_profile  # noqa: E402
from perseus.solver.lower_bound import LowerBound  # noqa: E402

PROFILES = ROOT / "profiles"
RESULTS = ROOT / "benchmarks" / "results" / "frontier.json"
SCHEDULE = "1f1b"
WORSE_THRESHOLD_PCT = 0.1
BOUND_MAX_NODES = 2048
"""Largest pipeline (instructions) whose plans get the LP bound: 8 x 96 (1,536) takes about 1 s per LP."""
"""Ours is flagged 'worse' at a lowtime plan when its energy is above lowtime's by more than this."""

Point = tuple[float, float]  # (iteration time s, energy J)


@dataclass(frozen=True)
class CaseSpec:
    """One benchmark case: where its profile comes from, the pipeline shape, and whether lowtime runs."""

    name: str
    profile: str
    """A shipped profile directory name, ``NAME*2`` (stacked twice) or ``synthetic``."""
    num_stages: int
    num_microbatches: int
    lowtime: bool = True
    seed: int = 0
    options: int = 0
    """Frequency options per instruction (synthetic profiles only)."""


CASES: tuple[CaseSpec, ...] = (
    CaseSpec("gpt3-a100 8x12", "gpt3-175b+a100_sxm_bf16", 8, 12),
    CaseSpec("gpt3-a100 8x24", "gpt3-175b+a100_sxm_bf16", 8, 24),
    CaseSpec("gpt3-a100 8x48", "gpt3-175b+a100_sxm_bf16", 8, 48),
    CaseSpec("gpt3-a40 8x24", "gpt3-175b+a40_bf16", 8, 24),
    CaseSpec("bloom-a100 8x24", "bloom+a100_sxm_bf16", 8, 24),
    CaseSpec("synthetic s1 6x16", "synthetic", 6, 16, seed=1, options=120),
    CaseSpec("synthetic s2 12x12", "synthetic", 12, 12, seed=2, options=40),
    CaseSpec("synthetic s3 16x16", "synthetic", 16, 16, seed=3, options=60),
    CaseSpec("gpt3-a100 8x96", "gpt3-175b+a100_sxm_bf16", 8, 96, lowtime=False),
    CaseSpec("gpt3-a100x2 16x256", "gpt3-175b+a100_sxm_bf16*2", 16, 256, lowtime=False),
)
"""The default set runs in about 15 minutes on 2 cores; lowtime is skipped where it takes hours."""


@dataclass
class OursResult:
    end_to_end_seconds: float
    cpu_seconds: float
    """User + system CPU of the process: what the wall time would be on an idle core."""
    peak_rss_mb: float
    plans: int
    artifact_bytes: int
    """frontier.csv + plans.npz."""
    stdout: str
    points: list[Point]


@dataclass
class LowtimeResult:
    end_to_end_seconds: float
    cpu_seconds: float
    solver_seconds: float
    iterations: int
    expected_iterations: int | None
    timed_out: bool
    error: str | None
    points: list[Point]


@dataclass
class Case:
    spec: CaseSpec
    options: int
    """Most Pareto-relevant frequency options of any instruction."""
    max_frequency_time: float
    ours: OursResult
    lowtime: LowtimeResult | None = None
    timeout: float | None = None
    worst_gap_pct: float | None = None
    mean_gap_pct: float | None = None
    worse_count: int = 0
    bound_gaps_pct: list[float] = field(default_factory=list)
    """Our energy over the convex relaxation's at a few of our plans, in percent."""
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- profiles


def synthetic_profile(seed: int, stages: int, options: int) -> PipelineProfile:
    """Unequal stages (0.6-1.4x the work), ``options`` clocks 1980 MHz down in 15 MHz steps.

    Time grows as clocks fall, less than proportionally (memory-bound work does not scale with
    the clock); power falls with clock^2.5 above a static floor; measurements carry 0.3% noise.
    """
    rng = np.random.default_rng(seed)
    frequencies = [1980 - 15 * k for k in range(options)]
    instructions = {}
    for s in range(stages):
        weight = rng.uniform(0.6, 1.4)
        for kind, base in (("forward", 0.02), ("backward", 0.04)):
            t0, p0 = base * weight, rng.uniform(250, 400)
            bound = rng.uniform(0.5, 0.9)  # share of the work that scales with the clock
            measurements = []
            for f in frequencies:
                ratio = f / frequencies[0]
                t = t0 * (bound / ratio + 1 - bound) * rng.normal(1, 0.003)
                p = p0 * (0.35 + 0.65 * ratio**2.5) * rng.normal(1, 0.003)
                measurements.append(Measurement(f, t, p * t))
            instructions[(s, kind)] = InstructionProfile(s, kind, tuple(measurements))
    return PipelineProfile(instructions, blocking_power=rng.uniform(60, 90), source=f"synthetic-seed{seed}")


def stacked_profile(profile: PipelineProfile, copies: int) -> PipelineProfile:
    """A deeper pipeline: stage ``k * S + s`` is a copy of stage ``s``."""
    depth = profile.num_stages
    instructions = {
        (k * depth + stage, kind): InstructionProfile(k * depth + stage, kind, p.measurements)
        for k in range(copies)
        for (stage, kind), p in profile.instructions.items()
    }
    return PipelineProfile(instructions, profile.blocking_power, source=f"{profile.source} (stacked x{copies})")


def case_profile(spec: CaseSpec) -> PipelineProfile:
    if spec.profile == "synthetic":
        return synthetic_profile(spec.seed, spec.num_stages, spec.options)
    name, _, copies = spec.profile.partition("*")
    profile = load_profile(PROFILES / name / "profile.csv")
    return stacked_profile(profile, int(copies)) if copies else profile


# ---------------------------------------------------------------- solving


def run_ours(spec: CaseSpec, profile_csv: Path, out: Path, reevaluate: PipelineProfile | None) -> OursResult:
    """``perseus optimize`` in a fresh process: wall time from start to exit and its peak memory."""
    argv = [sys.executable, "-m", "perseus", "optimize", str(profile_csv), "--stages", str(spec.num_stages),
            "--microbatches", str(spec.num_microbatches), "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"{spec.name}: perseus optimize failed ({proc.returncode}):\n{stdout}")
    store = PlanStore.load(out)
    points = _store_points(store, reevaluate) if reevaluate else list(
        zip(store.iteration_time.tolist(), store.energy.tolist(), strict=True)
    )
    size = (out / PLANS_FILENAME).stat().st_size + (out / "frontier.csv").stat().st_size
    cpu = usage.ru_utime + usage.ru_stime
    return OursResult(wall, cpu, usage.ru_maxrss / 1024, len(store), size, stdout.strip(), points)


def _store_points(store: PlanStore, profile: PipelineProfile) -> list[Point]:
    """Exact (time, energy) of every stored plan."""
    dag = PipelineDAG.build(store.schedule, store.num_stages, store.num_microbatches, store.num_chunks)
    node_ids = np.fromiter((n for stage in dag.stage_nodes for n in stage), dtype=np.int64)
    points = []
    for row in store.frequencies:
        frequencies = np.empty(dag.num_nodes, dtype=np.int64)
        frequencies[node_ids] = row
        points.append(evaluate_frequencies(profile, dag, frequencies.tolist()))
    return points


def run_lowtime_case(profile: PipelineProfile, dag: PipelineDAG, timeout: float) -> LowtimeResult:
    rows = tuple((p.stage, p.instruction, m.frequency, m.time, m.energy) for p in profile for m in p.measurements)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = run_lowtime(LowtimeConfig(rows, dag.num_stages, dag.num_microbatches, profile.blocking_power), timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the lowtime process has been reaped
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    points = []
    if run.iterations:
        ours_keys = [(i.stage, i.kind, i.microbatch) for s in dag.stage_nodes for i in (dag.nodes[n] for n in s)]
        if ours_keys != run.keys:
            raise SystemExit("lowtime's 1F1B instruction order differs from ours; plans cannot be compared")
        node_ids = np.fromiter((n for stage in dag.stage_nodes for n in stage), dtype=np.int64)
        for it in run.iterations:
            frequencies = np.empty(dag.num_nodes, dtype=np.int64)
            frequencies[node_ids] = it.frequencies
            points.append(evaluate_frequencies(profile, dag, frequencies.tolist()))
    return LowtimeResult(run.end_to_end_seconds, cpu, run.solver_seconds, len(run.iterations), run.expected_iterations,
                         run.timed_out, run.error, points)


def compare(case: Case) -> None:
    """Our step-function frontier against each of lowtime's plans."""
    assert case.lowtime is not None
    ordered = sorted(case.ours.points)
    times = [t for t, _ in ordered]
    best = np.minimum.accumulate([e for _, e in ordered])  # least energy among plans no slower
    gaps = []
    for t, e in case.lowtime.points:
        k = int(np.searchsorted(times, t * (1 + 1e-12), side="right"))
        if k:
            gaps.append(100.0 * (float(best[k - 1]) - e) / e)
        else:
            case.notes.append(f"lowtime plan at {t:.4f} s is faster than our fastest")
    if gaps:
        case.worst_gap_pct, case.mean_gap_pct = max(gaps), statistics.fmean(gaps)
        case.worse_count = sum(g > WORSE_THRESHOLD_PCT for g in gaps)


def bound_gaps(profile: PipelineProfile, dag: PipelineDAG, points: list[Point], count: int) -> list[float]:
    """Our energy over the convex relaxation's (a lower bound on any plan) at ``count`` of our plans,
    evenly spaced from fastest to least energy, in percent."""
    if count <= 0 or dag.num_nodes > BOUND_MAX_NODES:
        return []
    bound = LowerBound(OptionTable.build(profile, dag))
    ordered = sorted(points)
    picks = sorted({round(k * (len(ordered) - 1) / max(count - 1, 1)) for k in range(count)})
    return [100.0 * (ordered[k][1] / bound.energy_at(ordered[k][0]) - 1) for k in picks]


def run_case(spec: CaseSpec, args: argparse.Namespace, console: Console, scratch: Path) -> Case:
    profile = case_profile(spec)
    directory = scratch / spec.name.replace(" ", "_")
    profile_csv = save_profile(profile, directory / "profile")
    dag = PipelineDAG.build(SCHEDULE, spec.num_stages, spec.num_microbatches)
    fastest = [profile[(i.stage, i.kind)].max_frequency for i in dag.nodes]
    with_lowtime = spec.lowtime and not args.skip_lowtime
    console.print(f"[bold]{spec.name}[/]: ours ...", end=" ")
    ours = run_ours(spec, profile_csv, directory / "out", profile if with_lowtime else None)
    console.print(f"{ours.end_to_end_seconds:.2f} s, {ours.plans} plans", end="")
    options = max(len(p.measurements) for p in profile)
    case = Case(spec, options, evaluate_frequencies(profile, dag, fastest)[0], ours)
    case.bound_gaps_pct = bound_gaps(profile, dag, ours.points, args.bound_plans)
    if with_lowtime:
        console.print("; lowtime ...", end=" ")
        case.timeout = args.lowtime_timeout
        case.lowtime = run_lowtime_case(profile, dag, args.lowtime_timeout)
        console.print(_lowtime_seconds(case), end="")
        if case.lowtime.error:
            case.notes.append(f"lowtime failed: {case.lowtime.error}")
        if case.lowtime.points:
            compare(case)
        if case.lowtime.timed_out:
            case.notes.append("lowtime timed out: its time and the speedup are lower bounds; the energy "
                              "comparison covers the plans it produced before the timeout")
    console.print()
    return case


# ---------------------------------------------------------------- reporting


def table(cases: list[Case]) -> Table:
    out = Table(title="perseus optimize vs lowtime, end to end (process start to plans written), 1F1B")
    for name in ("case", "options", "ours s (cpu)", "peak MB", "plans", "artifacts", "lowtime s (cpu)",
                 "speedup wall (cpu)", "energy vs lowtime worst / mean", "vs LP bound mean / max",
                 "all-max / ours fastest s"):
        out.add_column(name, justify="right")
    for c in cases:
        out.add_row(
            c.spec.name, str(c.options), f"{c.ours.end_to_end_seconds:.2f} ({c.ours.cpu_seconds:.2f})",
            f"{c.ours.peak_rss_mb:.0f}",
            str(c.ours.plans), _size(c.ours.artifact_bytes), _lowtime_seconds(c), _speedup(c),
            "-" if c.worst_gap_pct is None else f"{c.worst_gap_pct:+.3f}% / {c.mean_gap_pct:+.3f}%",
            _bound_gaps(c),
            f"{c.max_frequency_time:.4f} / {c.ours.points[0][0]:.4f}",
        )
    return out


def _bound_gaps(case: Case) -> str:
    gaps = case.bound_gaps_pct
    if not gaps:
        return "-"
    return f"{statistics.fmean(gaps):+.3f}% / {max(gaps):+.3f}% ({len(gaps)} plans)"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def _lowtime_seconds(case: Case) -> str:
    lt = case.lowtime
    if lt is None:
        return "not run"
    if lt.timed_out:
        return f"> {case.timeout:g} (cut off at {lt.iterations} of ~{lt.expected_iterations} iters)"
    if lt.error:
        return "failed"
    return f"{lt.end_to_end_seconds:.1f} ({lt.cpu_seconds:.1f})"


def speedup(case: Case, cpu: bool = False) -> float | None:
    """lowtime's time over ours, wall clock or CPU (a lower bound when lowtime timed out)."""
    lt = case.lowtime
    if lt is None or (lt.error and not lt.timed_out):
        return None
    if cpu:
        return lt.cpu_seconds / case.ours.cpu_seconds
    return lt.end_to_end_seconds / case.ours.end_to_end_seconds


def _speedup(case: Case) -> str:
    wall, cpu = speedup(case), speedup(case, cpu=True)
    if wall is None or cpu is None:
        return "-"
    return f"{'> ' if case.lowtime and case.lowtime.timed_out else ''}{wall:.1f}x ({cpu:.1f}x)"


def write_results(cases: list[Case], args: argparse.Namespace) -> None:
    import lowtime

    payload = {
        "schedule": SCHEDULE,
        "lowtime_version": lowtime.__version__,
        "lowtime_unit_time": 0.001,
        "lowtime_timeout": args.lowtime_timeout,
        "worse_threshold_pct": WORSE_THRESHOLD_PCT,
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                 "load_average": os.getloadavg()},
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": [asdict(c) for c in cases],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=1) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", metavar="NAME", default=None,
                        help="run only cases whose name contains one of these (default: all)")
    parser.add_argument("--lowtime-timeout", type=float, default=240.0, metavar="SECONDS",
                        help="stop lowtime after this many seconds per case (default 240)")
    parser.add_argument("--skip-lowtime", action="store_true", help="run only ours")
    parser.add_argument("--bound-plans", type=int, default=8, metavar="N",
                        help=f"plans per case compared with the LP lower bound, on pipelines of up to "
                             f"{BOUND_MAX_NODES} instructions (default 8; 0: none)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    console = Console(width=None if sys.stdout.isatty() else 180)
    specs = [s for s in CASES if args.cases is None or any(key in s.name for key in args.cases)]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("benchmark stopped"))  # so `timeout` still removes scratch
    with tempfile.TemporaryDirectory(prefix="perseus-bench-") as scratch:
        cases = [run_case(spec, args, console, Path(scratch)) for spec in specs]
    console.print(table(cases))
    for case in cases:
        for note in dict.fromkeys(case.notes):
            console.print(f"[yellow]{case.spec.name}:[/] {note}")
    compared = [(c, min(speedup(c) or 0, speedup(c, cpu=True) or 0)) for c in cases if speedup(c) is not None]
    console.print(f"100x or more (wall and CPU): {', '.join(c.spec.name for c, s in compared if s and s >= 100) or 'none'}; "
                  f"below 20x: {', '.join(c.spec.name for c, s in compared if s and s < 20) or 'none'}; "
                  f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    write_results(cases, args)
    console.print(f"results in {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
