"""A cluster power cap: one frontier plan per job so that the jobs' summed power fits a budget.

A *cap problem* is a set of jobs, each with the points of its time-energy frontier. A job running
plan ``p`` on ``k`` data-parallel pipelines draws on average ``k x energy(p) / time(p)`` watts and is
slowed by ``time(p) / time(fastest) - 1``. The cap asks for one plan per job such that the summed
power stays within ``W`` watts and the weighted sum of slowdowns is least: a multiple-choice knapsack.

* Exact: a dynamic program over jobs that keeps only the Pareto-optimal (power, slowdown) partial
  assignments. On frontiers of a few hundred points and a handful of jobs the Pareto set stays small.
* Large: when that set outgrows ``exact_state_limit``, a Lagrangian method. The LP relaxation (each
  job's lower convex hull, segments taken greedily by slowdown saved per watt) gives a lower bound;
  the integral greedy solution, improved by single-job upgrades into the leftover watts, gives the
  assignment. The gap between the two is reported.

A job's *floor* (``max_slowdown``) is a slowdown the cap may never exceed: options beyond it are not
offered. When even the least-power admissible options exceed the cap, the solution says so and runs
every job at its least-power admissible option.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perseus.errors import InputError

RELATIVE_SLACK = 1e-9
"""Powers within this relative distance of the cap count as meeting it (float round-off only)."""


@dataclass(frozen=True)
class CapOption:
    """One plan a job may run: its iteration time (s) and the whole job's average power (W)."""

    name: str
    iteration_time: float
    power: float


@dataclass(frozen=True)
class CapJob:
    """A job under the cap: its plans, how much its slowdown counts, and the slowdown it never exceeds."""

    job_id: str
    options: tuple[CapOption, ...]
    weight: float = 1.0
    max_slowdown: float = math.inf
    """Floor, as a factor (1.05: at most 5% slower than the job's fastest plan)."""

    def __post_init__(self) -> None:
        if not self.options:
            raise InputError(f"job {self.job_id}", "has no plans to choose from")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise InputError(f"job {self.job_id}", f"weight must be a positive number, got {self.weight}")
        if not self.max_slowdown >= 1.0:
            raise InputError(f"job {self.job_id}", f"max slowdown must be >= 1, got {self.max_slowdown}")
        for o in self.options:
            if not (o.iteration_time > 0 and math.isfinite(o.iteration_time) and o.power >= 0 and math.isfinite(o.power)):
                raise InputError(f"job {self.job_id}", f"plan {o.name} has time {o.iteration_time} and power {o.power}")

    @classmethod
    def from_frontier(
        cls,
        job_id: str,
        points: Sequence[tuple[str, float, float]],
        pipelines: int = 1,
        weight: float = 1.0,
        max_slowdown: float = math.inf,
    ) -> CapJob:
        """From ``(plan, iteration_time, energy per pipeline)`` frontier points and the pipeline count."""
        if pipelines < 1:
            raise InputError(f"job {job_id}", f"needs at least one pipeline, got {pipelines}")
        options = tuple(CapOption(name, t, pipelines * e / t) for name, t, e in points)
        return cls(job_id, options, weight, max_slowdown)

    @property
    def reference_time(self) -> float:
        """The fastest plan's iteration time: slowdowns are measured against it."""
        return min(o.iteration_time for o in self.options)

    def cost(self, option: CapOption) -> float:
        """Weighted slowdown of running ``option``."""
        return self.weight * (option.iteration_time / self.reference_time - 1.0)

    def admissible(self) -> list[CapOption]:
        """Options within the floor that no other option beats on both power and slowdown, by power."""
        bound = self.reference_time * self.max_slowdown * (1 + RELATIVE_SLACK)
        within = sorted((o for o in self.options if o.iteration_time <= bound), key=lambda o: (o.power, o.iteration_time))
        kept: list[CapOption] = []
        for o in within:
            if not kept or o.iteration_time < kept[-1].iteration_time:
                kept.append(o)
        return kept


@dataclass(frozen=True)
class CapSolution:
    """The plan each job runs under the cap, and how good that choice is known to be."""

    plans: dict[str, CapOption]
    total_power: float
    weighted_slowdown: float
    lower_bound: float
    """No assignment within the cap has a smaller weighted slowdown (LP relaxation, or exact)."""
    exact: bool
    """True when found by the exact dynamic program (then ``lower_bound == weighted_slowdown``)."""
    feasible: bool
    """False when the cap is below the least power the jobs can run at within their floors."""
    note: str = ""

    @property
    def gap(self) -> float:
        """Weighted slowdown above the lower bound (0 when exact)."""
        return self.weighted_slowdown - self.lower_bound


def solve_cap(jobs: Sequence[CapJob], watts: float, *, exact_state_limit: int = 200_000) -> CapSolution:
    """The least weighted slowdown assignment of one plan per job with summed power within ``watts``."""
    if not (watts > 0 and math.isfinite(watts)):
        raise InputError("--watts", f"the cap must be a positive number of watts, got {watts}")
    ids = [j.job_id for j in jobs]
    if len(set(ids)) != len(ids):
        raise InputError("jobs", "job ids under one cap must be distinct")
    if not jobs:
        return CapSolution({}, 0.0, 0.0, 0.0, True, True)
    options = [j.admissible() for j in jobs]
    least = sum(opts[0].power for opts in options)
    if least > watts * (1 + RELATIVE_SLACK):
        chosen = [opts[0] for opts in options]
        note = (f"the cap of {watts:.0f} W is below the {least:.0f} W the jobs draw at their least-power plans "
                f"within their slowdown floors; every job runs its least-power plan")
        return _solution(jobs, chosen, None, exact=False, feasible=False, note=note)
    picked = _exact(jobs, options, watts, exact_state_limit)
    if picked is not None:
        return _solution(jobs, picked, None, exact=True, feasible=True)
    chosen, bound = _lagrangian(jobs, options, watts)
    return _solution(jobs, chosen, bound, exact=False, feasible=True)


def _solution(
    jobs: Sequence[CapJob], chosen: Sequence[CapOption], bound: float | None, *, exact: bool, feasible: bool,
    note: str = "",
) -> CapSolution:
    cost = sum(j.cost(o) for j, o in zip(jobs, chosen, strict=True))
    return CapSolution(
        plans={j.job_id: o for j, o in zip(jobs, chosen, strict=True)},
        total_power=sum(o.power for o in chosen),
        weighted_slowdown=cost,
        lower_bound=cost if bound is None else min(bound, cost),
        exact=exact,
        feasible=feasible,
        note=note,
    )


def _exact(
    jobs: Sequence[CapJob], options: Sequence[list[CapOption]], watts: float, state_limit: int
) -> list[CapOption] | None:
    """Pareto dynamic program over jobs; None when the Pareto set outgrows ``state_limit``."""
    limit = watts * (1 + RELATIVE_SLACK)
    # Watts the jobs not yet added need at least: a partial assignment leaving less is dead.
    reserve = [*np.cumsum([opts[0].power for opts in options][::-1])[::-1].tolist(), 0.0]
    power = np.zeros(1)
    cost = np.zeros(1)
    layers: list[tuple[np.ndarray, np.ndarray]] = []  # per job: (parent state, option index) of each state
    for j, (job, opts) in enumerate(zip(jobs, options, strict=True)):
        op = np.array([o.power for o in opts])
        oc = np.array([job.cost(o) for o in opts])
        p = (power[:, None] + op[None, :]).ravel()
        c = (cost[:, None] + oc[None, :]).ravel()
        parent = np.repeat(np.arange(power.size), op.size)
        option = np.tile(np.arange(op.size), power.size)
        alive = p + reserve[j + 1] <= limit
        p, c, parent, option = p[alive], c[alive], parent[alive], option[alive]
        order = np.lexsort((c, p))  # by power, then slowdown
        p, c, parent, option = p[order], c[order], parent[order], option[order]
        # Keep a state only if it is strictly faster than every state of less or equal power.
        best_before = np.minimum.accumulate(np.concatenate(([np.inf], c[:-1])))
        keep = c < best_before
        power, cost = p[keep], c[keep]
        layers.append((parent[keep], option[keep]))
        if power.size > state_limit:
            return None
    state = int(np.argmin(cost))
    picked: list[CapOption] = []
    for opts, (parent, option) in zip(reversed(options), reversed(layers), strict=True):
        picked.append(opts[int(option[state])])
        state = int(parent[state])
    return picked[::-1]


def _lower_hull(job: CapJob, opts: list[CapOption]) -> list[int]:
    """Indices (into ``opts``, sorted by power) of the lower convex hull of (power, cost)."""
    hull: list[int] = []
    for i, o in enumerate(opts):
        while len(hull) >= 2:
            a, b = opts[hull[-2]], opts[hull[-1]]
            # b is above the chord from a to o: not on the hull.
            cross = (b.power - a.power) * (job.cost(o) - job.cost(a)) - (job.cost(b) - job.cost(a)) * (o.power - a.power)
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def _lagrangian(
    jobs: Sequence[CapJob], options: Sequence[list[CapOption]], watts: float
) -> tuple[list[CapOption], float]:
    """Greedy on the LP relaxation: (assignment, LP lower bound)."""
    chosen = [0] * len(jobs)
    budget = watts - sum(opts[0].power for opts in options)
    bound = sum(job.cost(opts[0]) for job, opts in zip(jobs, options, strict=True))
    segments: list[tuple[float, int, int, int]] = []  # (-saving per watt, job, from, to)
    for j, (job, opts) in enumerate(zip(jobs, options, strict=True)):
        hull = _lower_hull(job, opts)
        for a, b in itertools.pairwise(hull):
            saving = job.cost(opts[a]) - job.cost(opts[b])
            segments.append((-saving / (opts[b].power - opts[a].power), j, a, b))
    segments.sort()
    integral_open = True
    for neg_rate, j, a, b in segments:
        opts, job = options[j], jobs[j]
        extra = opts[b].power - opts[a].power
        if extra <= budget:
            budget -= extra
            bound -= job.cost(opts[a]) - job.cost(opts[b])
            if integral_open:
                chosen[j] = b
            continue
        bound += neg_rate * budget  # the fractional part of the LP optimum
        budget = 0.0
        integral_open = False
        break
    # The LP's integral part leaves watts unused; spend them on the best single-job upgrades.
    picked = [opts[i] for opts, i in zip(options, chosen, strict=True)]
    spare = watts - sum(o.power for o in picked)
    improved = True
    while improved:
        improved = False
        best: tuple[float, int, CapOption] | None = None
        for j, (job, opts) in enumerate(zip(jobs, options, strict=True)):
            for o in opts:
                extra = o.power - picked[j].power
                saving = job.cost(picked[j]) - job.cost(o)
                if saving > 0 and extra <= spare * (1 + RELATIVE_SLACK) and (best is None or saving > best[0]):
                    best = (saving, j, o)
        if best is not None:
            _, j, o = best
            spare -= o.power - picked[j].power
            picked[j] = o
            improved = True
    return picked, bound
