"""Plain values of the scheduler: job specs, ranks, stored plans, and what the RPCs return.

Also the scheduler's errors and field checks; every bad field raises
:class:`~perseus.errors.InputError` naming it, which the gRPC layer turns into INVALID_ARGUMENT.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from perseus.errors import InputError, PerseusError
from perseus.pipeline.schedules import stage_orders
from perseus.plan import SCHEDULES, PlannedInstruction
from perseus.reports import RunInfo
from perseus.server.targets import TargetSpec

JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Matched with fullmatch: ``$`` would also accept a trailing newline."""
MAX_TEXT = 256
#: A plan frequency further than this from every frequency a GPU supports is rejected.
MAX_FREQUENCY_GAP = 100


class NotFound(PerseusError, LookupError):
    """A job or rank that the server does not know."""


class Conflict(PerseusError):
    """The request contradicts stored state (e.g. a different job under the same id)."""


class NotReady(PerseusError):
    """The job is not in a phase where the request makes sense yet."""


@dataclass(frozen=True)
class JobSpec:
    """What a job is; fixed at registration."""

    job_id: str
    model: str
    partition: str
    schedule: str
    num_stages: int
    num_microbatches: int
    num_chunks: int = 1
    dp_degree: int = 1
    tp_degree: int = 1
    blocking_power: float = 0.0

    def validate(self) -> None:
        if not JOB_ID_RE.fullmatch(self.job_id):
            raise InputError("job_id", "must be 1-64 characters of letters, digits, '.', '_' or '-'")
        for name in ("model", "partition"):
            if len(getattr(self, name)) > MAX_TEXT:
                raise InputError(name, f"at most {MAX_TEXT} characters")
        if self.schedule not in SCHEDULES:
            raise InputError("schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        in_range("num_stages", self.num_stages, 1, 1024)
        in_range("num_microbatches", self.num_microbatches, 1, 100_000)
        in_range("num_chunks", self.num_chunks, 1, 64)
        in_range("dp_degree", self.dp_degree, 1, 1_000_000)
        in_range("tp_degree", self.tp_degree, 1, 1024)
        if self.num_stages * self.num_microbatches * self.num_chunks > 1_000_000:
            raise InputError("num_microbatches", "num_stages * num_microbatches * num_chunks must be <= 1000000")
        if not (math.isfinite(self.blocking_power) and 0 <= self.blocking_power <= 10_000):
            raise InputError("blocking_power", f"must be watts in [0, 10000], got {self.blocking_power}")
        stage_orders(self.schedule, self.num_stages, self.num_microbatches, self.num_chunks)


@dataclass(frozen=True)
class RankInfo:
    rank: int
    stage: int
    pipeline_id: int
    gpu_name: str
    frequencies: tuple[int, ...]
    """Supported graphics clocks, highest first."""


@dataclass(frozen=True)
class StoredPlan:
    """A stored plan as the server holds it in memory: what choosing a plan needs, not its clocks.

    The per-instruction clocks stay in the plan's compact row and are decoded on demand
    (:mod:`perseus.server.plancache`).
    """

    id: int
    kind: str
    """frontier | user | baseline"""
    name: str
    iteration_time: float
    energy: float
    power_limits: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ScheduleView:
    """What one rank should run now (converted to the PowerStateSchedule message)."""

    job_id: str
    rank: int
    stage: int
    pipeline_id: int
    phase: str
    mode: str
    """plan | power_limit | profiling | default"""
    version: int
    plan_name: str = ""
    plan_id: int = 0
    instructions: tuple[PlannedInstruction, ...] = ()
    power_limit: float = 0.0
    profiling_frequency: int = 0
    warmup_iterations: int = 0
    measure_iterations: int = 0
    profiling_done: bool = False
    expected_iteration_time: float = 0.0
    expected_energy: float = 0.0

    def key(self) -> tuple[Any, ...]:
        """Everything but the version: watchers send a schedule only when this changes."""
        return (self.phase, self.mode, self.plan_id, self.plan_name, self.instructions, self.power_limit,
                self.profiling_frequency, self.profiling_done)


@dataclass(frozen=True)
class JobView:
    spec: JobSpec
    phase: str
    target: TargetSpec
    plan_name: str
    version: int
    num_ranks: int
    num_profile_reports: int
    num_iteration_reports: int
    frontier_size: int
    error: str
    stragglers: dict[int, float]
    created_at: float
    stages_profiled: int
    runs: tuple[RunInfo, ...] = ()
    """Training runs that reported iterations, oldest first."""
    target_note: str = ""
    plan_iteration_time: float = 0.0
    plan_energy: float = 0.0
    drift: str = ""
    """Closed loop: "" (no drift), "replanning", "replanned" or "reprofile" (see :mod:`perseus.control.drift`)."""
    drift_note: str = ""
    sweep_note: str = ""
    """Clocks dropped from the profiling sweep because a rank could not hold them (see sweep.dropped_note)."""
    auto_stragglers: tuple[int, ...] = ()
    """Pipelines among ``stragglers`` that the server detected itself (the others were reported)."""
    weight: float = 1.0
    planned_power: float = 0.0
    """Watts of the served plan over all pipelines."""
    measured_power: float = 0.0
    """Watts from the latest iteration reports (0: none recent)."""
    power_capped: bool = False
    """The served plan was chosen by the cluster power cap."""

    @property
    def num_iterations(self) -> int:
        """Training iterations reported, summed over runs (not per-rank reports)."""
        return sum(r.num_iterations for r in self.runs)



def in_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InputError(name, f"must be in [{low}, {high}], got {value}")


def finite(name: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value <= 0):
        raise InputError(name, f"must be a finite {'positive' if positive else 'non-negative'} number, got {value}")
