"""Typed values the Perseus client returns and takes (no protobuf in user code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from perseus.plan import FrequencyPlan, PlannedInstruction, PowerStateSchedule
from perseus.reports import RunInfo
from perseus.v1 import scheduler_pb2 as pb

PHASE_NAMES = {
    pb.JOB_PHASE_PROFILING: "profiling",
    pb.JOB_PHASE_OPTIMIZING: "optimizing",
    pb.JOB_PHASE_SERVING: "serving",
    pb.JOB_PHASE_FAILED: "failed",
}
MODE_NAMES = {
    pb.SCHEDULE_MODE_PLAN: "plan",
    pb.SCHEDULE_MODE_POWER_LIMIT: "power_limit",
    pb.SCHEDULE_MODE_PROFILING: "profiling",
    pb.SCHEDULE_MODE_DEFAULT: "default",
}
BASELINE_ENUMS = {
    "max-frequency": pb.BASELINE_KIND_MAX_FREQUENCY,
    "global-power-limit": pb.BASELINE_KIND_GLOBAL_POWER_LIMIT,
    "per-stage-power-limit": pb.BASELINE_KIND_PER_STAGE_POWER_LIMIT,
}
BASELINE_NAMES = {v: k for k, v in BASELINE_ENUMS.items()}


@dataclass(frozen=True)
class Target:
    """What a job should run; build one with the class methods."""

    kind: str = "fastest"
    value: float = 0.0
    plan_json: str = ""
    baseline: str = ""
    power_limits: tuple[float, ...] = ()

    @classmethod
    def fastest(cls) -> Target:
        return cls("fastest")

    @classmethod
    def max_slowdown(cls, factor: float) -> Target:
        return cls("max_slowdown", factor)

    @classmethod
    def deadline(cls, seconds: float) -> Target:
        return cls("deadline", seconds)

    @classmethod
    def energy_budget(cls, joules: float) -> Target:
        return cls("energy_budget", joules)

    @classmethod
    def plan(cls, plan: FrequencyPlan | str | Path) -> Target:
        """A user plan: a FrequencyPlan or the path of its JSON file."""
        plan = plan if isinstance(plan, FrequencyPlan) else FrequencyPlan.load(plan)
        return cls("plan", plan_json=plan.to_json())

    @classmethod
    def of_baseline(cls, name: str, max_slowdown: float = 1.0, power_limits: tuple[float, ...] = ()) -> Target:
        """``max-frequency``, ``global-power-limit`` or ``per-stage-power-limit``."""
        return cls("baseline", max_slowdown, baseline=name, power_limits=tuple(power_limits))

    def to_proto(self) -> pb.Target:
        if self.kind == "fastest":
            return pb.Target(fastest=pb.Fastest())
        if self.kind == "plan":
            return pb.Target(plan_json=self.plan_json)
        if self.kind == "baseline":
            if self.baseline not in BASELINE_ENUMS:
                raise ValueError(f"unknown baseline {self.baseline!r}; one of {', '.join(BASELINE_ENUMS)}")
            return pb.Target(baseline=pb.Baseline(kind=BASELINE_ENUMS[self.baseline], max_slowdown=self.value,
                                                  power_limits=list(self.power_limits)))
        msg = pb.Target()
        setattr(msg, self.kind, self.value)
        return msg

    @classmethod
    def from_proto(cls, msg: pb.Target) -> Target:
        which = msg.WhichOneof("kind")
        if which is None or which == "fastest":
            return cls()
        if which == "plan_json":
            return cls("plan", plan_json=msg.plan_json)
        if which == "baseline":
            b = msg.baseline
            return cls("baseline", b.max_slowdown, baseline=BASELINE_NAMES.get(b.kind, ""),
                       power_limits=tuple(b.power_limits))
        return cls(which, float(getattr(msg, which)))

    def __str__(self) -> str:
        if self.kind in ("fastest", "plan"):
            return self.kind
        if self.kind == "baseline":
            limits = f" {'/'.join(f'{w:g}' for w in self.power_limits)} W" if self.power_limits else ""
            return f"baseline {self.baseline}{limits}"
        return f"{self.kind.replace('_', '-')} {self.value:g}"


@dataclass(frozen=True)
class ProfilingStep:
    """Profiling mode: the clock to lock and how many iterations to run at it."""

    frequency: int
    warmup_iterations: int
    measure_iterations: int
    done: bool

    @classmethod
    def from_proto(cls, msg: pb.ProfilingStep) -> ProfilingStep:
        return cls(msg.frequency, msg.warmup_iterations, msg.measure_iterations, msg.done)


@dataclass(frozen=True)
class ServedSchedule(PowerStateSchedule):
    """A rank's :class:`~perseus.plan.PowerStateSchedule` plus how to apply it.

    ``mode`` is ``plan`` (lock each instruction's clock), ``power_limit`` (apply
    ``power_limit`` watts instead), ``profiling`` (lock ``profiling.frequency`` and report) or
    ``default`` (leave clocks alone). ``version`` grows whenever the job's schedules may change.
    """

    job_id: str = ""
    rank: int = 0
    pipeline_id: int = 0
    phase: str = ""
    mode: str = "default"
    plan_id: int = 0
    version: int = 0
    power_limit: float = 0.0
    profiling: ProfilingStep | None = None
    expected_iteration_time: float = 0.0
    expected_energy: float = 0.0

    @classmethod
    def from_proto(cls, msg: pb.PowerStateSchedule) -> ServedSchedule:
        return cls(
            stage=msg.stage,
            instructions=tuple(
                PlannedInstruction(p.instruction, p.microbatch, p.frequency, p.chunk) for p in msg.instructions
            ),
            plan_name=msg.plan_name,
            job_id=msg.job_id,
            rank=msg.rank,
            pipeline_id=msg.pipeline_id,
            phase=PHASE_NAMES.get(msg.job_phase, "unknown"),
            mode=MODE_NAMES.get(msg.mode, "default"),
            plan_id=msg.plan_id,
            version=msg.version,
            power_limit=msg.power_limit,
            profiling=ProfilingStep.from_proto(msg.profiling) if msg.HasField("profiling") else None,
            expected_iteration_time=msg.expected_iteration_time,
            expected_energy=msg.expected_energy,
        )


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    model: str
    partition: str
    schedule: str
    num_stages: int
    num_microbatches: int
    num_chunks: int
    dp_degree: int
    tp_degree: int
    blocking_power: float
    phase: str
    target: Target
    plan_name: str
    version: int
    num_ranks: int
    num_profile_reports: int
    num_iteration_reports: int
    frontier_size: int
    error: str
    stragglers: dict[int, float] = field(default_factory=dict)
    created_at: float = 0.0
    stages_profiled: int = 0
    num_iterations: int = 0
    """Training iterations reported, summed over runs (``num_iteration_reports`` counts per rank)."""
    runs: tuple[RunInfo, ...] = ()
    """Training runs (attempts) that reported iterations, oldest first."""
    target_note: str = ""
    """Why the served plan differs from the target (e.g. no plan meets it; the closest runs)."""
    plan_iteration_time: float = 0.0
    """Expected seconds per iteration of ``plan_name`` (0 without a plan)."""
    plan_energy: float = 0.0
    """Expected joules per iteration of one pipeline under ``plan_name``."""
    drift: str = ""
    """Closed loop: "" (no drift), "replanning", "replanned" or "reprofile"."""
    drift_note: str = ""
    sweep_note: str = ""
    """Clocks dropped from the profiling sweep because a rank could not hold them under load."""
    auto_stragglers: tuple[int, ...] = ()
    """Pipelines among ``stragglers`` the server detected itself."""
    weight: float = 1.0
    """How much the job's slowdown counts under the cluster power cap."""
    planned_power: float = 0.0
    """Watts of ``plan_name`` over all pipelines (0 without a plan)."""
    measured_power: float = 0.0
    """Watts from the latest iteration reports (0: none recent)."""
    power_capped: bool = False
    """``plan_name`` was chosen by the cluster power cap (the target is its floor)."""

    @classmethod
    def from_proto(cls, msg: pb.JobInfo) -> JobInfo:
        return cls(
            job_id=msg.job_id, model=msg.model, partition=msg.partition, schedule=msg.schedule,
            num_stages=msg.num_stages, num_microbatches=msg.num_microbatches, num_chunks=msg.num_chunks,
            dp_degree=msg.dp_degree, tp_degree=msg.tp_degree, blocking_power=msg.blocking_power,
            phase=PHASE_NAMES.get(msg.phase, "unknown"), target=Target.from_proto(msg.target),
            plan_name=msg.plan_name, version=msg.version, num_ranks=msg.num_ranks,
            num_profile_reports=msg.num_profile_reports, num_iteration_reports=msg.num_iteration_reports,
            frontier_size=msg.frontier_size, error=msg.error, stragglers=dict(msg.stragglers),
            created_at=msg.created_at, stages_profiled=msg.stages_profiled, num_iterations=msg.num_iterations,
            runs=tuple(RunInfo(r.run_id, r.num_ranks, r.num_iterations, r.num_reports, r.first_report_at,
                               r.last_report_at, r.measure_only_reports, r.planned_instructions, r.at_planned_clock,
                               r.mean_clock_mhz) for r in msg.runs),
            target_note=msg.target_note,
            plan_iteration_time=msg.plan_iteration_time, plan_energy=msg.plan_energy,
            drift=msg.drift, drift_note=msg.drift_note, sweep_note=msg.sweep_note,
            auto_stragglers=tuple(msg.auto_stragglers),
            weight=msg.weight or 1.0, planned_power=msg.planned_power, measured_power=msg.measured_power,
            power_capped=msg.power_capped,
        )


@dataclass(frozen=True)
class ReportAck:
    """The answer to a batch of iteration reports."""

    version: int
    """The job's schedule version (a change means a new schedule is waiting)."""
    stored: int
    duplicates: int
    """Reports the server already had (retries), acknowledged without storing them again."""


@dataclass(frozen=True)
class PlanInfo:
    plan_id: int
    name: str
    iteration_time: float
    energy: float
    plan: FrequencyPlan | None = None
    """Only with ``include_plans=True``."""

    @classmethod
    def from_proto(cls, msg: pb.PlanSummary) -> PlanInfo:
        return cls(msg.plan_id, msg.name, msg.iteration_time, msg.energy,
                   FrequencyPlan.from_json(msg.plan_json) if msg.plan_json else None)


@dataclass(frozen=True)
class FrontierInfo:
    job_id: str
    phase: str
    plans: list[PlanInfo]
    selected: str

    @classmethod
    def from_proto(cls, msg: pb.GetFrontierResponse, plans: list[PlanInfo] | None = None) -> FrontierInfo:
        """From one response; ``plans`` (gathered from every page) replaces the response's own."""
        if plans is None:
            plans = [PlanInfo.from_proto(p) for p in msg.plans]
        return cls(msg.job_id, PHASE_NAMES.get(msg.phase, "unknown"), plans, msg.selected)


@dataclass(frozen=True)
class ProfileAck:
    """The answer to a profiling report: what to measure next."""

    next: ProfilingStep
    phase: str
    version: int



@dataclass(frozen=True)
class CappedJob:
    """One serving job under the cluster power cap."""

    job_id: str
    plan_name: str
    planned_power: float
    measured_power: float
    weight: float
    slowdown: float
    """Iteration time of ``plan_name`` over the fastest plan's, minus 1."""
    max_slowdown: float
    """The floor from the job's target (0: none)."""
    pinned: bool
    """A user plan or baseline: counted against the cap, never changed by it."""


@dataclass(frozen=True)
class PowerCapInfo:
    """The cluster power cap (``watts`` None: no cap), whether it is met, and the jobs under it."""

    watts: float | None
    feasible: bool
    note: str
    planned_power: float
    measured_power: float
    weighted_slowdown: float
    lower_bound: float
    exact: bool
    version: int
    jobs: tuple[CappedJob, ...]

    @classmethod
    def from_proto(cls, msg: pb.PowerCapInfo) -> PowerCapInfo:
        return cls(
            watts=msg.watts if msg.set else None, feasible=msg.feasible, note=msg.note,
            planned_power=msg.planned_power, measured_power=msg.measured_power,
            weighted_slowdown=msg.weighted_slowdown, lower_bound=msg.lower_bound, exact=msg.exact,
            version=msg.version,
            jobs=tuple(CappedJob(j.job_id, j.plan_name, j.planned_power, j.measured_power, j.weight, j.slowdown,
                                 j.max_slowdown, j.pinned) for j in msg.jobs),
        )
