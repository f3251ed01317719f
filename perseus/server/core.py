"""The scheduler's job logic: profiling sweeps, frontiers, targets, stragglers and reports.

:class:`SchedulerCore` is synchronous and thread-safe (one lock; the gRPC layer calls it from a
thread pool). Every change is committed to the database before the call returns, so whatever
a caller saw acknowledged survives a killed server; on start the in-memory state is rebuilt
from the tables. Reads (schedules, the frontier) are served from memory.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from perseus.errors import InputError, PerseusError
from perseus.plan import FrequencyPlan, PlannedInstruction
from perseus.plan.store import decode_plan, encode_plan
from perseus.profile import INSTRUCTION_KINDS, Measurement, PipelineProfile, parse_profile, save_profile
from perseus.profile.io import format_profile
from perseus.server import models as m
from perseus.server.db import session_factory
from perseus.server.sweep import (
    Measured,
    ProfilingSettings,
    averaged,
    check_frequencies,
    nearest,
    next_frequency,
)
from perseus.server.targets import TargetSpec, pace_index, select_index
from perseus.server.types import (
    MAX_FREQUENCY_GAP,
    MAX_TEXT,
    Conflict,
    JobSpec,
    JobView,
    NotFound,
    NotReady,
    RankInfo,
    ScheduleView,
    StoredPlan,
    finite,
    in_range,
)

log = logging.getLogger("perseus.server")

@dataclass
class _Job:
    spec: JobSpec
    phase: str
    version: int
    target: TargetSpec
    plan_id: int | None
    profiling: ProfilingSettings
    profile_csv: str | None
    error: str
    created_at: float
    ranks: dict[int, RankInfo] = field(default_factory=dict)
    plans: dict[int, StoredPlan] = field(default_factory=dict)
    frontier: list[StoredPlan] = field(default_factory=list)
    stragglers: dict[int, float] = field(default_factory=dict)
    measured: Measured = field(default_factory=dict)
    num_profile_reports: int = 0
    num_iteration_reports: int = 0
    profile: PipelineProfile | None = None
    compatible: set[tuple[int, tuple[int, ...]]] = field(default_factory=set)
    """(stage, supported clocks) pairs already checked against the job's plans."""


class SchedulerCore:
    """All jobs of one server; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        pool_factory: Callable[[], Executor] | None = None,
        profile_dir: Path | None = None,
    ) -> None:
        self._sessions = session_factory(engine)
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._pool_factory = pool_factory
        self._pool: Executor | None = None
        self._profile_dir = profile_dir
        self._listeners: list[Callable[[str], None]] = []
        self._closed = False
        self._load()

    # ---------------------------------------------------------------- lifecycle

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """``callback(job_id)`` runs (under the lock, keep it short) after a job's schedules may change."""
        self._listeners.append(callback)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            # A frontier still computing is abandoned (it resumes on the next start): stop its process
            # instead of waiting, then let the pool wind down cleanly.
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)

    def _load(self) -> None:
        """Rebuild every job from the database (start-up and restart recovery)."""
        with self._sessions() as s:
            for row in s.scalars(select(m.JobRow)):
                job = _Job(
                    spec=JobSpec(row.id, row.model, row.partition, row.schedule, row.num_stages,
                                 row.num_microbatches, row.num_chunks, row.dp_degree, row.tp_degree,
                                 row.blocking_power),
                    phase=row.phase, version=row.version, target=TargetSpec.from_json(row.target_json),
                    plan_id=row.plan_id, profiling=ProfilingSettings.from_json(row.profiling_json),
                    profile_csv=row.profile_csv, error=row.error, created_at=row.created_at,
                )
                if job.profile_csv:
                    job.profile = self._parse_profile(job.spec, job.profile_csv)
                self._jobs[row.id] = job
            for r in s.scalars(select(m.RankRow)):
                freqs = tuple(int(f) for f in r.frequencies_json.split(",") if f)
                self._jobs[r.job_id].ranks[r.rank] = RankInfo(r.rank, r.stage, r.pipeline_id, r.gpu_name, freqs)
            for p in s.scalars(select(m.PlanRow).order_by(m.PlanRow.job_id, m.PlanRow.position)):
                stored = _stored(p)
                job = self._jobs[p.job_id]
                job.plans[p.id] = stored
                if p.kind == "frontier":
                    job.frontier.append(stored)
            for st in s.scalars(select(m.StragglerRow)):
                self._jobs[st.job_id].stragglers[st.pipeline_id] = st.factor
            for rep in s.scalars(select(m.ProfileReportRow)):
                self._record_measurement(self._jobs[rep.job_id], rep.stage, rep.frequency, rep.instruction,
                                         rep.rank, rep.time, rep.energy)
            for job_id, count in s.execute(
                select(m.ProfileReportRow.job_id, func.count()).group_by(m.ProfileReportRow.job_id)
            ):
                self._jobs[job_id].num_profile_reports = count
            for job_id, count in s.execute(
                select(m.IterationReportRow.job_id, func.count()).group_by(m.IterationReportRow.job_id)
            ):
                self._jobs[job_id].num_iteration_reports = count
        for job in self._jobs.values():
            if job.phase == "optimizing":
                log.info("job %s: resuming frontier computation", job.spec.job_id)
                self._submit_frontier(job)

    # ---------------------------------------------------------------- jobs

    def register_job(
        self,
        spec: JobSpec,
        *,
        profile_csv: str = "",
        profiling: ProfilingSettings | None = None,
        target: TargetSpec | None = None,
        target_plan_json: str = "",
    ) -> tuple[JobView, bool]:
        """Create a job, or return the identical one already registered under ``spec.job_id``."""
        if not spec.job_id:
            stem = re.sub(r"[^A-Za-z0-9._-]", "-", spec.model)[:40].strip("-.") or "job"
            spec = dataclasses.replace(spec, job_id=f"{stem}-{uuid.uuid4().hex[:8]}")
        spec.validate()
        profiling = profiling or ProfilingSettings()
        target = target or TargetSpec()
        profile = self._parse_profile(spec, profile_csv) if profile_csv else None
        user_plan = self._parse_user_plan(spec, target_plan_json) if target.kind == "plan" else None
        with self._lock:
            existing = self._jobs.get(spec.job_id)
            if existing is not None:
                if existing.spec != spec:
                    raise Conflict(f"job_id: job {spec.job_id!r} already exists with a different specification")
                return self._view(existing), False
            if profile is not None:
                phase = "optimizing"
            elif user_plan is not None:
                phase = "serving"  # a user plan needs no profile
            else:
                phase = "profiling"
            job = _Job(spec=spec, phase=phase, version=1, target=target, plan_id=None, profiling=profiling,
                       profile_csv=profile_csv or None, error="", created_at=time.time(), profile=profile)
            with self._sessions() as s:
                s.add(m.JobRow(
                    id=spec.job_id, model=spec.model, partition=spec.partition, schedule=spec.schedule,
                    num_stages=spec.num_stages, num_microbatches=spec.num_microbatches,
                    num_chunks=spec.num_chunks, dp_degree=spec.dp_degree, tp_degree=spec.tp_degree,
                    blocking_power=spec.blocking_power, phase=phase, version=1, target_json=target.to_json(),
                    profiling_json=profiling.to_json(), profile_csv=job.profile_csv, error="",
                    created_at=job.created_at,
                ))
                if user_plan is not None:
                    stored = self._store_plan(s, job, "user", user_plan, None)
                    job.plan_id = stored.id
                    s.get_one(m.JobRow, spec.job_id).plan_id = stored.id
                s.commit()
            self._jobs[spec.job_id] = job
            if phase == "optimizing":
                self._submit_frontier(job)
            log.info("job %s registered (%s)", spec.job_id, phase)
            return self._view(job), True

    def list_jobs(self, job_ids: Sequence[str] = ()) -> list[JobView]:
        with self._lock:
            jobs = [self._job(j) for j in job_ids] if job_ids else list(self._jobs.values())
            return sorted((self._view(j) for j in jobs), key=lambda v: -v.created_at)

    def frontier(self, job_id: str) -> tuple[str, list[StoredPlan], str]:
        """(phase, frontier plans fastest first, name of the target's plan)."""
        with self._lock:
            job = self._job(job_id)
            selected = job.plans[job.plan_id].name if job.plan_id in job.plans else ""
            return job.phase, list(job.frontier), selected

    def profile_of(self, job_id: str) -> str | None:
        """The job's profile CSV (given or assembled from the sweep), if it has one yet."""
        with self._lock:
            return self._job(job_id).profile_csv

    # ---------------------------------------------------------------- ranks

    def register_rank(
        self,
        job_id: str,
        rank: int,
        stage: int,
        pipeline_id: int,
        gpu_name: str,
        supported_frequencies: Sequence[int],
        *,
        schedule: str = "",
        num_microbatches: int = 0,
    ) -> ScheduleView:
        in_range("rank", rank, 0, 10_000_000)
        if len(gpu_name) > MAX_TEXT:
            raise InputError("gpu_name", f"at most {MAX_TEXT} characters")
        freqs = check_frequencies(supported_frequencies, "supported_frequencies")
        if not freqs:
            raise InputError("supported_frequencies", "must list at least one frequency")
        with self._lock:
            job = self._job(job_id)
            spec = job.spec
            if not 0 <= stage < spec.num_stages:
                raise InputError("stage", f"{stage} is out of range for the {spec.num_stages}-stage job {job_id!r}")
            if not 0 <= pipeline_id < spec.dp_degree:
                raise InputError("pipeline_id", f"{pipeline_id} is out of range for dp_degree {spec.dp_degree}")
            if schedule and schedule != spec.schedule:
                raise InputError("schedule", f"rank runs {schedule!r} but job {job_id!r} is {spec.schedule!r}")
            if num_microbatches and num_microbatches != spec.num_microbatches:
                raise InputError("num_microbatches",
                                 f"rank runs {num_microbatches} but job {job_id!r} has {spec.num_microbatches}")
            self._check_supported(job, stage, gpu_name, freqs)
            info = RankInfo(rank, stage, pipeline_id, gpu_name, freqs)
            if job.ranks.get(rank) != info:
                with self._sessions() as s:
                    # Memory mirrors the table, so a new rank needs no lookup.
                    row = s.get(m.RankRow, (job_id, rank)) if rank in job.ranks else None
                    if row is None:
                        row = m.RankRow(job_id=job_id, rank=rank)
                        s.add(row)
                    row.stage, row.pipeline_id, row.gpu_name = stage, pipeline_id, gpu_name
                    row.frequencies_json = ",".join(map(str, freqs))
                    if job.phase == "profiling" and not job.profiling.frequencies:
                        # The first rank's clocks become the sweep's frequency list.
                        job.profiling = dataclasses.replace(job.profiling, frequencies=freqs)
                        s.get_one(m.JobRow, job_id).profiling_json = job.profiling.to_json()
                    s.commit()
                job.ranks[rank] = info
            return self._schedule(job, info)

    def _check_supported(self, job: _Job, stage: int, gpu_name: str, freqs: tuple[int, ...]) -> None:
        """Every frequency the job may ask of this stage must have a close supported clock."""
        if (stage, freqs) in job.compatible:
            return  # ranks of one job usually share a GPU model: check each clock list once
        wanted: set[int] = set()
        if job.profile is not None:  # frontier plans only use profiled clocks
            for kind in INSTRUCTION_KINDS:
                wanted.update(job.profile[(stage, kind)].frequencies)
        for plan in job.plans.values():
            if plan.kind != "frontier":
                wanted.update(p.frequency for p in plan.plan.stages[stage])
        for f in sorted(wanted, reverse=True):
            near = nearest(freqs, f)
            if abs(near - f) > MAX_FREQUENCY_GAP:
                raise InputError(
                    "supported_frequencies",
                    f"GPU {gpu_name or '?'} cannot run {f} MHz needed by stage {stage} "
                    f"(nearest supported {near} MHz, {freqs[-1]}-{freqs[0]} MHz)",
                )
        job.compatible.add((stage, freqs))

    def schedule_for(self, job_id: str, rank: int) -> ScheduleView:
        with self._lock:
            job = self._job(job_id)
            return self._schedule(job, self._rank(job, rank))

    def try_schedule_for(self, job_id: str, rank: int) -> ScheduleView | None:
        """:meth:`schedule_for` if the lock is free right now, else None (lets the event loop avoid a thread hop)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            job = self._job(job_id)
            return self._schedule(job, self._rank(job, rank))
        finally:
            self._lock.release()

    def version_of(self, job_id: str) -> int:
        with self._lock:
            return self._job(job_id).version

    # ---------------------------------------------------------------- reports

    def report_profile(
        self, job_id: str, rank: int, frequency: int, measurements: Sequence[tuple[str, float, float]]
    ) -> ScheduleView:
        """Store one rank's measurements at ``frequency``; returns what it should do next."""
        in_range("frequency", frequency, 1, 100_000)
        if not measurements:
            raise InputError("measurements", "must not be empty")
        seen: set[str] = set()
        for i, (kind, t, e) in enumerate(measurements):
            if kind not in INSTRUCTION_KINDS:
                raise InputError(f"measurements[{i}].instruction", f"must be forward or backward, got {kind!r}")
            if kind in seen:
                raise InputError(f"measurements[{i}].instruction", f"{kind} given twice")
            seen.add(kind)
            finite(f"measurements[{i}].time", t, positive=True)
            finite(f"measurements[{i}].energy", e, positive=True)
        with self._lock:
            job = self._job(job_id)
            info = self._rank(job, rank)
            if job.phase != "profiling":
                return self._schedule(job, info)  # a late or retried report; the sweep is over
            sweep = job.profiling.frequencies
            freq = nearest(sweep, frequency) if sweep else frequency
            before = self._next_frequency(job, info.stage)
            with self._sessions() as s:
                for kind, t, e in measurements:
                    row = s.scalars(select(m.ProfileReportRow).filter_by(
                        job_id=job_id, rank=rank, frequency=freq, instruction=kind)).first()
                    if row is None:
                        s.add(m.ProfileReportRow(job_id=job_id, rank=rank, stage=info.stage, frequency=freq,
                                                 instruction=kind, time=t, energy=e))
                        job.num_profile_reports += 1
                    else:
                        row.time, row.energy = t, e
                    self._record_measurement(job, info.stage, freq, kind, rank, t, e)
                if self._next_frequency(job, info.stage) != before:
                    self._bump(s, job)
                if all(self._next_frequency(job, st) is None for st in range(job.spec.num_stages)):
                    self._finish_profiling(s, job)
                s.commit()
            self._notify(job)
            return self._schedule(job, info)

    def report_iteration(
        self, job_id: str, rank: int, iteration: int, time_s: float, energy: float, plan_name: str = ""
    ) -> int:
        """Store one iteration's time and energy (a repeated iteration is ignored); returns the version."""
        in_range("iteration", iteration, 0, 2**62)
        finite("time", time_s, positive=True)
        finite("energy", energy)
        if len(plan_name) > MAX_TEXT:
            raise InputError("plan_name", f"at most {MAX_TEXT} characters")
        with self._lock:
            job = self._job(job_id)
            self._rank(job, rank)
            with self._sessions() as s:
                s.add(m.IterationReportRow(job_id=job_id, rank=rank, iteration=iteration, time=time_s,
                                           energy=energy, plan_name=plan_name))
                try:
                    s.commit()
                    job.num_iteration_reports += 1
                except IntegrityError:
                    s.rollback()  # already stored: a retry of an acknowledged report
            return job.version

    def iteration_reports(self, job_id: str) -> list[tuple[int, int, float, float, str]]:
        """(rank, iteration, time, energy, plan_name) of every stored iteration report."""
        with self._lock:
            self._job(job_id)
        with self._sessions() as s:
            rows = s.scalars(select(m.IterationReportRow).filter_by(job_id=job_id)
                             .order_by(m.IterationReportRow.rank, m.IterationReportRow.iteration))
            return [(r.rank, r.iteration, r.time, r.energy, r.plan_name) for r in rows]

    # ---------------------------------------------------------------- targets and stragglers

    def set_target(self, job_id: str, target: TargetSpec, plan_json: str = "") -> JobView:
        with self._lock:
            job = self._job(job_id)
            with self._sessions() as s:
                plan_id = self._resolve(s, job, target, plan_json)
                job.target, job.plan_id = target, plan_id
                row = s.get_one(m.JobRow, job_id)
                row.target_json, row.plan_id = target.to_json(), plan_id
                self._bump(s, job)
                s.commit()
            self._notify(job)
            log.info("job %s: target %s", job_id, target.describe())
            return self._view(job)

    def report_straggler(self, job_id: str, pipeline_id: int, factor: float) -> tuple[JobView, str]:
        """Record a pipeline's slowdown (1.0 = recovered); returns the job and the others' plan name."""
        if not (math.isfinite(factor) and 1.0 <= factor <= 100.0):
            raise InputError("factor", f"must be in [1, 100], got {factor}")
        with self._lock:
            job = self._job(job_id)
            if not 0 <= pipeline_id < job.spec.dp_degree:
                raise InputError("pipeline_id", f"{pipeline_id} is out of range for dp_degree {job.spec.dp_degree}")
            with self._sessions() as s:
                row = s.get(m.StragglerRow, (job_id, pipeline_id))
                if factor <= 1.0:
                    if row is not None:
                        s.delete(row)
                    job.stragglers.pop(pipeline_id, None)
                else:
                    if row is None:
                        s.add(m.StragglerRow(job_id=job_id, pipeline_id=pipeline_id, factor=factor))
                    else:
                        row.factor = factor
                    job.stragglers[pipeline_id] = factor
                self._bump(s, job)
                s.commit()
            self._notify(job)
            others = [p for p in range(job.spec.dp_degree) if job.stragglers.get(p, 1.0) <= 1.0]
            plan = self._pipeline_plan(job, others[0]) if others else None
            return self._view(job), plan.name if plan else ""

    # ---------------------------------------------------------------- internals

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"job_id: no job {job_id!r}")
        return job

    def _rank(self, job: _Job, rank: int) -> RankInfo:
        info = job.ranks.get(rank)
        if info is None:
            raise NotFound(f"rank: rank {rank} of job {job.spec.job_id!r} is not registered")
        return info

    def _parse_profile(self, spec: JobSpec, text: str) -> PipelineProfile:
        if len(text) > 16 * 1024 * 1024:
            raise InputError("profile_csv", "larger than 16 MiB")
        profile = parse_profile(text, source="profile_csv", blocking_power=spec.blocking_power,
                                num_stages=spec.num_stages)
        if profile.num_stages != spec.num_stages:
            raise InputError("profile_csv", f"has {profile.num_stages} stages, job has {spec.num_stages}")
        return profile

    def _parse_user_plan(self, spec: JobSpec, plan_json: str) -> FrequencyPlan:
        from perseus.pipeline.dag import PipelineDAG
        from perseus.pipeline.evaluate import plan_frequencies

        if not plan_json:
            raise InputError("target.plan_json", "is empty")
        plan = FrequencyPlan.from_json(plan_json, source="target.plan_json")
        if (plan.schedule, plan.num_stages, plan.num_microbatches) != (
            spec.schedule, spec.num_stages, spec.num_microbatches
        ):
            raise InputError(
                "target.plan_json",
                f"plan is {plan.schedule} with {plan.num_stages} stages x {plan.num_microbatches} microbatches; "
                f"job is {spec.schedule} with {spec.num_stages} x {spec.num_microbatches}",
            )
        dag = PipelineDAG.build(plan.schedule, plan.num_stages, plan.num_microbatches, plan.num_chunks)
        try:
            plan_frequencies(plan, dag)  # instruction order must match the schedule
        except InputError as exc:
            raise InputError("target.plan_json", exc.problem) from None
        return plan if plan.name else dataclasses.replace(plan, name="user")

    def _resolve(self, s: Any, job: _Job, target: TargetSpec, plan_json: str) -> int | None:
        """The stored plan id a target selects (None until the frontier exists)."""
        if target.kind == "plan":
            return self._store_plan(s, job, "user", self._parse_user_plan(job.spec, plan_json), None).id
        if target.kind == "baseline":
            from perseus.server.baselines import build_baseline

            if job.profile is None:
                raise NotReady(f"job {job.spec.job_id!r} has no profile yet; baselines need one")
            spec = job.spec
            base = build_baseline(job.profile, spec.schedule, spec.num_stages, spec.num_microbatches,
                                  spec.num_chunks, target.baseline, target.value or 1.0, target.power_limits)
            return self._store_plan(s, job, "baseline", base.plan, base.power_limits).id
        if not job.frontier:
            if job.phase == "serving":
                raise NotReady(f"job {job.spec.job_id!r} has no frontier (it serves a plan without a profile)")
            return None  # chosen when the frontier is ready
        return job.frontier[select_index([p.plan for p in job.frontier], target)].id

    def _store_plan(
        self, s: Any, job: _Job, kind: str, plan: FrequencyPlan, power_limits: tuple[float, ...] | None,
        position: int = 0,
    ) -> StoredPlan:
        row = m.PlanRow(job_id=job.spec.job_id, kind=kind, position=position, name=plan.name,
                        iteration_time=plan.iteration_time, energy=plan.energy, plan_json=encode_plan(plan),
                        power_limits_json=json.dumps(list(power_limits)) if power_limits is not None else None)
        s.add(row)
        s.flush()
        if kind != "frontier":
            job.compatible.clear()  # a plan with new clocks: re-check ranks as they (re)register
        stored = StoredPlan(row.id, kind, plan.name, plan, power_limits)
        job.plans[row.id] = stored
        return stored

    def _bump(self, s: Any, job: _Job) -> None:
        job.version += 1
        s.get_one(m.JobRow, job.spec.job_id).version = job.version

    def _notify(self, job: _Job) -> None:
        for callback in self._listeners:
            callback(job.spec.job_id)

    def _record_measurement(
        self, job: _Job, stage: int, freq: int, kind: str, rank: int, t: float, e: float
    ) -> None:
        job.measured.setdefault(stage, {}).setdefault(freq, {}).setdefault(kind, {})[rank] = (t, e)

    def _next_frequency(self, job: _Job, stage: int) -> int | None:
        """The stage's next sweep frequency; None when it is done, -1 before there is a frequency list."""
        sweep = job.profiling.frequencies
        if not sweep:
            return -1
        return next_frequency(sweep, job.measured.get(stage, {}), job.profiling.early_stop_rises)

    def _finish_profiling(self, s: Any, job: _Job) -> None:
        """Every stage finished its sweep: assemble the profile and start optimizing."""
        rows: list[tuple[int, str, Measurement]] = []
        for stage in range(job.spec.num_stages):
            for freq in sorted(job.measured.get(stage, {}), reverse=True):
                for kind in INSTRUCTION_KINDS:
                    per_rank = job.measured[stage][freq].get(kind)
                    if per_rank:
                        t, e = averaged(per_rank)
                        rows.append((stage, kind, Measurement(freq, t, e)))
        csv_text = format_profile(rows)
        job.profile = self._parse_profile(job.spec, csv_text)
        job.profile_csv = csv_text
        job.compatible.clear()
        job.phase = "optimizing"
        row = s.get_one(m.JobRow, job.spec.job_id)
        row.profile_csv, row.phase = csv_text, "optimizing"
        self._bump(s, job)
        if self._profile_dir is not None:
            spec = job.spec
            save_profile(job.profile, self._profile_dir / spec.job_id, model=spec.model,
                         partition=spec.partition, num_stages=spec.num_stages, source=f"perseus job {spec.job_id}")
        log.info("job %s: profiling done (%d rows); optimizing", job.spec.job_id, len(rows))
        self._submit_frontier(job)

    def _submit_frontier(self, job: _Job) -> None:
        from perseus.server.optimize import compute_frontier_plans, make_pool

        if self._closed:
            return
        if self._pool is None:
            self._pool = (self._pool_factory or make_pool)()
        spec = job.spec
        future = self._pool.submit(compute_frontier_plans, job.profile_csv or "", spec.blocking_power,
                                   spec.schedule, spec.num_stages, spec.num_microbatches, spec.num_chunks)
        future.add_done_callback(functools.partial(self._frontier_done, spec.job_id))

    def _frontier_done(self, job_id: str, future: Future[list[dict[str, Any]]]) -> None:
        with self._lock:
            if self._closed or future.cancelled():
                return
            job = self._jobs[job_id]
            try:
                plans = [FrequencyPlan.from_dict(d) for d in future.result()]
                if not plans:
                    raise PerseusError("the frontier is empty")
            except Exception as exc:  # the worker's failure becomes the job's error, not a crash
                if self._closed:
                    return
                log.error("job %s: frontier computation failed: %s", job_id, exc)
                with self._sessions() as s:
                    job.phase, job.error = "failed", f"frontier computation failed: {exc}"
                    row = s.get_one(m.JobRow, job_id)
                    row.phase, row.error = job.phase, job.error
                    self._bump(s, job)
                    s.commit()
                self._notify(job)
                return
            with self._sessions() as s:
                job.frontier = [self._store_plan(s, job, "frontier", p, None, i) for i, p in enumerate(plans)]
                # Frontier targets pick their plan now; a baseline asked for before there was a profile
                # is built now; a user plan was stored when it was set.
                if job.target.follows_frontier or job.plan_id is None:
                    try:
                        job.plan_id = self._resolve(s, job, job.target, "")
                    except PerseusError as exc:  # e.g. a baseline that cannot be built: serve the fastest
                        log.warning("job %s: target %s unusable (%s); serving fastest", job_id,
                                    job.target.describe(), exc)
                        job.target, job.plan_id = TargetSpec(), job.frontier[0].id
                job.phase = "serving"
                row = s.get_one(m.JobRow, job_id)
                row.phase, row.plan_id, row.target_json = "serving", job.plan_id, job.target.to_json()
                self._bump(s, job)
                s.commit()
            log.info("job %s: frontier of %d plans; serving %s", job_id, len(plans),
                     job.plans[job.plan_id].name if job.plan_id else "-")
            self._notify(job)

    def _pipeline_plan(self, job: _Job, pipeline_id: int) -> StoredPlan | None:
        """The plan a pipeline runs: the target's, or a slower one to match a straggler."""
        base = job.plans.get(job.plan_id) if job.plan_id is not None else None
        if base is None or not job.target.follows_frontier or not job.frontier:
            return base
        if job.stragglers.get(pipeline_id, 1.0) > 1.0:
            return base  # the straggler itself keeps its plan
        slow = [f for p, f in job.stragglers.items() if f > 1.0]
        if not slow:
            return base
        pace = job.frontier[0].plan.iteration_time * max(slow)
        if pace <= base.plan.iteration_time:
            return base
        return job.frontier[pace_index([p.plan for p in job.frontier], pace)]

    def _schedule(self, job: _Job, info: RankInfo) -> ScheduleView:
        common: dict[str, Any] = dict(job_id=job.spec.job_id, rank=info.rank, stage=info.stage, pipeline_id=info.pipeline_id,
                      phase=job.phase, version=job.version)
        if job.phase == "profiling":
            settings = job.profiling
            freq = self._next_frequency(job, info.stage)
            if freq == -1:
                freq = info.frequencies[0]
            if freq is None:
                return ScheduleView(**common, mode="default", profiling_done=True)
            return ScheduleView(**common, mode="profiling", profiling_frequency=nearest(info.frequencies, freq),
                                warmup_iterations=settings.warmup_iterations,
                                measure_iterations=settings.measure_iterations)
        stored = self._pipeline_plan(job, info.pipeline_id) if job.phase == "serving" else None
        if stored is None:
            return ScheduleView(**common, mode="default")
        plan = stored.plan
        view: dict[str, Any] = dict(plan_name=stored.name, plan_id=stored.id, expected_iteration_time=plan.iteration_time,
                    expected_energy=plan.energy)
        if stored.power_limits is not None:
            watts = stored.power_limits[info.stage if len(stored.power_limits) > 1 else 0]
            return ScheduleView(**common, **view, mode="power_limit", power_limit=watts)
        instructions = tuple(
            p if p.frequency in info.frequencies else
            PlannedInstruction(p.instruction, p.microbatch, nearest(info.frequencies, p.frequency), p.chunk)
            for p in plan.stages[info.stage]
        )
        return ScheduleView(**common, **view, mode="plan", instructions=instructions)

    def _view(self, job: _Job) -> JobView:
        if job.phase == "profiling":
            stages_profiled = sum(self._next_frequency(job, st) is None for st in range(job.spec.num_stages))
        else:
            stages_profiled = job.spec.num_stages if job.profile is not None else 0
        return JobView(
            spec=job.spec, phase=job.phase, target=job.target,
            plan_name=job.plans[job.plan_id].name if job.plan_id in job.plans else "",
            version=job.version, num_ranks=len(job.ranks), num_profile_reports=job.num_profile_reports,
            num_iteration_reports=job.num_iteration_reports, frontier_size=len(job.frontier), error=job.error,
            stragglers=dict(job.stragglers), created_at=job.created_at, stages_profiled=stages_profiled,
        )


def _stored(row: m.PlanRow) -> StoredPlan:
    limits = tuple(float(w) for w in json.loads(row.power_limits_json)) if row.power_limits_json else None
    return StoredPlan(row.id, row.kind, row.name, decode_plan(row.plan_json, source=f"plan row {row.id}"), limits)
