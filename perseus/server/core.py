"""The scheduler's job logic: profiling sweeps, frontiers, targets, stragglers and reports.

:class:`SchedulerCore` is synchronous and thread-safe (one lock; the gRPC layer calls it from a
thread pool). The database holds the jobs' state; memory holds a cache of it. Every change is
committed to the database before the call returns, so whatever a caller saw acknowledged
survives a killed server; on start the cache is rebuilt from the tables. Reads (schedules, the
frontier) are served from the cache. The cache holds each plan's summary only (:class:`StoredPlan`);
a plan's clocks are decoded from its compact row when a rank needs them, and the recently used
decoded plans are kept in a bounded LRU (:mod:`perseus.server.plancache`).

Several servers (replicas) may share one PostgreSQL database. A change locks the job's row
(``SELECT ... FOR UPDATE``), re-reads the job first if another replica changed it since (its
``version`` differs), and is published to the other replicas on commit
(:mod:`perseus.server.notify`), which re-read the job and wake their watchers. A job or rank a
replica has not seen yet is read from the database on first use. Frontiers are computed by
:mod:`perseus.server.pool`, once per job across replicas.

The cluster power cap (:mod:`perseus.server.capping`) is re-solved by :meth:`SchedulerCore.resolve_cap`
after every event that may move it, and every :data:`CAP_LOOP_S` when measured power strays from planned.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from perseus.control.drift import DriftVerdict, rescale
from perseus.db import Base
from perseus.errors import InputError, PerseusError
from perseus.pipeline.costs import check_profile_kinds
from perseus.plan import FrequencyPlan, PlannedInstruction
from perseus.plan.store import RowSummary, decode_plan, encode_plan, row_summary
from perseus.profile import INSTRUCTION_KINDS, Measurement, PipelineProfile, parse_profile, save_profile
from perseus.profile.io import format_profile
from perseus.profile.model import ALL_KINDS, SPLIT_KINDS
from perseus.reports import IterationReport
from perseus.server import capping, runs
from perseus.server import models as m
from perseus.server.control import ControlConfig, Controller, ControlListener, Decision, DriftStatus
from perseus.server.db import HeldConnection, session_factory
from perseus.server.limits import LimitExceeded, Limits
from perseus.server.notify import TICK_S, make_feed
from perseus.server.optimize import FrontierRequest
from perseus.server.plancache import CACHED_INSTRUCTIONS, PlanCache
from perseus.server.pool import FrontierPool, PoolLimits
from perseus.server.reports import ReportWriter, Stored, settle
from perseus.server.sweep import (
    MAX_READ_BACK,
    MIN_SWEEP_CLOCKS,
    Measured,
    ProfilingSettings,
    averaged,
    check_frequencies,
    nearest,
    next_frequency,
)
from perseus.server.tail import ReportTail, TailedReport
from perseus.server.targets import TargetSpec, choose, pace_index
from perseus.server.types import (
    JOB_ID_RE,
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

EXPORT_BATCH = 64
"""Plan rows read per query when plans are exported (GetFrontier with plans): a few hundred KB of
compact rows at 16 x 256, and few queries for a frontier of thousands."""
LOOP_FEED_S = 0.2
"""Seconds between two reads of the reports every replica stored, by the replica that runs a job's closed
loop: the detectors see a rank on another replica this much after its commit (a switch then reaches
every rank by NOTIFY, well within a second)."""
RANKS_REFRESH_S = 2.0
"""Seconds between two reads of every stored rank by a job's closed-loop replica when no report names a
rank it does not know (at 1024 ranks one read costs tens of ms of CPU under the GIL the acks need)."""
LOOP_CLAIM = "loop/"
"""Prefix of the advisory-lock name that makes one replica run a job's closed loop (see :meth:`_follow_reports`)."""
CAP_LOOP_S = 2.0
"""Seconds between two checks of measured against planned power under a cap: a few iterations of a
typical job, and a query that reads only the reports added since the last check."""

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
    runs: dict[str, runs.RunStats] = field(default_factory=dict)
    """Statistics of every training run that reported iterations, by run id (insertion = oldest first)."""
    profile: PipelineProfile | None = None
    compatible: set[tuple[int, tuple[int, ...]]] = field(default_factory=set)
    """(stage, supported clocks) pairs already checked against the job's plans."""
    target_note: str = ""
    """Why the served plan differs from the target (e.g. no plan meets it and the closest runs)."""
    auto_stragglers: set[int] = field(default_factory=set)
    """Pipelines in ``stragglers`` that the detector put there (the others were reported by hand)."""
    drift: DriftStatus = field(default_factory=DriftStatus)
    weight: float = 1.0
    """How much the job's slowdown counts under the cluster power cap."""
    cap_plan_id: int | None = None
    """The plan the power cap chose for a frontier target (then served instead of ``plan_id``)."""


class SchedulerCore:
    """All jobs of one server; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        pool: PoolLimits | None = None,
        limits: Limits | None = None,
        profile_dir: Path | None = None,
        control: ControlConfig | None = None,
        decoded_instructions: int = CACHED_INSTRUCTIONS,
    ) -> None:
        """``decoded_instructions``: how many decoded plan instructions to keep (see :mod:`perseus.server.plancache`)."""
        self._sessions = session_factory(engine)
        self._control = Controller(control or ControlConfig())
        self._control_listeners: list[ControlListener] = []
        self._limits = limits or Limits()
        self._lock = threading.RLock()
        self._profile_dir = profile_dir
        self._listeners: list[Callable[[str], None]] = []
        self._closed = False
        self._pool = FrontierPool(pool or PoolLimits(), self._frontier_done)
        self._computing: set[str] = set()
        """Jobs whose frontier this server has queued or is computing."""
        self._feed = make_feed(engine)
        self._reports = ReportWriter(engine, self._count_commit)
        self._measured = capping.MeasuredPower()
        self._ratios: dict[str, float] = {}
        """Measured over planned power per job, while a cap is set (see :meth:`_cap_feedback`)."""
        self._plan_cache = PlanCache(self._load_plan, decoded_instructions)
        """Decoded plans (memory holds only each plan's summary, see :mod:`perseus.server.plancache`)."""
        self._stop_loop = threading.Event()
        self._cap_loop = threading.Thread(
            target=self._every, args=(CAP_LOOP_S, self._cap_feedback, "power cap: measured-power feedback failed"),
            name="perseus-cap", daemon=True)
        self._leading: set[str] = set()
        """Jobs whose closed loop this replica runs, with others on the database (see :meth:`_leads`)."""
        self._claim_after: dict[str, float] = {}
        self._tail = ReportTail()
        self._loop_conn = HeldConnection(engine, autocommit=True)
        """The closed-loop thread's connection (five reads a second: no pool checkout, no BEGIN each)."""
        self._ranks_read_at = -float("inf")
        self._loop_feed = (threading.Thread(target=self._every, name="perseus-loop", daemon=True, args=(
            LOOP_FEED_S, self._follow_reports, "closed loop: cannot read the replicas' reports"))
                           if self._feed.shared else None)
        with self._sessions() as s:
            self._jobs = self._read_jobs(s)
        with self._lock:
            for job in list(self._jobs.values()):
                if job.phase == "optimizing" or job.drift.state == "replanning":
                    log.info("job %s: resuming frontier computation", job.spec.job_id)
                    self._submit_frontier(job)
        self._feed.start(self._on_remote_change, self._on_tick)
        self._cap_loop.start()
        if self._loop_feed is not None:
            self._loop_feed.start()

    # ---------------------------------------------------------------- lifecycle

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """``callback(job_id)`` runs (under the lock, keep it short) after a job's schedules may change."""
        self._listeners.append(callback)

    def add_control_listener(self, callback: ControlListener) -> None:
        """``callback(job_id, event)`` after the closed loop acted on a job (under the lock, keep it short):
        ``"drifted"``, ``"replanned"`` or ``"stragglers"`` (see :data:`perseus.server.control.ControlListener`)."""
        self._control_listeners.append(callback)

    def _control_event(self, job_id: str, event: str) -> None:
        for callback in self._control_listeners:
            try:
                callback(job_id, event)
            except Exception:  # a subscriber's bug must not stop the loop
                log.exception("job %s: control listener failed on %r", job_id, event)

    def close(self) -> None:
        """Stop; a frontier still computing is abandoned (the job stays "optimizing" and resumes later)."""
        with self._lock:
            self._closed = True
        self._stop_loop.set()
        self._cap_loop.join(timeout=30)
        if self._loop_feed is not None:
            self._loop_feed.join(timeout=30)
        self._loop_conn.drop()
        self._feed.close()
        self._pool.close()
        self._reports.close()

    def cancel_frontier(self, job_id: str) -> bool:
        """Stop computing a job's frontier on this server (job deleted or re-profiled); True if one was."""
        with self._lock:
            self._computing.discard(job_id)
            cancelled = self._pool.cancel(job_id)
            self._feed.release(job_id)
            return cancelled

    def _read_jobs(self, s: Any, job_ids: Collection[str] | None = None) -> dict[str, _Job]:
        """Jobs as stored in the database: all of them, or those in ``job_ids``."""

        def only(stmt: Any, column: Any) -> Any:
            return stmt if job_ids is None else stmt.where(column.in_(job_ids))

        jobs: dict[str, _Job] = {}
        for row in s.scalars(only(select(m.JobRow), m.JobRow.id)):
            job = _Job(
                spec=JobSpec(row.id, row.model, row.partition, row.schedule, row.num_stages,
                             row.num_microbatches, row.num_chunks, row.dp_degree, row.tp_degree,
                             row.blocking_power),
                phase=row.phase, version=row.version, target=TargetSpec.from_json(row.target_json),
                plan_id=row.plan_id, profiling=ProfilingSettings.from_json(row.profiling_json),
                profile_csv=row.profile_csv, error=row.error, created_at=row.created_at,
                drift=DriftStatus.from_json(row.drift_json),
                weight=row.weight, cap_plan_id=row.cap_plan_id,
            )
            if job.profile_csv:
                job.profile = self._parse_profile(job.spec, job.profile_csv)
            jobs[row.id] = job
        if not jobs:
            return jobs
        for r in s.scalars(only(select(m.RankRow), m.RankRow.job_id)):
            freqs = tuple(int(f) for f in r.frequencies_json.split(",") if f)
            jobs[r.job_id].ranks[r.rank] = RankInfo(r.rank, r.stage, r.pipeline_id, r.gpu_name, freqs)
        summary = select(m.PlanRow.id, m.PlanRow.job_id, m.PlanRow.kind, m.PlanRow.name, m.PlanRow.iteration_time,
                         m.PlanRow.energy, m.PlanRow.power_limits_json)  # the clocks are decoded on demand
        for p in s.execute(only(summary, m.PlanRow.job_id).order_by(m.PlanRow.job_id, m.PlanRow.position)):
            stored = _stored(p)
            job = jobs[p.job_id]
            job.plans[p.id] = stored
            if p.kind == "frontier":
                job.frontier.append(stored)
        for st in s.scalars(only(select(m.StragglerRow), m.StragglerRow.job_id)):
            jobs[st.job_id].stragglers[st.pipeline_id] = st.factor
            if st.source == "auto":
                jobs[st.job_id].auto_stragglers.add(st.pipeline_id)
        for rep in s.scalars(only(select(m.ProfileReportRow), m.ProfileReportRow.job_id)):
            jobs[rep.job_id].num_profile_reports += 1
            self._record_measurement(jobs[rep.job_id], rep.stage, rep.frequency, rep.instruction,
                                     rep.rank, rep.time, rep.energy)
        for job_id, count in self._iteration_counts(s, job_ids):
            jobs[job_id].num_iteration_reports = count
        for job_id, job_runs in runs.load(s, job_ids).items():
            jobs[job_id].runs = job_runs
        for job in jobs.values():
            if job.target.nearest and job.frontier:  # the note is derived, not stored
                _, job.target_note = choose(job.frontier, job.target)
        return jobs

    def _iteration_counts(self, s: Any, job_ids: Collection[str] | None) -> Any:
        stmt = select(m.IterationReportRow.job_id, func.count()).group_by(m.IterationReportRow.job_id)
        return s.execute(stmt if job_ids is None else stmt.where(m.IterationReportRow.job_id.in_(job_ids)))

    def _refresh(self, s: Any, job_id: str) -> _Job | None:
        """Re-read one job into the cache (None: the database has no such job)."""
        job = self._read_jobs(s, [job_id]).get(job_id) if JOB_ID_RE.match(job_id) else None
        old = self._jobs.get(job_id)
        if old is not None:  # plans another replica deleted (re-planned, re-profiled)
            self._plan_cache.forget(set(old.plans) - set(job.plans if job is not None else ()))
        if job is None:
            self._jobs.pop(job_id, None)
        else:
            self._jobs[job_id] = job
        return job

    def _refreshed(self, job_id: str) -> None:
        """Another replica changed the job: re-read it, stop a frontier it no longer needs, wake watchers."""
        with self._sessions() as s:
            job = self._refresh(s, job_id)
        if job_id in self._computing and (job is None or (job.phase != "optimizing" and job.drift.state != "replanning")):
            self.cancel_frontier(job_id)
        for callback in self._listeners:
            callback(job_id)

    def _on_remote_change(self, job_id: str, version: int) -> None:
        """A replica committed ``version`` of a job (possibly this one: then the cache has it already)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if self._closed or job is None or job.version >= version:
                return  # not cached here: read on first use
            self._refreshed(job_id)

    def _on_tick(self) -> None:
        """About once a second with replicas: catch changes whose notification was missed, take over
        frontiers whose replica died (its claim went with its connection)."""
        with self._sessions() as s:
            stored = {job_id: (version, phase) for job_id, version, phase
                      in s.execute(select(m.JobRow.id, m.JobRow.version, m.JobRow.phase))}
        with self._lock:
            if self._closed:
                return
            for job_id, job in list(self._jobs.items()):
                if stored.get(job_id, (None,))[0] != job.version:
                    self._refreshed(job_id)
            for job_id, (_, phase) in stored.items():
                replanning = (cached := self._jobs.get(job_id)) is not None and cached.drift.state == "replanning"
                if (phase == "optimizing" or replanning) and job_id not in self._computing:
                    optimizing = self._cached_or_stored(job_id)
                    if optimizing is not None:
                        self._submit_frontier(optimizing)

    @contextmanager
    def _writing(self, job_id: str) -> Iterator[tuple[Any, _Job]]:
        """A transaction that changes one job (the caller holds the lock): the job's row is locked, the
        cached job is current, and the change is committed and published to the replicas on exit."""
        with self._sessions() as s:
            version = s.scalar(select(m.JobRow.version).where(m.JobRow.id == job_id).with_for_update())
            job = self._jobs.get(job_id)
            if version is None or job is None or job.version != version:
                job = self._refresh(s, job_id)
                if job is None:
                    raise NotFound(f"job_id: no job {job_id!r}")
            yield s, job
            self._feed.publish(s, job_id, job.version)
            s.commit()

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
        if len(profile_csv) > self._limits.max_profile_bytes:
            raise InputError("profile_csv", f"{len(profile_csv) / 1e6:.1f} MB is over the server's limit of "
                                            f"{self._limits.max_profile_bytes / 1e6:.1f} MB "
                                            "(perseus serve --max-profile-bytes)")
        profile = self._parse_profile(spec, profile_csv) if profile_csv else None
        user_plan = self._parse_user_plan(spec, target_plan_json) if target.kind == "plan" else None
        with self._lock:
            existing = self._cached_or_stored(spec.job_id)
            if existing is not None:
                return self._same_job(existing, spec), False
            with self._sessions() as s:  # all replicas' jobs count, not only the cached ones
                count = s.scalar(select(func.count()).select_from(m.JobRow)) or 0
            if count >= self._limits.max_jobs:
                raise LimitExceeded(f"the server holds {count} jobs, its limit (perseus serve "
                                    "--max-jobs); delete finished ones with: perseus jobs delete JOB")
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
                try:
                    s.commit()
                except IntegrityError:  # another replica registered it a moment ago
                    s.rollback()
                    existing = self._refresh(s, spec.job_id)
                    if existing is None:
                        raise
                    return self._same_job(existing, spec), False
            self._jobs[spec.job_id] = job
            if phase == "optimizing":
                self._submit_frontier(job)
            log.info("job %s registered (%s)", spec.job_id, phase)
            if phase == "serving":
                self._resolve_after(f"job {spec.job_id} serves a user plan")
            return self._view(job), True

    def _same_job(self, existing: _Job, spec: JobSpec) -> JobView:
        if existing.spec != spec:
            raise Conflict(f"job_id: job {spec.job_id!r} already exists with a different specification")
        return self._view(existing)

    def list_jobs(self, job_ids: Sequence[str] = ()) -> list[JobView]:
        with self._lock:
            if self._feed.shared:
                with self._sessions() as s:
                    if not job_ids:  # jobs other replicas registered
                        missing = set(s.scalars(select(m.JobRow.id))) - set(self._jobs)
                        self._jobs.update(self._read_jobs(s, missing) if missing else {})
                    counts = dict(self._iteration_counts(s, job_ids or None).all())
                    stats = runs.load(s, job_ids or None)
                for job_id, job in self._jobs.items():  # other replicas store reports too
                    job.num_iteration_reports = counts.get(job_id, job.num_iteration_reports)
                    job.runs = stats.get(job_id, job.runs)
            jobs = [self._job(j) for j in job_ids] if job_ids else list(self._jobs.values())
            with self._sessions() as s:
                measured = self._measured.read(s, list(self._jobs))
            return sorted((self._view(j, measured.get(j.spec.job_id, 0.0)) for j in jobs), key=lambda v: -v.created_at)

    @property
    def limits(self) -> Limits:
        """What one client may ask of this server."""
        return self._limits

    def frontier(self, job_id: str) -> tuple[str, list[StoredPlan], str]:
        """(phase, frontier plans fastest first, name of the target's plan)."""
        with self._lock:
            job = self._job(job_id)
            served = self._served(job)
            selected = served.name if served is not None else ""
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
            if rank not in job.ranks and len(job.ranks) >= self._limits.max_ranks_per_job:
                raise LimitExceeded(f"job {job_id!r} has {len(job.ranks)} ranks, the server's limit "
                                    "(perseus serve --max-ranks-per-job)")
            self._check_supported(job, stage, gpu_name, freqs)
            info = RankInfo(rank, stage, pipeline_id, gpu_name, freqs)
            sweep_unset = job.phase == "profiling" and not job.profiling.frequencies
            if rank not in job.ranks and not sweep_unset and self._insert_rank(job_id, info):
                job.ranks[rank] = info  # a new rank changes no schedule: no version, no lock on the job
            elif job.ranks.get(rank) != info:
                with self._writing(job_id) as (s, job):
                    row = s.get(m.RankRow, (job_id, rank))
                    if row is None:
                        row = m.RankRow(job_id=job_id, rank=rank)
                        s.add(row)
                    changed = rank in job.ranks  # other replicas must drop the rank's old clocks
                    row.stage, row.pipeline_id, row.gpu_name = stage, pipeline_id, gpu_name
                    row.frequencies_json = ",".join(map(str, freqs))
                    if job.phase == "profiling" and not job.profiling.frequencies:
                        # The first rank's clocks become the sweep's frequency list.
                        job.profiling = dataclasses.replace(job.profiling, frequencies=freqs)
                        s.get_one(m.JobRow, job_id).profiling_json = job.profiling.to_json()
                        changed = True
                    if changed:
                        self._bump(s, job)
                    job.ranks[rank] = info
            return self._schedule(job, info)

    def _insert_rank(self, job_id: str, info: RankInfo) -> bool:
        """Store a rank no replica has stored yet (False if one has: then it is an update)."""
        with self._sessions() as s:
            s.add(m.RankRow(job_id=job_id, rank=info.rank, stage=info.stage, pipeline_id=info.pipeline_id,
                            gpu_name=info.gpu_name, frequencies_json=",".join(map(str, info.frequencies))))
            try:
                s.commit()
            except IntegrityError:
                return False
        return True

    def _check_supported(self, job: _Job, stage: int, gpu_name: str, freqs: tuple[int, ...]) -> None:
        """Every frequency the job may ask of this stage must have a close supported clock."""
        if (stage, freqs) in job.compatible:
            return  # ranks of one job usually share a GPU model: check each clock list once
        wanted: set[int] = set()
        if job.profile is not None:  # frontier plans only use profiled clocks
            for kind in INSTRUCTION_KINDS:
                wanted.update(job.profile[(stage, kind)].frequencies)
        for stored in list(job.plans.values()):
            if stored.kind != "frontier":
                wanted.update(p.frequency for p in self._plan_cache.get(stored).stages[stage])
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
            job, info = self._job_rank(job_id, rank)
            return self._schedule(job, info)

    def try_schedule_for(self, job_id: str, rank: int) -> ScheduleView | None:
        """:meth:`schedule_for` from the cache if the lock is free right now, else None (lets the event
        loop avoid a thread hop; :meth:`schedule_for` reads what the cache lacks from the database)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            job = self._jobs.get(job_id)
            info = job.ranks.get(rank) if job is not None else None
            if job is None or info is None or not self._decoded_for(job, info):
                return None  # reading a plan row is for the thread pool, not the event loop
            return self._schedule(job, info)
        finally:
            self._lock.release()

    def version_of(self, job_id: str) -> int:
        with self._lock:
            return self._job(job_id).version

    # ---------------------------------------------------------------- reports

    def report_profile(
        self, job_id: str, rank: int, frequency: int, measurements: Sequence[tuple[str, float, float]],
        *, not_held: bool = False, read_back: Sequence[int] = (), counter_flat_s: float = 0.0,
    ) -> ScheduleView:
        """Store one rank's measurements at ``frequency``; returns what it should do next.

        ``not_held``: the rank could not hold ``frequency`` (``read_back``: the clocks it ran at
        instead); it is dropped from the rank's stage's sweep (see :meth:`_drop_frequency`).
        ``counter_flat_s``: the rank held it, but its GPU's energy counter did not advance over a
        window that long: the job's profiling fails (see :meth:`_fail_flat_counter`).
        """
        in_range("frequency", frequency, 1, 100_000)
        if counter_flat_s:
            finite("counter_flat_s", counter_flat_s, positive=True)
            if counter_flat_s > 86_400:  # a day: far beyond any measuring window
                raise InputError("counter_flat_s", f"at most 86400 seconds, got {counter_flat_s}")
            if measurements or not_held or read_back:
                raise InputError("counter_flat_s", "only alone: no measurements, not_held or read_back_mhz with it")
            return self._fail_flat_counter(job_id, rank, frequency, counter_flat_s)
        if not_held:
            if measurements:
                raise InputError("measurements", "must be empty when not_held (a clock that did not hold has none)")
            if len(read_back) > MAX_READ_BACK:
                raise InputError("read_back_mhz", f"at most {MAX_READ_BACK} clocks, got {len(read_back)}")
            for i, f in enumerate(read_back):
                in_range(f"read_back_mhz[{i}]", f, 1, 100_000)
            return self._drop_frequency(job_id, rank, frequency, tuple(read_back))
        if read_back:
            raise InputError("read_back_mhz", "only with not_held")
        if not measurements:
            raise InputError("measurements", "must not be empty")
        seen: set[str] = set()
        for i, (kind, t, e) in enumerate(measurements):
            if kind not in ALL_KINDS:
                raise InputError(f"measurements[{i}].instruction", f"must be one of {', '.join(ALL_KINDS)}, got {kind!r}")
            if kind in seen:
                raise InputError(f"measurements[{i}].instruction", f"{kind} given twice")
            seen.add(kind)
            finite(f"measurements[{i}].time", t, positive=True)
            finite(f"measurements[{i}].energy", e, positive=True)
        with self._lock:
            job, info = self._job_rank(job_id, rank)
            if job.phase != "profiling":
                return self._schedule(job, info)  # a late or retried report; the sweep is over
            with self._writing(job_id) as (s, job):
                if job.phase != "profiling":  # another replica just finished the sweep
                    return self._schedule(job, info)
                sweep = job.profiling.frequencies
                freq = nearest(sweep, frequency) if sweep else frequency
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
                self._bump(s, job)  # replicas must see every measurement before deciding the sweep is over
                if all(self._next_frequency(job, st) is None for st in range(job.spec.num_stages)):
                    self._finish_profiling(s, job)
            if job.phase == "optimizing":
                self._submit_frontier(job)
            self._notify(job)
            return self._schedule(job, info)

    def _drop_frequency(self, job_id: str, rank: int, frequency: int, read_back: tuple[int, ...]) -> ScheduleView:
        """Leave a clock the rank could not hold out of its stage's sweep (once; a retry changes nothing).

        The sweep goes on with the stage's other clocks; a stage left with fewer than
        :data:`MIN_SWEEP_CLOCKS` of them (or none of a one-clock sweep) fails the job, saying why.
        """
        with self._lock:
            job, info = self._job_rank(job_id, rank)
            if job.phase != "profiling":
                return self._schedule(job, info)
            with self._writing(job_id) as (s, job):
                settings = job.profiling
                freq = nearest(settings.frequencies, frequency) if settings.frequencies else frequency
                if job.phase != "profiling" or (info.stage, freq) in settings.dropped:
                    return self._schedule(job, info)
                job.profiling = dataclasses.replace(settings, dropped=(*settings.dropped, (info.stage, freq)))
                row = s.get_one(m.JobRow, job_id)
                row.profiling_json = job.profiling.to_json()
                left = job.profiling.stage_frequencies(info.stage)
                seen = f" (read back {', '.join(map(str, read_back))} MHz)" if read_back else ""
                log.warning("job %s: stage %d: %d MHz dropped from the sweep: rank %d could not hold it under "
                            "load%s; %d clocks left", job_id, info.stage, freq, rank, seen, len(left))
                if len(left) < min(MIN_SWEEP_CLOCKS, len(settings.frequencies)):
                    job.phase = row.phase = "failed"
                    job.error = row.error = (
                        f"profiling failed: stage {info.stage} holds {len(left)} of the sweep's "
                        f"{len(settings.frequencies)} clocks under load, fewer than {MIN_SWEEP_CLOCKS} "
                        "(a power cap or thermal limit? nvidia-smi -q -d PERFORMANCE); fix it and "
                        f"`perseus jobs reprofile {job_id}`, or sweep held clocks only (--profile_frequencies)"
                    )[:1024]
                    log.error("job %s: %s", job_id, job.error)
                elif all(self._next_frequency(job, st) is None for st in range(job.spec.num_stages)):
                    self._finish_profiling(s, job)
                self._bump(s, job)
            if job.phase == "optimizing":
                self._submit_frontier(job)
            self._notify(job)
            return self._schedule(job, info)

    def _fail_flat_counter(self, job_id: str, rank: int, frequency: int, seconds: float) -> ScheduleView:
        """Fail the job's profiling: a rank's energy counter did not advance over ``seconds`` at a clock
        it held. Not a clock to drop: the counter is the GPU's, so no clock of that stage can be measured.
        """
        with self._lock:
            job, info = self._job_rank(job_id, rank)
            if job.phase != "profiling":
                return self._schedule(job, info)
            with self._writing(job_id) as (s, job):
                if job.phase != "profiling":
                    return self._schedule(job, info)
                row = s.get_one(m.JobRow, job_id)
                job.phase = row.phase = "failed"
                job.error = row.error = (
                    f"profiling failed: rank {rank} (stage {info.stage}): the GPU's energy counter did not advance "
                    f"over {seconds:.2f} s of work at {frequency} MHz, nor over shorter windows before (NVML "
                    "updates it in steps; one that does not move over longer and longer windows does not measure "
                    "this GPU: nvidia-smi -q -d POWER); its energy cannot be measured, so the sweep stops; fix it and "
                    f"`perseus jobs reprofile {job_id}` (--profile_window sets a longer window)"
                )[:1024]
                log.error("job %s: %s", job_id, job.error)
                self._bump(s, job)
            self._notify(job)
            return self._schedule(job, info)

    def report_iteration(
        self, job_id: str, rank: int, iteration: int, time_s: float, energy: float, plan_name: str = "",
        run_id: str = "", **observed: Any,
    ) -> int:
        """Store one iteration's time and energy (a repeated report is ignored); returns the version.

        ``observed``: what the GPU did (``measure_only``, ``clock_mhz``, ``planned_instructions``,
        ``at_planned_clock``, see :class:`~perseus.reports.IterationReport`).
        """
        report = runs.checked_report(run_id, rank, iteration, time_s, energy, plan_name, **observed)
        with self._lock:
            self._job_rank(job_id, rank)
        return self._queue_iteration(job_id, run_id, report).result()

    def try_report_iteration(
        self, job_id: str, rank: int, iteration: int, time_s: float, energy: float, plan_name: str = "",
        run_id: str = "", **observed: Any,
    ) -> Future[int] | None:
        """:meth:`report_iteration` without blocking: the future resolves once the report is stored.

        None if the job or rank is not cached (then call :meth:`report_iteration`).
        """
        report = runs.checked_report(run_id, rank, iteration, time_s, energy, plan_name, **observed)
        if not self._knows(job_id, (rank,)):
            return None
        return self._queue_iteration(job_id, run_id, report)

    def _knows(self, job_id: str, ranks: Iterable[int]) -> bool:
        """Whether the job and each of ``ranks`` are cached: the hot path's check, without the lock.

        Only lookups in dicts (each atomic), and a snapshot under the lock would be no fresher once
        released. It took the lock with a try: while any thread held it (the writer counting a
        commit, the closed loop, the cap feedback), reports went to a thread that waited for it.
        """
        job = self._jobs.get(job_id)
        known = job.ranks if job is not None else None
        return known is not None and all(rank in known for rank in ranks)

    def report_iterations(
        self, job_id: str, run_id: str, reports: Sequence[IterationReport]
    ) -> tuple[int, int, int]:
        """Store a batch of one run's reports: (version, stored, duplicates), after the commit.

        Reports already stored under the same (run, rank, iteration) are retries: acknowledged, not stored.
        """
        runs.validate(run_id, reports)
        with self._lock:
            for r in {r.rank for r in reports}:
                self._job_rank(job_id, r)
        return self._queue_iterations(job_id, run_id, reports).result()

    def _queue_iteration(self, job_id: str, run_id: str, report: IterationReport) -> Future[int]:
        """Store one report with those other ranks send meanwhile; the future holds the job's version."""
        done: Future[int] = Future()
        done.set_running_or_notify_cancel()

        def stored(write: Future[tuple[int, int, int]]) -> None:
            error = write.exception()
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(write.result()[0])

        self._queue_iterations(job_id, run_id, [report]).add_done_callback(stored)
        return done

    def queue_iterations(
        self, job_id: str, run_id: str, reports: Sequence[IterationReport],
        done: Callable[[tuple[int, int, int] | BaseException], None],
    ) -> bool:
        """:meth:`report_iterations` without blocking, and with a callback instead of a future (the hot path).

        ``done`` is called from the writer thread with (version, stored, duplicates) after the commit,
        or with the error. False, and nothing queued, if the job or a rank is not cached (then call
        :meth:`report_iterations`). Raises InputError for bad reports.
        """
        runs.validate(run_id, reports)
        if not self._knows(job_id, (r.rank for r in reports)):
            return False
        self._submit_iterations(job_id, run_id, reports, done)
        return True

    def _queue_iterations(
        self, job_id: str, run_id: str, reports: Sequence[IterationReport]
    ) -> Future[tuple[int, int, int]]:
        """Store reports with those other ranks send meanwhile, in one transaction, outside the lock.

        The future holds (version, stored, duplicates) once the transaction committed.
        """
        done: Future[tuple[int, int, int]] = Future()
        done.set_running_or_notify_cancel()  # a caller that gives up cannot cancel reports being stored
        self._submit_iterations(job_id, run_id, reports, lambda result: settle(done, result))
        return done

    def _submit_iterations(
        self, job_id: str, run_id: str, reports: Sequence[IterationReport],
        done: Callable[[tuple[int, int, int] | BaseException], None],
    ) -> None:
        """Queue reports for the next group commit; ``done`` gets (version, stored, duplicates) or the error."""

        def stored(new: list[bool] | BaseException) -> None:
            if isinstance(new, BaseException):
                done(new)
                return
            job = self._jobs.get(job_id)  # counted already (_count_commit); an int read needs no lock
            done((job.version if job is not None else 0, sum(new), len(new) - sum(new)))

        self._reports.submit(job_id, run_id, reports, stored)

    def _count_commit(self, stored: Sequence[Stored]) -> None:
        """After a group commit, before its acks: count what it stored, under one hold of the lock (the
        writer thread takes it once per commit, not once per call: the event loop's try-lock then rarely
        finds it busy); a replica without a report tail feeds the reports to the detectors here."""
        with self._lock:
            for call in stored:
                job = self._jobs.get(call.job_id)
                if job is not None:
                    self._count_stored(job, call.run_id, call.reports)
        if self._loop_feed is not None:  # the closed loop gets them from memory, not from the database
            self._tail.own([(row_id, TailedReport(call.job_id, call.run_id, report, call.created_at))
                            for call in stored for row_id, report in zip(call.ids, call.reports, strict=True)
                            if row_id is not None])

    def _count_stored(self, job: _Job, run_id: str, stored: Sequence[IterationReport]) -> None:
        if not stored:
            return
        now = time.time()
        stats = job.runs.setdefault(run_id, runs.RunStats())
        for report in stored:
            stats.add(report.rank, 1, now, now)
            stats.observe(report)
        job.num_iteration_reports += len(stored)
        if job.phase == "serving" and not self._feed.shared:
            # With replicas the job's closed-loop replica feeds every stored report, its own included,
            # through the report tail (_follow_reports; its own handed over in memory), once: feeding
            # its own here as well did it twice.
            self._feed_control(job, run_id, stored)

    def _feed_control(self, job: _Job, run_id: str, reports: Sequence[IterationReport]) -> None:
        """Give reports to the job's detectors and act on their decision (the caller holds the lock)."""
        try:
            decision = self._control.observe(job.spec.job_id, job.spec.num_stages, job.ranks,
                                             lambda name: self._plan_named(job, name), job.profile, run_id, reports)
            if decision.stragglers is not None or decision.drift is not None:
                self._apply_decision(job.spec.job_id, decision)
        except Exception:  # the loop must never fail a report: it is stored and acknowledged already
            log.exception("job %s: the closed loop failed on a report", job.spec.job_id)

    # ---------------------------------------------------------------- closed loop

    def _leads(self, job_id: str) -> bool:
        """Whether this replica runs the job's closed loop: always when it is the database's only server;
        with replicas, the one holding the job's loop claim (:meth:`_follow_reports`)."""
        return not self._feed.shared or job_id in self._leading

    @staticmethod
    def _stored_ranks(s: Any, job_ids: Sequence[str]) -> dict[str, dict[int, RankInfo]]:
        """Every rank the replicas stored for ``job_ids``."""
        ranks: dict[str, dict[int, RankInfo]] = {}
        r = m.RankRow  # columns, not ORM objects: a thousand rows every few seconds on a hot server
        for job_id, rank, stage, pipeline_id, gpu_name, frequencies in s.execute(
                select(r.job_id, r.rank, r.stage, r.pipeline_id, r.gpu_name, r.frequencies_json)
                .where(r.job_id.in_(list(job_ids)))):
            freqs = tuple(int(f) for f in frequencies.split(",") if f)
            ranks.setdefault(job_id, {})[rank] = RankInfo(rank, stage, pipeline_id, gpu_name, freqs)
        return ranks

    def _every(self, seconds: float, step: Callable[[], None], failure: str) -> None:
        """Run ``step`` every ``seconds`` until the core closes (a background thread's body)."""
        while not self._stop_loop.wait(seconds):
            try:
                step()
            except Exception:  # the database went away: the next round tries again
                log.exception(failure)

    def _follow_reports(self) -> None:
        """With replicas, each rank reports to one of them, so no replica's own reports make an iteration
        complete. One replica per serving job (the holder of an advisory lock, taken over within a second
        when its replica dies) feeds the job's detectors from every replica's stored reports; its own
        stores feed them at once as well (an iteration counts once, see :class:`~perseus.server.control.Controller`).
        """
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return
            serving = {job_id for job_id, job in self._jobs.items() if job.phase == "serving"}
        gained, lost = [], []
        for job_id in sorted(serving):
            if job_id in self._leading:
                if not self._feed.try_claim(LOOP_CLAIM + job_id):  # the claim went with its connection's session
                    lost.append(job_id)
            elif now >= self._claim_after.get(job_id, 0.0):
                if self._feed.try_claim(LOOP_CLAIM + job_id):
                    gained.append(job_id)
                else:
                    self._claim_after[job_id] = now + TICK_S
        for job_id in self._leading - serving:
            self._feed.release(LOOP_CLAIM + job_id)
            lost.append(job_id)
        with self._lock:
            for job_id in gained:
                self._control.forget(job_id)  # windows fill afresh: what was missed meanwhile is unknown
                self._leading.add(job_id)
                log.info("job %s: this replica runs the job's closed loop (stragglers, drift)", job_id)
            for job_id in lost:
                self._leading.discard(job_id)
                if job_id in serving:
                    log.warning("job %s: this replica lost the job's closed loop to another", job_id)
        self._claim_after = {job_id: t for job_id, t in self._claim_after.items() if job_id in serving}
        with self._loop_conn.use() as s:
            rows = self._tail.read(s, sorted(self._leading))
            with self._lock:
                unknown = any(row.report.rank not in self._jobs[row.job_id].ranks
                              for row in rows if row.job_id in self._jobs)
            ranks: dict[str, dict[int, RankInfo]] = {}
            if self._leading and (unknown or now - self._ranks_read_at >= RANKS_REFRESH_S):
                ranks = self._stored_ranks(s, sorted(self._leading))
                self._ranks_read_at = now
        with self._lock:  # a rank registered on another replica is known here only from the database
            for job_id, stored in ranks.items():
                job = self._jobs.get(job_id)
                if job is not None:
                    for rank, info in stored.items():
                        job.ranks.setdefault(rank, info)
        by_run: dict[tuple[str, str], list[IterationReport]] = {}
        for row in rows:
            by_run.setdefault((row.job_id, row.run_id), []).append(row.report)
        with self._lock:
            for (job_id, run_id), reports in by_run.items():
                job = self._jobs.get(job_id)
                if job is not None and job.phase == "serving" and job_id in self._leading:
                    self._feed_control(job, run_id, reports)

    def _apply_decision(self, job_id: str, decision: Decision) -> None:
        """Act on what the detectors decided (the caller holds the lock)."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        if decision.stragglers is not None:
            self._apply_auto_stragglers(job, decision.stragglers)
        job = self._jobs.get(job_id)
        if decision.drift is not None and job is not None:
            self._apply_drift(job, decision.drift)

    def _apply_auto_stragglers(self, job: _Job, slow: Mapping[int, float]) -> None:
        """Make the job's automatic stragglers ``slow`` (pipeline -> pace relative to the others).

        A manual straggler (ReportStraggler) takes precedence: while the job has one, the detector
        changes nothing. Factors are relative to the fastest plan, as the manual ones: the relative pace
        times the straggler's own plan's time over the fastest plan's.
        """
        job_id = job.spec.job_id
        manual = set(job.stragglers) - job.auto_stragglers
        if manual:
            log.info("job %s: detector sees stragglers %s; manual stragglers %s take precedence", job_id,
                     sorted(slow) or "none", sorted(manual))
            return
        base = self._served(job)  # the cap's choice when a cap governs the job
        scale = base.iteration_time / job.frontier[0].iteration_time if base and job.frontier else 1.0
        wanted = {p: min(100.0, max(1.0 + 1e-6, rel * scale)) for p, rel in slow.items()}
        with self._writing(job_id) as (s, job):
            for p in list(job.auto_stragglers):
                if p not in wanted:
                    row = s.get(m.StragglerRow, (job_id, p))
                    if row is not None:
                        s.delete(row)
                    job.stragglers.pop(p, None)
                    job.auto_stragglers.discard(p)
            for p, factor in wanted.items():
                row = s.get(m.StragglerRow, (job_id, p))
                if row is None:
                    s.add(m.StragglerRow(job_id=job_id, pipeline_id=p, factor=factor, source="auto"))
                else:
                    row.factor, row.source = factor, "auto"
                job.stragglers[p] = factor
                job.auto_stragglers.add(p)
            self._bump(s, job)
        others = [p for p in range(job.spec.dp_degree) if p not in job.stragglers]
        plan = self._pipeline_plan(job, others[0]) if others else None
        log.info("job %s: automatic stragglers %s; the other pipelines run %s", job_id,
                 {p: round(f, 3) for p, f in wanted.items()} or "none (recovered)", plan.name if plan else "-")
        self._notify(job)
        self._control_event(job_id, "stragglers")

    def _apply_drift(self, job: _Job, verdict: DriftVerdict) -> None:
        """Rescale the profile and re-plan, or ask for a re-profile (the caller holds the lock)."""
        job_id = job.spec.job_id
        if job.phase != "serving" or job.profile is None or job.drift.state in ("replanning", "reprofile"):
            return
        csv_text = ""
        if verdict.action == "rescale" and job.profile.num_stages == job.spec.num_stages:
            scaled = rescale(job.profile, verdict.time_scales, verdict.energy_scales)
            kinds = {(st, k) for st, k in _csv_keys(job.profile_csv or "")}
            rows = [(ip.stage, ip.instruction, meas) for ip in scaled if (ip.stage, ip.instruction) in kinds
                    for meas in ip.measurements]
            try:
                csv_text = format_profile(rows)
                profile = self._parse_profile(job.spec, csv_text)
            except PerseusError as exc:
                log.warning("job %s: cannot rescale the profile (%s)", job_id, exc)
                csv_text = ""
        if csv_text:
            status = DriftStatus("replanning", f"{verdict.note}; re-planning from the profile scaled by the measurements")
        else:
            status = DriftStatus("reprofile", f"{verdict.note}; no uniform scale explains it: "
                                              f"run `perseus jobs reprofile {job_id}`")
        with self._writing(job_id) as (s, job):
            row = s.get_one(m.JobRow, job_id)
            if csv_text:
                job.profile_csv, job.profile = csv_text, profile
                job.compatible.clear()
                row.profile_csv = csv_text
            job.drift = status
            row.drift_json = status.to_json()
            self._bump(s, job)
        log.warning("job %s: drifted: %s", job_id, status.note)
        if csv_text:
            self._submit_frontier(job)
        self._notify(job)
        self._control_event(job_id, "drifted")

    def _store_replanned(self, s: Any, job: _Job, rows: Sequence[str], error: str) -> None:
        """The rescaled profile's frontier replaces the old one (the caller's transaction stores it)."""
        job_id = job.spec.job_id
        row = s.get_one(m.JobRow, job_id)
        if error:
            job.drift = DriftStatus("reprofile", f"{job.drift.note}; re-planning failed ({error}): "
                                                 f"run `perseus jobs reprofile {job_id}`")
        else:
            old = [p.id for p in job.frontier]
            s.execute(delete(m.PlanRow).where(m.PlanRow.job_id == job_id, m.PlanRow.id.in_(old)))
            for plan_id in old:
                job.plans.pop(plan_id, None)
            self._plan_cache.forget(old)
            job.frontier = self._store_frontier_rows(s, job, rows)
            if job.target.follows_frontier:
                target = dataclasses.replace(job.target, nearest=True)  # the new frontier may miss the target
                index, job.target_note = choose(job.frontier, target)
                job.plan_id = job.frontier[index].id
            row.plan_id = job.plan_id
            job.drift = DriftStatus("replanned", job.drift.note.replace("re-planning from", "re-planned from"))
            log.info("job %s: re-planned: frontier of %d plans; serving %s", job_id, len(rows),
                     job.plans[job.plan_id].name if job.plan_id in job.plans else "-")
        row.drift_json = job.drift.to_json()
        self._bump(s, job)

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
            self._job(job_id)
            with self._writing(job_id) as (s, job):
                plan_id = self._resolve(s, job, target, plan_json)
                job.target, job.plan_id = target, plan_id
                if not (target.follows_frontier and job.frontier):
                    job.target_note = ""  # only a frontier pick leaves a note
                row = s.get_one(m.JobRow, job_id)
                row.target_json, row.plan_id = target.to_json(), plan_id
                self._bump(s, job)
            self._notify(job)
            log.info("job %s: target %s%s", job_id, target.describe(),
                     f" ({job.target_note})" if job.target_note else "")
            self._resolve_after(f"job {job_id} target changed")
            return self._view(job)

    def report_straggler(self, job_id: str, pipeline_id: int, factor: float) -> tuple[JobView, str]:
        """Record a pipeline's slowdown (1.0 = recovered); returns the job and the others' plan name.

        A manual straggler overrides the detector: while a job has one, automatic stragglers do not
        change. Reporting 1.0 clears the pipeline's entry (manual or automatic) and hands the job back to
        the detector, which sets it again at its next decision if the pipeline is still slow.
        """
        if not (math.isfinite(factor) and 1.0 <= factor <= 100.0):
            raise InputError("factor", f"must be in [1, 100], got {factor}")
        with self._lock:
            job = self._job(job_id)
            if not 0 <= pipeline_id < job.spec.dp_degree:
                raise InputError("pipeline_id", f"{pipeline_id} is out of range for dp_degree {job.spec.dp_degree}")
            with self._writing(job_id) as (s, job):
                row = s.get(m.StragglerRow, (job_id, pipeline_id))
                job.auto_stragglers.discard(pipeline_id)
                if factor <= 1.0:
                    if row is not None:
                        s.delete(row)
                    job.stragglers.pop(pipeline_id, None)
                else:
                    if row is None:
                        s.add(m.StragglerRow(job_id=job_id, pipeline_id=pipeline_id, factor=factor, source="manual"))
                    else:
                        row.factor, row.source = factor, "manual"
                    job.stragglers[pipeline_id] = factor
                self._bump(s, job)
            self._notify(job)
            others = [p for p in range(job.spec.dp_degree) if job.stragglers.get(p, 1.0) <= 1.0]
            plan = self._pipeline_plan(job, others[0]) if others else None
            return self._view(job), plan.name if plan else ""

    # ---------------------------------------------------------------- the cluster power cap

    def set_power_cap(self, watts: float | None) -> capping.CapView:
        """Set the cap to ``watts`` (None: clear it), re-choose every job's plan, return the new state."""
        if watts is not None:
            watts = capping.check_watts(watts)
        with self._lock:
            with self._sessions() as s:
                row = s.scalar(select(m.PowerCapRow).where(m.PowerCapRow.id == 1).with_for_update())
                if row is None:
                    row = m.PowerCapRow(id=1, version=0, status_json="{}")
                    s.add(row)
                row.watts, row.version = watts, row.version + 1
                try:
                    s.commit()
                except IntegrityError:  # another replica created the row a moment ago: update it
                    s.rollback()
                    row = s.get_one(m.PowerCapRow, 1, with_for_update=True)
                    row.watts, row.version = watts, row.version + 1
                    s.commit()
            log.info("power cap %s", "cleared" if watts is None else f"set to {watts:.0f} W")
            self.resolve_cap("the cap changed")
            return self.power_cap()

    def set_weight(self, job_id: str, weight: float) -> JobView:
        """How much the job's slowdown counts under the cap; the cap is re-solved."""
        weight = capping.check_weight(weight)
        with self._lock:
            self._job(job_id)
            with self._writing(job_id) as (s, job):
                job.weight = weight
                s.get_one(m.JobRow, job_id).weight = weight
                self._bump(s, job)
            log.info("job %s: weight %g", job_id, weight)
            self._resolve_after(f"job {job_id} weight changed")
            return self._view(job)

    def power_cap(self) -> capping.CapView:
        """The cap, the state of its last solution and every serving job's planned and measured power."""
        with self._lock:
            with self._sessions() as s:
                self._sync_all(s)
                row = s.get(m.PowerCapRow, 1)
                measured = self._measured.read(s, list(self._jobs))
            jobs = []
            for job in sorted(self._jobs.values(), key=lambda j: j.spec.job_id):
                served = self._served(job)
                if job.phase != "serving" or served is None:
                    continue
                fastest = job.frontier[0].iteration_time if job.frontier else served.iteration_time
                capped = job.target.follows_frontier and bool(job.frontier)
                floor = capping.floor_of(job.target, fastest) if capped else math.inf
                jobs.append(capping.CappedJobView(
                    job.spec.job_id, served.name, capping.plan_power(served, job.spec.dp_degree),
                    measured.get(job.spec.job_id, 0.0), job.weight, served.iteration_time / fastest - 1.0,
                    0.0 if math.isinf(floor) else floor, not capped))
            if row is None:
                return capping.CapView(None, 0, capping.CapStatus(), tuple(jobs))
            return capping.CapView(row.watts, row.version, capping.CapStatus.from_json(row.status_json), tuple(jobs))

    def resolve_cap(self, reason: str) -> None:
        """Choose every serving job's plan under the cap again (call after any change that may move it:
        a job starts serving, ends, drifts or is re-planned; the cap, a target or a weight changes).

        The replica that saw the change solves, holding the cap row's lock so replicas solve one at a
        time; jobs whose plan changes are written (version bumped, published) in one transaction.
        """
        with self._lock:
            if self._closed:
                return
            changed: list[_Job] = []
            with self._sessions() as s:
                row = s.scalar(select(m.PowerCapRow).where(m.PowerCapRow.id == 1).with_for_update())
                stale = self._sync_all(s)
                watts = row.watts if row is not None else None
                plans: dict[str, int] = {}
                status = capping.CapStatus()
                if watts is not None:
                    plans, status = capping.assign(watts, self._cap_inputs())
                for job in self._jobs.values():
                    want = plans.get(job.spec.job_id)
                    if job.cap_plan_id != want:
                        s.scalar(select(m.JobRow.version).where(m.JobRow.id == job.spec.job_id).with_for_update())
                        s.get_one(m.JobRow, job.spec.job_id).cap_plan_id = want
                        job.cap_plan_id = want
                        self._bump(s, job)
                        self._feed.publish(s, job.spec.job_id, job.version)
                        changed.append(job)
                before = capping.CapStatus.from_json(row.status_json) if row is not None else capping.CapStatus()
                if row is not None and (changed or dataclasses.replace(before, solved_at=0.0)
                                        != dataclasses.replace(status, solved_at=0.0)):
                    row.status_json, row.version = status.to_json(), row.version + 1
                s.commit()
            if watts is not None and not status.feasible and (before.feasible or before.note != status.note):
                log.warning("power cap %.0f W cannot be met: %s (%s)", watts, status.note, reason)
            elif watts is not None and status.feasible and not before.feasible:
                log.info("power cap %.0f W met again (%s)", watts, reason)
            for job in changed:
                log.info("job %s: power cap %s (%s)", job.spec.job_id,
                         f"serves {job.plans[job.cap_plan_id].name}" if job.cap_plan_id is not None else "released",
                         reason)
            for job_id in {*stale, *(j.spec.job_id for j in changed)}:
                for callback in self._listeners:
                    callback(job_id)

    def _cap_feedback(self) -> None:
        """Close the loop: while a cap is set, each serving job's measured power over its planned power
        scales all its plans' power; a ratio that moved by more than :data:`capping.RATIO_DEADBAND`
        re-solves the cap.

        Measured: every rank's latest reports of the plan its pipeline runs now (the served plan; with a
        straggler, the other pipelines run a slower one); planned: those plans' power, pipeline by pipeline.
        Ranks are read from the database: with replicas, some registered on another one."""
        with self._lock:
            if self._closed:
                return
            live, serving = list(self._jobs), [j for j, job in self._jobs.items() if job.phase == "serving"]
        stored: dict[str, dict[int, RankInfo]] = {}
        with self._sessions() as s:  # not under the lock: the queries wait for the database (and the GIL)
            watts = s.scalar(select(m.PowerCapRow.watts).where(m.PowerCapRow.id == 1))
            if watts is not None:
                self._measured.read(s, live)
                stored = self._stored_ranks(s, serving)
        with self._lock:
            if self._closed:
                return
            if watts is None:
                self._ratios.clear()
                return
            moved = []
            for job_id, job in self._jobs.items():
                ranks = stored.get(job_id, {})
                if job.phase != "serving" or self._served(job) is None or not ranks:
                    continue
                running: dict[int, StoredPlan] = {}
                for p in {info.pipeline_id for info in ranks.values()}:
                    plan = self._pipeline_plan(job, p)
                    if plan is not None:
                        running[p] = plan
                if len(running) < len({info.pipeline_id for info in ranks.values()}):
                    continue
                measured = self._measured.under_plans(
                    job_id, {rank: running[info.pipeline_id].name for rank, info in ranks.items()})
                if measured is None:
                    continue
                planned = sum(capping.plan_power(plan, 1) for plan in running.values())
                low, high = capping.RATIO_RANGE
                ratio = min(high, max(low, measured / planned))
                if abs(ratio / self._ratios.get(job_id, 1.0) - 1.0) > capping.RATIO_DEADBAND:
                    self._ratios[job_id] = ratio
                    moved.append(f"{job_id} {ratio:.3f}")
            if moved:
                self.resolve_cap(f"measured/planned power: {', '.join(moved)}")

    def _resolve_after(self, reason: str) -> None:
        """:meth:`resolve_cap` after a change already committed: a failure is logged, not raised (the
        change stands; the next event or cap change solves again)."""
        try:
            self.resolve_cap(reason)
        except Exception:
            log.exception("power cap: cannot re-solve after: %s", reason)

    def _cap_inputs(self) -> list[capping.CapInput]:
        inputs = []
        for job in sorted(self._jobs.values(), key=lambda j: j.spec.job_id):
            if job.phase != "serving":
                continue
            spec = job.spec
            if job.target.follows_frontier and job.frontier:
                inputs.append(capping.CapInput(spec.job_id, spec.dp_degree, job.weight, job.target,
                                               frontier=tuple(job.frontier), ratio=self._ratios.get(spec.job_id, 1.0)))
            elif job.plan_id in job.plans:
                inputs.append(capping.CapInput(spec.job_id, spec.dp_degree, job.weight, job.target,
                                               pinned_plan=job.plans[job.plan_id],
                                               ratio=self._ratios.get(spec.job_id, 1.0)))
        return inputs

    def _sync_all(self, s: Any) -> list[str]:
        """Bring every cached job up to the database (other replicas' jobs and changes); returns those re-read."""
        stored = dict(s.execute(select(m.JobRow.id, m.JobRow.version)).all())
        for gone in set(self._jobs) - set(stored):
            self._jobs.pop(gone, None)
        stale = [job_id for job_id, version in stored.items()
                 if job_id not in self._jobs or self._jobs[job_id].version != version]
        if stale:
            self._jobs.update(self._read_jobs(s, stale))
        return stale

    def _served(self, job: _Job) -> StoredPlan | None:
        """The plan the job's non-straggling pipelines run: the cap's choice, else the target's."""
        if job.cap_plan_id is not None and job.target.follows_frontier and job.cap_plan_id in job.plans:
            return job.plans[job.cap_plan_id]
        return job.plans.get(job.plan_id) if job.plan_id is not None else None

    # ---------------------------------------------------------------- delete and re-profile

    def delete_job(self, job_id: str) -> JobView:
        """Forget a job and every row that refers to it; returns the job as it was."""
        with self._lock:
            view = self._view(self._job(job_id))
            self.cancel_frontier(job_id)
            with self._writing(job_id) as (s, job):
                # Every table with a foreign key to the jobs table, children first (covers future tables).
                for table in reversed(Base.metadata.sorted_tables):
                    for fk in table.foreign_keys:
                        if fk.column.table.name == m.JobRow.__tablename__:
                            s.execute(delete(table).where(fk.parent == job_id))
                s.execute(delete(m.JobRow).where(m.JobRow.id == job_id))
                job.version += 1  # the replicas re-read it, find nothing and drop it
            self._jobs.pop(job_id, None)
            self._plan_cache.forget(job.plans)
            self._control.forget(job_id)
            self._notify(job)  # watchers wake up to NOT_FOUND
            log.info("job %s deleted (%d ranks, %d iteration reports)", job_id, view.num_ranks,
                     view.num_iteration_reports)
            self._resolve_after(f"job {job_id} deleted")
            return view

    def reprofile_job(self, job_id: str) -> JobView:
        """Drop the job's profile, frontier and profiling reports and start its sweep again.

        A user plan chosen as the target is kept (it needs no profile); frontier and baseline
        plans are dropped and chosen again from the new frontier.
        """
        with self._lock:
            self._job(job_id)
            self.cancel_frontier(job_id)
            with self._writing(job_id) as (s, job):
                keep = job.plan_id if job.target.kind == "plan" else None
                if not job.profiling.frequencies and job.ranks:
                    job.profiling = dataclasses.replace(job.profiling,
                                                        frequencies=job.ranks[min(job.ranks)].frequencies)
                job.profiling = dataclasses.replace(job.profiling, dropped=())  # e.g. the power cap was lifted
                s.execute(delete(m.ProfileReportRow).where(m.ProfileReportRow.job_id == job_id))
                s.execute(delete(m.PlanRow).where(m.PlanRow.job_id == job_id, m.PlanRow.id != (keep or -1)))
                row = s.get_one(m.JobRow, job_id)
                row.phase, row.profile_csv, row.error, row.plan_id = "profiling", None, "", keep
                row.cap_plan_id = job.cap_plan_id = None
                row.profiling_json = job.profiling.to_json()
                self._bump(s, job)
                job.phase, job.profile, job.profile_csv, job.error, job.plan_id = "profiling", None, None, "", keep
                self._plan_cache.forget(set(job.plans) - {keep})
                job.plans = {keep: job.plans[keep]} if keep is not None else {}
                job.frontier, job.measured, job.num_profile_reports, job.target_note = [], {}, 0, ""
                job.compatible.clear()
                job.drift, row.drift_json = DriftStatus(), "{}"
            self._control.reset_drift(job_id)
            self._notify(job)
            log.info("job %s: re-profiling", job_id)
            self._resolve_after(f"job {job_id} re-profiling")
            return self._view(job)

    # ---------------------------------------------------------------- internals

    def _cached_or_stored(self, job_id: str) -> _Job | None:
        """The cached job, else the job as another replica stored it, else None."""
        job = self._jobs.get(job_id)
        if job is None:
            with self._sessions() as s:
                job = self._refresh(s, job_id)
        return job

    def _job(self, job_id: str) -> _Job:
        job = self._cached_or_stored(job_id)
        if job is None:
            raise NotFound(f"job_id: no job {job_id!r}")
        return job

    def _job_rank(self, job_id: str, rank: int) -> tuple[_Job, RankInfo]:
        """The job and one of its ranks (re-read once if the rank registered with another replica)."""
        job = self._job(job_id)
        info = job.ranks.get(rank)
        if info is None and self._feed.shared:
            with self._sessions() as s:
                job = self._refresh(s, job_id) or job
            info = job.ranks.get(rank)
        if info is None:
            raise NotFound(f"rank: rank {rank} of job {job_id!r} is not registered")
        return job, info

    def _parse_profile(self, spec: JobSpec, text: str) -> PipelineProfile:
        if len(text) > 16 * 1024 * 1024:
            raise InputError("profile_csv", "larger than 16 MiB")
        profile = parse_profile(text, source="profile_csv", blocking_power=spec.blocking_power,
                                num_stages=spec.num_stages)
        if profile.num_stages != spec.num_stages:
            raise InputError("profile_csv", f"has {profile.num_stages} stages, job has {spec.num_stages}")
        check_profile_kinds(profile, spec.schedule)
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

    def _plan_named(self, job: _Job, name: str) -> FrequencyPlan | None:
        """The job's stored plan called ``name`` (the newest if several are), decoded."""
        found = None
        for stored in job.plans.values():
            if stored.name == name and stored.power_limits is None:
                found = stored
        return self._plan_cache.get(found) if found is not None else None

    def _load_plan(self, plan_id: int) -> FrequencyPlan:
        """Plan ``plan_id`` decoded from its compact row (the cache's loader)."""
        with self._sessions() as s:
            text = s.scalar(select(m.PlanRow.plan_json).where(m.PlanRow.id == plan_id))
        if text is None:
            raise NotFound(f"plan: plan row {plan_id} was deleted meanwhile")
        return decode_plan(text, source=f"plan row {plan_id}")

    def plan_jsons(self, job_id: str, plans: Sequence[StoredPlan]) -> list[str]:
        """The plan JSON of each of the job's ``plans`` (see :meth:`iter_plan_jsons`)."""
        return list(self.iter_plan_jsons(job_id, plans))

    def iter_plan_jsons(self, job_id: str, plans: Sequence[StoredPlan]) -> Generator[str, None, None]:
        """The plan JSON of each of the job's ``plans``, one at a time. Plans not decoded already are read
        in batches of :data:`EXPORT_BATCH` rows and decoded as they are consumed, not cached (an export
        must not evict the plans being served); a consumer that stops early (a full GetFrontier page)
        decodes no more. No lock or session is held between two plans."""
        for start in range(0, len(plans), EXPORT_BATCH):
            batch = plans[start : start + EXPORT_BATCH]
            with self._lock:
                decoded = [self._plan_cache.cached(p) for p in batch]
            missing = [p.id for p, plan in zip(batch, decoded, strict=True) if plan is None]
            rows: dict[int, str] = {}
            if missing:
                with self._sessions() as s:
                    rows = {i: t for i, t in s.execute(select(m.PlanRow.id, m.PlanRow.plan_json).where(
                        m.PlanRow.job_id == job_id, m.PlanRow.id.in_(missing)))}
            for stored, plan in zip(batch, decoded, strict=True):
                if plan is None:
                    if stored.id not in rows:
                        raise NotFound(f"plan: {stored.name!r} of job {job_id!r} was deleted meanwhile")
                    plan = decode_plan(rows.pop(stored.id), source=f"plan row {stored.id}")
                yield plan.to_json()

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
        index, job.target_note = choose(job.frontier, target)
        return job.frontier[index].id

    def _store_plan(
        self, s: Any, job: _Job, kind: str, plan: FrequencyPlan, power_limits: tuple[float, ...] | None,
        position: int = 0,
    ) -> StoredPlan:
        summary = RowSummary(plan.name, plan.iteration_time, plan.energy)
        return self._store_row(s, job, kind, encode_plan(plan), summary, power_limits, position)

    def _store_frontier_rows(
        self, s: Any, job: _Job, rows: Sequence[str], summaries: Sequence[RowSummary] | None = None
    ) -> list[StoredPlan]:
        """Store a computed frontier's compact rows as they are (fastest first); returns their summaries."""
        where = f"frontier of job {job.spec.job_id}"
        summaries = summaries or [row_summary(text, source=where) for text in rows]
        return [self._store_row(s, job, "frontier", text, summary, None, i)
                for i, (text, summary) in enumerate(zip(rows, summaries, strict=True))]

    def _store_row(
        self, s: Any, job: _Job, kind: str, text: str, summary: RowSummary, power_limits: tuple[float, ...] | None,
        position: int,
    ) -> StoredPlan:
        row = m.PlanRow(job_id=job.spec.job_id, kind=kind, position=position, name=summary.name,
                        iteration_time=summary.iteration_time, energy=summary.energy, plan_json=text,
                        power_limits_json=json.dumps(list(power_limits)) if power_limits is not None else None)
        s.add(row)
        s.flush()
        if kind != "frontier":
            job.compatible.clear()  # a plan with new clocks: re-check ranks as they (re)register
        stored = StoredPlan(row.id, kind, summary.name, summary.iteration_time, summary.energy, power_limits)
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
        if not job.profiling.frequencies:
            return -1
        sweep = job.profiling.stage_frequencies(stage)
        return next_frequency(sweep, job.measured.get(stage, {}), job.profiling.early_stop_rises)

    def _finish_profiling(self, s: Any, job: _Job) -> None:
        """Every stage finished its sweep: assemble the profile and start optimizing."""
        rows: list[tuple[int, str, Measurement]] = []
        dropped = set(job.profiling.dropped)  # a clock one replica of a stage could not hold is left out
        for stage in range(job.spec.num_stages):
            for freq in sorted(job.measured.get(stage, {}), reverse=True):
                if (stage, freq) in dropped:
                    continue
                at_freq = job.measured[stage][freq]
                for kind in ALL_KINDS:
                    per_rank = at_freq.get(kind)
                    # A split backward counts only where both parts were measured (early stops differ).
                    if per_rank and (kind not in SPLIT_KINDS or all(at_freq.get(k) for k in SPLIT_KINDS)):
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

    def _submit_frontier(self, job: _Job) -> None:
        """Queue the job's frontier here unless another replica computes it (call after the commit)."""
        job_id = job.spec.job_id
        if self._closed or job_id in self._computing or not self._feed.try_claim(job_id):
            return
        if self._feed.shared:  # the claim may come just after another replica finished the job
            with self._sessions() as s:
                fresh = self._refresh(s, job_id)
            if fresh is None or (fresh.phase != "optimizing" and fresh.drift.state != "replanning"):
                self._feed.release(job_id)
                return
            job = fresh
        spec = job.spec
        self._computing.add(job_id)
        self._pool.submit(FrontierRequest(job_id, job.profile_csv or "", spec.blocking_power, spec.schedule,
                                          spec.num_stages, spec.num_microbatches, spec.num_chunks))

    def _frontier_done(self, request: FrontierRequest, result: list[str] | None, error: str) -> None:
        """The pool's answer (from its supervising thread): store the frontier or the job's failure."""
        job_id = request.job_id
        with self._lock:
            if self._closed or job_id not in self._computing:
                return
            self._computing.discard(job_id)
            try:
                self._store_frontier(request, result, error)
                self._resolve_after(f"job {job_id} frontier ready")
            except NotFound:
                pass  # deleted meanwhile
            except Exception:  # the database went away: the job stays "optimizing" and is retried
                log.exception("job %s: cannot store its frontier", job_id)
            finally:
                self._feed.release(job_id)

    def _store_frontier(self, request: FrontierRequest, result: list[str] | None, error: str) -> None:
        job_id = request.job_id
        rows = list(result or ())
        plans = [row_summary(text, source=f"frontier of job {job_id}") for text in rows]
        if result is not None and not plans:
            error = "the frontier is empty"
        replanned = False
        with self._writing(job_id) as (s, job):
            replanning = job.phase == "serving" and job.drift.state == "replanning"
            if (job.phase != "optimizing" and not replanning) or job.profile_csv != request.profile_csv:
                return  # re-profiled or finished elsewhere meanwhile
            if replanning:
                self._store_replanned(s, job, rows, error)
                replanned = True
            elif error:
                log.error("job %s: frontier computation failed: %s", job_id, error)
                job.phase, job.error = "failed", f"frontier computation failed: {error}"
                row = s.get_one(m.JobRow, job_id)
                row.phase, row.error = job.phase, job.error
                self._bump(s, job)
            else:
                job.frontier = self._store_frontier_rows(s, job, rows, plans)
                # Frontier targets pick their plan now; a baseline asked for before there was a profile
                # is built now; a user plan was stored when it was set.
                if job.target.follows_frontier or job.plan_id is None:
                    try:
                        job.plan_id = self._resolve(s, job, job.target, "")
                    except PerseusError as exc:  # e.g. a baseline that cannot be built: serve the fastest
                        log.warning("job %s: target %s unusable (%s); serving fastest", job_id,
                                    job.target.describe(), exc)
                        job.target_note = f"target {job.target.describe()} unusable ({exc}); serving fastest"
                        job.target, job.plan_id = TargetSpec(), job.frontier[0].id
                job.phase = "serving"
                row = s.get_one(m.JobRow, job_id)
                row.phase, row.plan_id, row.target_json = "serving", job.plan_id, job.target.to_json()
                self._bump(s, job)
                log.info("job %s: frontier of %d plans; serving %s", job_id, len(plans),
                         job.plans[job.plan_id].name if job.plan_id else "-")
        self._notify(job)
        if replanned:
            self._control.reset_drift(job_id)
            self._control_event(job_id, "replanned")

    def _pipeline_plan(self, job: _Job, pipeline_id: int) -> StoredPlan | None:
        """The plan a pipeline runs: the target's, or a slower one to match a straggler."""
        base = self._served(job)
        if base is None or not job.target.follows_frontier or not job.frontier:
            return base
        if job.stragglers.get(pipeline_id, 1.0) > 1.0:
            return base  # the straggler itself keeps its plan
        slow = [f for p, f in job.stragglers.items() if f > 1.0]
        if not slow:
            return base
        pace = job.frontier[0].iteration_time * max(slow)
        if pace <= base.iteration_time:
            return base
        return job.frontier[pace_index(job.frontier, pace)]

    def _decoded_for(self, job: _Job, info: RankInfo) -> bool:
        """Whether the rank's schedule can be built without reading a plan row (nothing to decode)."""
        stored = self._pipeline_plan(job, info.pipeline_id) if job.phase == "serving" else None
        return stored is None or stored.power_limits is not None or self._plan_cache.cached(stored) is not None

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
        view: dict[str, Any] = dict(plan_name=stored.name, plan_id=stored.id,
                                    expected_iteration_time=stored.iteration_time, expected_energy=stored.energy)
        if stored.power_limits is not None:
            watts = stored.power_limits[info.stage if len(stored.power_limits) > 1 else 0]
            return ScheduleView(**common, **view, mode="power_limit", power_limit=watts)
        plan = self._plan_cache.get(stored)
        instructions = tuple(
            p if p.frequency in info.frequencies else
            PlannedInstruction(p.instruction, p.microbatch, nearest(info.frequencies, p.frequency), p.chunk)
            for p in plan.stages[info.stage]
        )
        return ScheduleView(**common, **view, mode="plan", instructions=instructions)

    def _view(self, job: _Job, measured_power: float = 0.0) -> JobView:
        if job.phase == "profiling":
            stages_profiled = sum(self._next_frequency(job, st) is None for st in range(job.spec.num_stages))
        else:
            stages_profiled = job.spec.num_stages if job.profile is not None else 0
        stored = self._served(job)
        return JobView(
            spec=job.spec, phase=job.phase, target=job.target,
            plan_name=stored.name if stored is not None else "",
            version=job.version, num_ranks=len(job.ranks), num_profile_reports=job.num_profile_reports,
            num_iteration_reports=job.num_iteration_reports, frontier_size=len(job.frontier), error=job.error,
            stragglers=dict(job.stragglers), created_at=job.created_at, stages_profiled=stages_profiled,
            runs=tuple(stats.view(run_id) for run_id, stats in job.runs.items()),
            target_note=job.target_note, plan_iteration_time=stored.iteration_time if stored else 0.0,
            plan_energy=stored.energy if stored else 0.0, weight=job.weight,
            drift=job.drift.state, drift_note=job.drift.note, sweep_note=_short(job.profiling.dropped_note()),
            auto_stragglers=tuple(sorted(job.auto_stragglers)),
            planned_power=capping.plan_power(stored, job.spec.dp_degree) if stored else 0.0,
            measured_power=measured_power,
            power_capped=stored is not None and stored.id == job.cap_plan_id and job.target.follows_frontier,
        )


def _short(text: str, limit: int = 1024) -> str:
    """``text`` cut to ``limit`` characters (a job view line stays one readable line)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _csv_keys(csv_text: str) -> set[tuple[int, str]]:
    """(stage, instruction) pairs a profile CSV lists (the derived fused backward is not one)."""
    keys = set()
    for line in csv_text.splitlines()[1:]:
        parts = line.split(",")
        if len(parts) >= 2 and parts[0].strip().isdigit():
            keys.add((int(parts[0]), parts[1].strip()))
    return keys


def _stored(row: Any) -> StoredPlan:
    """A plan row's summary (``row`` holds the summary columns, not the clocks)."""
    limits = tuple(float(w) for w in json.loads(row.power_limits_json)) if row.power_limits_json else None
    return StoredPlan(row.id, row.kind, row.name, row.iteration_time, row.energy, limits)
