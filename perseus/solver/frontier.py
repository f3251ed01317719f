"""The iteration time-energy Pareto frontier, by iterated minimum cuts on the critical DAG.

The algorithm follows Phillips and Dessouky's time-cost tradeoff: start from the plan where
every instruction runs at its cheapest frequency (the slowest iteration), then repeatedly
find the cheapest set of instructions whose speed-up shortens *every* critical path (a
minimum vertex cut, :mod:`perseus.solver.mincut`), speed them up, and record the plan.
It stops when some critical path runs entirely at full speed: that is the fastest iteration.

Where lowtime (the Perseus paper's solver) fits a continuous cost curve to each instruction
and shortens the iteration by one fixed time unit per max-flow, this solver works on the
profiled options themselves:

* Each cut instruction jumps to the faster option with the best energy-per-second rate (a
  local convex-hull step), so every step is a real frequency and the step length is
  whatever that frequency change buys; no quantisation, no fitted curves.
* Tied instructions in series (same cost rate on one critical chain, e.g. the steady-state
  forwards of the heaviest stage) are sped up together, up to ``time_resolution`` seconds of
  shortening per step. One max-flow then does the work of many unit steps.
* After each step, instructions that gained slack are slowed back down to the cheapest
  option that still fits (the "reclaim" pass), which plays the role of the slow-down arcs
  of Phillips-Dessouky without a second max-flow.

Every recorded point is then evaluated exactly (longest path on profiled times, profiled
energies plus blocking power), and only Pareto-optimal points are kept.

The steps run as one compiled loop (:mod:`perseus.solver.sweep`), loaded as machine code by
:mod:`perseus.solver.native`; this module sets up its arrays, reports progress between calls and
builds the plans from the candidates it returns.
"""

from __future__ import annotations

import math
import time as wallclock
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from perseus.errors import InputError
from perseus.pipeline.costs import OptionTable
from perseus.pipeline.dag import FloatArray, IntArray, PipelineDAG
from perseus.plan.model import FrequencyPlan
from perseus.plan.store import PlanStore, Slot
from perseus.profile.model import PipelineProfile
from perseus.solver import native
from perseus.solver import native_abi as abi
from perseus.solver.arcs import ArcLayout

Progress = Callable[[float], None]


MAX_STEPS = 1_000_000
"""Hard cap on minimum cuts per solve, far above any real frontier (16 x 256 takes about 12,000)."""
STEPS_PER_RESOLUTION = 20
"""Practical cap: cuts per ``span / time_resolution`` (real solves take 1-4, see :func:`step_bound`)."""
STEP_LOOP_FAILED = -1
"""The loop's status before every call: still there after it, the compiled code raised (in practice an
allocation failed: with bounds checks off and NumPy's error model it raises nothing else)."""
STEPS_PER_CALL = 64
"""Steps per call of the compiled loop: progress is reported between calls (16 x 256: every 0.5 s)."""
MIN_RESOLUTION_FRACTION = 1e-5
"""Finest ``time_resolution`` accepted, as a fraction of the frontier's span (the default is 1e-3
to 1e-4): finer steps only multiply the cuts without adding plans a user could tell apart."""


@dataclass(frozen=True)
class Frontier:
    """Pareto-optimal plans, fastest first (time ascending, energy strictly descending)."""

    store: PlanStore
    """Every plan in compact form; :attr:`plans` materialises them."""
    iterations: int = 0
    """Minimum cuts computed."""
    solve_seconds: float = 0.0
    lower_bounds: list[float] = field(default_factory=list)
    """Energy lower bound (convex relaxation) at each plan's iteration time, if computed."""
    capped: bool = False
    """Whether the solve stopped at its step cap (see :func:`step_bound`) before the fastest plan."""

    @cached_property
    def plans(self) -> list[FrequencyPlan]:
        return self.store.plans()

    @property
    def fastest(self) -> FrequencyPlan:
        return self.plans[0]

    @property
    def min_energy(self) -> FrequencyPlan:
        return self.plans[-1]

    def plan_within(self, iteration_time: float) -> FrequencyPlan:
        """The least-energy plan whose iteration time is at most ``iteration_time`` (else the fastest)."""
        feasible = np.flatnonzero(self.store.iteration_time <= iteration_time * (1 + 1e-12))
        return self.plans[int(feasible[-1])] if len(feasible) else self.fastest


def compute_frontier(
    profile: PipelineProfile,
    schedule: str,
    num_stages: int,
    num_microbatches: int,
    num_chunks: int = 1,
    progress: Progress | None = None,
    time_resolution: float | None = None,
) -> Frontier:
    """The time-energy frontier of ``schedule`` on ``profile``.

    ``time_resolution`` (seconds) bounds how much one step may shorten the iteration and how
    close two reported plans may be; by default :meth:`GraphCutSolver.default_resolution`.
    """
    dag = PipelineDAG.build(schedule, num_stages, num_microbatches, num_chunks)
    return GraphCutSolver(OptionTable.build(profile, dag)).solve(progress, time_resolution)


class GraphCutSolver:
    """Frontier of one pipeline's option table; see the module docstring for the method."""

    def __init__(self, table: OptionTable) -> None:
        self.table = table
        self.dag = table.dag
        self.next_option, self.rate = _hull_steps(table, 0.0)
        self.layout = ArcLayout(self.dag.num_nodes, self.dag.edges)

    def slowest_choice(self) -> IntArray:
        return self.table.node_count - 1

    def fastest_choice(self) -> IntArray:
        return np.zeros(self.dag.num_nodes, dtype=np.int64)

    def makespan(self, choice: IntArray) -> float:
        return float(self.dag.finish_times(self.table.durations(choice)).max())

    def default_resolution(self, span: float) -> float:
        """1/1000 of the frontier's time span, but at most 2% of the shortest instruction.

        Step size decides quality: a cut instruction must jump by at least one step, so steps
        much coarser than the gaps between an instruction's frequency options overshoot. Tying
        the cap to instruction length keeps it scale-free (1 ms for GPT-3's ~50 ms forwards on
        A100, the same unit as lowtime) while small pipelines keep the cheaper span-based step.
        At least span / 10,000, so very long pipelines (16 x 256) solve in minutes, not tens.
        """
        shortest = float(self.table.time[:, 0].min())
        return max(min(span / 1000, 0.02 * shortest), span / 10_000, 1e-9)

    def solve(
        self, progress: Progress | None = None, time_resolution: float | None = None, max_steps: int = MAX_STEPS
    ) -> Frontier:
        """The frontier; at most ``max_steps`` cuts (fewer where :func:`step_bound` proves fewer suffice)."""
        started = wallclock.perf_counter()
        choice = self.slowest_choice()
        t_max, t_min = self.makespan(choice), self.makespan(self.fastest_choice())
        span = t_max - t_min
        resolution = time_resolution if time_resolution is not None else self.default_resolution(span)
        if not (math.isfinite(resolution) and resolution >= MIN_RESOLUTION_FRACTION * span and resolution > 0):
            raise InputError(
                "time resolution",
                f"must be a positive number of seconds of at least {MIN_RESOLUTION_FRACTION:g} x the frontier's "
                f"span ({MIN_RESOLUTION_FRACTION * span:.3g} s here), got {resolution}",
            )
        self.next_option, self.rate = _hull_steps(self.table, resolution)
        cap = min(
            max_steps,
            step_bound(self.table, span, t_min),
            STEPS_PER_RESOLUTION * math.ceil(span / resolution) + 4 * self.dag.num_nodes,
        )
        loop = _StepState(self, choice, resolution, t_max, cap)
        run = native.step_loop()
        while True:
            loop.counts[abi.STATUS] = STEP_LOOP_FAILED  # stays so if the compiled code raised (it prints why)
            run(loop.arrays)
            status = int(loop.counts[abi.STATUS])
            if status == STEP_LOOP_FAILED:
                raise MemoryError("the compiled step loop failed (its error is printed above); no frontier")
            if progress is not None:
                made = t_max - float(loop.real[abi.LAST_MAKESPAN])
                progress(min(1.0, made / max(t_max - t_min, 1e-12)))
            if status == abi.CANDIDATES_FULL:
                loop.grow_candidates()
            elif status != abi.RUNNING:
                break
        if status not in (abi.DONE, abi.CAPPED):
            raise RuntimeError(f"the compiled step loop stopped with status {status}")
        count = int(loop.counts[abi.NUM_CANDIDATES])
        store = self._pareto_store(
            loop.arrays["candidate_time"][:count].tolist(),
            loop.arrays["candidate_energy"][:count].tolist(),
            list(loop.arrays["candidate_choice"][:count]),
            resolution,
        )
        iterations = int(loop.counts[abi.ITERATIONS])
        solve_seconds = wallclock.perf_counter() - started
        return Frontier(store, iterations=iterations, solve_seconds=solve_seconds, capped=status == abi.CAPPED)

    def reclaim(self, choice: IntArray, deadline: float) -> IntArray:
        """Slow instructions down to their cheapest options that keep the iteration within ``deadline``.

        Two greedy sweeps, keeping the cheaper result: one in topological order (earlier
        instructions take the slack first, each finishing by its latest finish time computed
        before the sweep), and one in reverse (later instructions take it first, each starting
        no earlier than its earliest start). Neither can push the makespan past ``deadline``.
        The solve runs this inside its compiled loop; called from Python it compiles with numba.
        """
        from perseus.solver import sweep as compiled  # numba, only for this direct call

        table, dag = self.table, self.dag
        finish = dag.finish_times(table.durations(choice))
        predecessors, successors = dag.predecessors, dag.successors
        return compiled._reclaim(
            predecessors, successors, table.node_class, table.time, table.cost, table.count, choice, deadline, finish
        )[0]

    def _pareto_store(
        self, times: list[float], energies: list[float], choices: list[IntArray], resolution: float
    ) -> PlanStore:
        order = sorted(range(len(times)), key=lambda k: (times[k], energies[k]))
        pareto: list[int] = []
        for k in order:
            if not pareto or energies[k] < energies[pareto[-1]] * (1 - 1e-12):
                pareto.append(k)
        kept = [pareto[0]]
        for k in pareto[1:-1]:
            if times[k] >= times[kept[-1]] + resolution / 2:
                kept.append(k)
        if len(pareto) > 1:
            kept.append(pareto[-1])
        return self.to_store(
            [choices[k] for k in kept],
            [times[k] for k in kept],
            [energies[k] for k in kept],
            [f"p{rank:03d}" for rank in range(len(kept))],
        )

    def to_store(
        self, choices: Sequence[IntArray], iteration_times: list[float], energies: list[float], names: list[str]
    ) -> PlanStore:
        """Plans choosing ``choices[k]`` (option indices per node, one array per plan) as a :class:`PlanStore`.

        Filled one plan at a time: at 16 x 256 a whole-frontier int64 index array and its
        fancy-indexed copy were 200 MB each, most of the solve's peak memory.
        """
        dag = self.dag
        order = np.array([n for nodes in dag.stage_nodes for n in nodes], dtype=np.int64)
        classes = self.table.node_class[order]
        frequencies = np.empty((len(choices), len(order)), dtype=np.int32)
        for k, choice in enumerate(choices):
            frequencies[k] = self.table.frequency[classes, choice[order]]
        return PlanStore(
            schedule=dag.schedule,
            num_stages=dag.num_stages,
            num_microbatches=dag.num_microbatches,
            num_chunks=dag.num_chunks,
            slots=tuple(Slot(i.stage, i.kind, i.microbatch, i.chunk) for i in (dag.nodes[n] for n in order.tolist())),
            names=tuple(names),
            iteration_time=np.array(iteration_times, dtype=np.float64),
            energy=np.array(energies, dtype=np.float64),
            frequencies=frequencies,
        )

    def to_plan(self, choice: IntArray, iteration_time: float, energy: float, name: str) -> FrequencyPlan:
        return self.to_store([choice], [iteration_time], [energy], [name]).plan(0)


class _StepState:
    """The arrays the compiled step loop (:func:`perseus.solver.sweep.run_steps`) works on, set up
    for one solve from the slowest plan ``choice``.

    The candidates are the points that may still be Pareto-optimal: a point is dropped as soon
    as a faster one costs no more energy (:meth:`GraphCutSolver._pareto_store` would never keep
    it), so only about the frontier's plans stay in memory instead of every step's choice
    (16 x 256: 11,500 steps x 8,192 nodes). Their buffer starts at 256 rows and doubles when full.
    """

    def __init__(self, solver: GraphCutSolver, choice: IntArray, resolution: float, t_max: float, cap: int) -> None:
        table, dag, layout = solver.table, solver.dag, solver.layout
        n = dag.num_nodes
        self.real = np.zeros(abi.NUM_REALS)
        self.real[[abi.RESOLUTION, abi.DEADLINE, abi.BLOCKING_POWER, abi.LAST_MAKESPAN]] = (
            resolution, t_max, table.blocking_power, t_max,
        )  # fmt: skip
        self.counts = np.zeros(abi.NUM_COUNTS, dtype=np.int64)
        self.counts[abi.CAP], self.counts[abi.NUM_STAGES] = cap, dag.num_stages
        self.counts[abi.STEP_BUDGET] = STEPS_PER_CALL
        c = np.ascontiguousarray
        self.arrays: dict[str, np.ndarray] = {
            "predecessors": c(dag.predecessors, dtype=np.int64),
            "successors": c(dag.successors, dtype=np.int64),
            "edges": layout.edges,
            "node_class": c(table.node_class, dtype=np.int64),
            "class_time": c(table.time, dtype=np.float64),
            "class_energy": c(table.energy, dtype=np.float64),
            "class_cost": c(table.cost, dtype=np.float64),
            "class_count": c(table.count, dtype=np.int64),
            "next_option": c(solver.next_option, dtype=np.int64),
            "rate_table": c(solver.rate, dtype=np.float64),
            "out_first": layout.out_first,
            "out_edges": layout.out_edges,
            "in_first": layout.in_first,
            "in_edges": layout.in_edges,
            "first": layout.first,
            "head": layout.head,
            "tail": layout.tail,
            "partner": layout.partner,
            "arc": layout.arc,
            "slot": layout.slot,
            "flow": np.zeros(layout.num_pairs),
            "choice": c(choice, dtype=np.int64).copy(),
            "finish": np.zeros(n),
            "latest": np.zeros(n),
            "candidate_time": np.zeros(256),
            "candidate_energy": np.zeros(256),
            "candidate_choice": np.zeros((256, n), dtype=np.int16),
            "real": self.real,
            "counts": self.counts,
        }

    def grow_candidates(self) -> None:
        for name in ("candidate_time", "candidate_energy", "candidate_choice"):
            old = self.arrays[name]
            grown = np.zeros((2 * len(old), *old.shape[1:]), dtype=old.dtype)
            grown[: len(old)] = old
            self.arrays[name] = grown


def step_bound(table: OptionTable, span: float, t_min: float) -> int:
    """An upper bound on the cuts of one solve, which is what makes the solve terminate.

    Every step shortens the makespan by at least ``d = min(smallest gap between two options
    of a class, 1e-9 x t_min)``: the cut meets every path within ``tol >= 1e-9 x makespan``
    of critical and speeds each cut node up by at least one option gap, so every such path
    shrinks by at least ``d`` and every other path was already ``tol`` shorter; the reclaim
    pass then keeps the makespan within the new one (up to 1e-12 relative rounding). The
    makespan starts at ``t_min + span`` and never goes below ``t_min``, so there are at most
    ``span / d`` steps. The solve loop also stops at the first step that fails to shorten
    the iteration, so rounding cannot make it spin.

    ``d`` can be tiny, so the solver also caps the cuts at ``STEPS_PER_RESOLUTION x span /
    time_resolution`` plus a few per instruction, and says so (``Frontier.capped``) if it ever
    stops there.
    """
    gaps = [np.diff(table.time[c, : table.count[c]]) for c in range(len(table.count))]
    positive = [float(g.min()) for g in gaps if len(g)]
    d = min([*positive, 1e-9 * t_min]) - 1e-12 * (t_min + span)
    return math.ceil(span / d) + 1 if d > 0 else MAX_STEPS


def _hull_steps(table: OptionTable, min_step: float) -> tuple[IntArray, FloatArray]:
    """For every class and option, the faster option to jump to and the energy it costs per second saved.

    The jump saves at least ``min_step`` seconds where any option can (else it goes to the
    fastest), and among those it has the lowest cost rate (the first such option on ties): a
    step along the lower convex hull of the options, coarsened so one cut buys a visible
    shortening of the iteration. One options x options matrix per class instead of NumPy calls
    per option (synthetic s1, 120 clocks: 2 ms instead of 20 ms).
    """
    classes, width = table.time.shape
    next_option = np.full((classes, width), -1, dtype=np.int64)
    rate = np.full((classes, width), np.inf)
    for c in range(classes):
        n = int(table.count[c])
        if n < 2:
            continue
        time, cost = table.time[c, :n], table.cost[c, :n]
        saved = time[:, None] - time[None, :]  # [k, j]: seconds option j saves over option k
        eligible = np.tri(n, k=-1, dtype=np.bool_) & (saved >= min_step)  # faster options (j < k) saving enough
        eligible[~eligible.any(axis=1), 0] = True  # none saves enough: jump to the fastest
        with np.errstate(divide="ignore", invalid="ignore"):
            rates = np.where(eligible, (cost[None, :] - cost[:, None]) / saved, np.inf)
        best = np.argmin(rates[1:], axis=1)  # a NaN rate wins, as it did option by option
        next_option[c, 1:n] = best
        rate[c, 1:n] = np.maximum(rates[np.arange(1, n), best], 1e-12)
    return next_option, rate
