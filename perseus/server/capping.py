"""The cluster power cap on the server: which jobs it governs, their floors, and measured power.

A *capped job* is a serving job whose target picks from its frontier (fastest, max slowdown,
deadline, energy budget). Under a cap its target becomes a *floor* the cap may not break, and the
cap picks the plan (:func:`perseus.solver.powercap.solve_cap`, least total weighted slowdown):

* fastest: no floor (the cap may slow the job as far as its frontier goes);
* max slowdown F: at most F x the fastest plan's iteration time;
* deadline D: iteration time at most D seconds;
* energy budget B: only plans using at most B joules per iteration.

A *pinned job* serves a user plan or a baseline: the cap never changes it, but its planned power
counts against the cap. Jobs that are not serving (profiling, optimizing, failed) draw power the
server cannot plan and are not counted.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from perseus.errors import InputError
from perseus.server.tail import ReportTail
from perseus.server.targets import TargetSpec
from perseus.server.types import StoredPlan
from perseus.solver.powercap import CapJob, CapOption

MAX_CAP_WATTS = 1e8
"""100 MW: 100,000 GPUs at 1 kW each; a larger cap is a typo (kW vs W), not a cluster."""
MAX_WEIGHT = 1e6
"""Weights are relative; six orders of magnitude between two jobs is already 'only this one counts'."""
CAP_FEED_KEY = "~power-cap"
"""The change-feed key of the cap row (not a valid job id, so it never names a job)."""
MEASURE_LAST = 10
"""Iterations per rank averaged for measured power: enough to smooth noise, few enough to follow a plan change."""
MEASURE_MAX_AGE_S = 120.0
"""Reports older than this are not 'measured power now' (the job stopped or lost its link)."""
RATIO_MIN_REPORTS = 3
"""Reports per rank under the served plan before its measured/planned power ratio is trusted."""
RATIO_DEADBAND = 0.01
"""A job's measured/planned ratio moves the cap only when it changes by more than this: above the noise
of a few iterations' mean, well below the 2% the cap is held to."""
RATIO_RANGE = (0.5, 2.0)
"""Ratios outside are clamped: a job drawing half or twice its profile needs a re-profile, not a nudge."""


def check_watts(watts: float) -> float:
    if not (math.isfinite(watts) and 0 < watts <= MAX_CAP_WATTS):
        raise InputError("watts", f"the power cap must be a number of watts in (0, {MAX_CAP_WATTS:.0e}], got {watts}")
    return float(watts)


def check_weight(weight: float) -> float:
    if not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
        raise InputError("weight", f"must be a number in (0, {MAX_WEIGHT:.0e}], got {weight}")
    return float(weight)


def plan_power(plan: StoredPlan, pipelines: int) -> float:
    """Average watts of ``pipelines`` pipelines running ``plan``."""
    return pipelines * plan.energy / plan.iteration_time


def floor_of(target: TargetSpec, fastest_time: float) -> float:
    """The slowdown factor a frontier target allows under the cap (inf: no floor)."""
    if target.kind == "max_slowdown":
        return max(1.0, target.value)
    if target.kind == "deadline":
        return max(1.0, target.value / fastest_time)
    return math.inf


def cap_job(job_id: str, frontier: Sequence[StoredPlan], pipelines: int, weight: float, target: TargetSpec,
            ratio: float = 1.0) -> CapJob:
    """The job as the cap solver sees it: its frontier plans (named by plan id) within its floor."""
    plans = list(frontier)
    if target.kind == "energy_budget":
        within = [p for p in plans if p.energy <= target.value * (1 + 1e-12)]
        plans = within or [min(plans, key=lambda p: p.energy)]  # --nearest: the closest plan
    options = tuple(CapOption(str(p.id), p.iteration_time, ratio * plan_power(p, pipelines)) for p in plans)
    return CapJob(job_id, options, weight, floor_of(target, frontier[0].iteration_time))


@dataclass(frozen=True)
class CapStatus:
    """The last solution of the cap, as stored in the cap row."""

    feasible: bool = True
    note: str = ""
    exact: bool = True
    weighted_slowdown: float = 0.0
    lower_bound: float = 0.0
    solved_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CapStatus:
        data: dict[str, Any] = json.loads(text or "{}")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CapView:
    """The cap and its state (converted to the PowerCapInfo message)."""

    watts: float | None
    version: int
    status: CapStatus
    jobs: tuple[CappedJobView, ...]

    @property
    def planned_power(self) -> float:
        return sum(j.planned_power for j in self.jobs)

    @property
    def measured_power(self) -> float:
        return sum(j.measured_power for j in self.jobs)


@dataclass(frozen=True)
class CappedJobView:
    job_id: str
    plan_name: str
    planned_power: float
    measured_power: float
    weight: float
    slowdown: float
    max_slowdown: float
    pinned: bool


class MeasuredPower:
    """Watts per job from its latest iteration reports: the sum over its ranks of energy / time over each
    rank's last :data:`MEASURE_LAST` reports no older than :data:`MEASURE_MAX_AGE_S`.

    Reads only the report rows added since the last call, through a :class:`~perseus.server.tail.ReportTail`
    (a report another replica committed after reports with larger ids still counts), so asking often is
    cheap however large the table grows; every replica reads the same table, so all show the same watts.
    """

    BATCH = 100_000
    """Rows read per call at most (the first call starts this far back: enough for the last reports)."""

    def __init__(self) -> None:
        self._tail = ReportTail(back=self.BATCH, batch=self.BATCH)
        self._recent: dict[str, dict[int, deque[tuple[float, float, float, str]]]] = {}
        self._lock = threading.Lock()

    def under_plan(self, job_id: str, plan_name: str, ranks: Collection[int], now: float | None = None) -> float | None:
        """Watts of the job from reports sent under ``plan_name`` only, once every rank in ``ranks`` has
        :data:`RATIO_MIN_REPORTS` fresh ones (None before); call after :meth:`read`."""
        return self.under_plans(job_id, dict.fromkeys(ranks, plan_name), now)

    def under_plans(self, job_id: str, plans: Mapping[int, str], now: float | None = None) -> float | None:
        """Watts of the job from each rank's reports sent under the plan ``plans`` names for it (a job with a
        straggler runs two plans), once every rank has :data:`RATIO_MIN_REPORTS` fresh ones (None before)."""
        oldest = (now if now is not None else time.time()) - MEASURE_MAX_AGE_S
        with self._lock:
            windows = self._recent.get(job_id, {})
            total = 0.0
            for rank, plan_name in plans.items():
                fresh = [(t, e) for t, e, created, plan in windows.get(rank, ()) if created >= oldest and plan == plan_name]
                if len(fresh) < RATIO_MIN_REPORTS:
                    return None
                total += sum(e for _, e in fresh) / sum(t for t, _ in fresh)
            return total if plans else None

    def read(self, s: Any, live_jobs: Collection[str], now: float | None = None) -> dict[str, float]:
        with self._lock:
            for job_id, _, report, created in self._tail.read(s, live_jobs):
                ranks = self._recent.setdefault(job_id, {})
                window = ranks.setdefault(report.rank, deque(maxlen=MEASURE_LAST))
                window.append((report.time, report.energy, created, report.plan_name))
            for gone in set(self._recent) - set(live_jobs):
                del self._recent[gone]
            oldest = (now if now is not None else time.time()) - MEASURE_MAX_AGE_S
            power: dict[str, float] = {}
            for job_id, ranks in self._recent.items():
                for window in ranks.values():
                    fresh = [(t, e) for t, e, created, _ in window if created >= oldest]
                    seconds = sum(t for t, _ in fresh)
                    if seconds > 0:
                        power[job_id] = power.get(job_id, 0.0) + sum(e for _, e in fresh) / seconds
            return power


@dataclass(frozen=True)
class CapInput:
    """A serving job as the cap sees it: capped (``frontier`` set) or pinned (``pinned_plan`` set)."""

    job_id: str
    pipelines: int
    weight: float
    target: TargetSpec
    frontier: tuple[StoredPlan, ...] = ()
    pinned_plan: StoredPlan | None = None
    ratio: float = 1.0
    """Measured over planned power of the job's served plan: its plans' power is scaled by it."""


def assign(watts: float, jobs: Sequence[CapInput]) -> tuple[dict[str, int], CapStatus]:
    """(plan id per capped job, status): the least weighted slowdown choice within ``watts``."""
    from perseus.solver.powercap import solve_cap

    fixed = sum(j.ratio * plan_power(j.pinned_plan, j.pipelines) for j in jobs if j.pinned_plan is not None)
    capped = [cap_job(j.job_id, j.frontier, j.pipelines, j.weight, j.target, j.ratio) for j in jobs if j.frontier]
    budget = watts - fixed
    if not capped:
        ok = fixed <= watts
        note = "" if ok else f"jobs with user plans or baselines draw {fixed:.0f} W"
        return {}, CapStatus(feasible=ok, note=note, solved_at=time.time())
    # Pinned jobs alone over the cap: the capped ones still get their least-power plans.
    solution = solve_cap(capped, budget if budget > 0 else 1e-9)
    plans = {job_id: int(option.name) for job_id, option in solution.plans.items()}
    if not solution.feasible:
        least = solution.total_power + fixed
        pinned = f" ({fixed:.0f} W of it user plans and baselines the cap cannot change)" if fixed else ""
        note = (f"the serving jobs draw at least {least:.0f} W at their least-power plans within "
                f"their floors{pinned}; every capped job runs its least-power plan")
    elif not solution.exact:
        note = (f"Lagrangian choice: weighted slowdown {solution.weighted_slowdown:.4g}, at most "
                f"{solution.gap:.2g} above the optimum (LP bound {solution.lower_bound:.4g})")
    else:
        note = ""
    return plans, CapStatus(feasible=solution.feasible, note=note, exact=solution.exact,
                            weighted_slowdown=solution.weighted_slowdown, lower_bound=solution.lower_bound,
                            solved_at=time.time())
