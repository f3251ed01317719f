"""SQLAlchemy tables of the scheduler: jobs, ranks, plans and every acknowledged report.

Everything a restarted server needs is here; the in-memory state of
:mod:`perseus.server.core` is rebuilt from these rows on start.
"""

from __future__ import annotations

import time

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false

from perseus.db import Base


def _now() -> float:
    return time.time()


class JobRow(Base):
    """One training job and the scheduler's decisions about it."""

    __tablename__ = "scheduler_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(256), default="")
    partition: Mapped[str] = mapped_column(String(256), default="")
    schedule: Mapped[str] = mapped_column(String(32))
    num_stages: Mapped[int] = mapped_column(Integer)
    num_microbatches: Mapped[int] = mapped_column(Integer)
    num_chunks: Mapped[int] = mapped_column(Integer, default=1)
    dp_degree: Mapped[int] = mapped_column(Integer, default=1)
    tp_degree: Mapped[int] = mapped_column(Integer, default=1)
    blocking_power: Mapped[float] = mapped_column(Float)
    phase: Mapped[str] = mapped_column(String(16))
    """profiling | optimizing | serving | failed"""
    version: Mapped[int] = mapped_column(Integer, default=1)
    target_json: Mapped[str] = mapped_column(Text, default="{}")
    """The target as JSON, see :mod:`perseus.server.targets`."""
    plan_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The plan the target selected (non-straggling pipelines run it)."""
    profiling_json: Mapped[str] = mapped_column(Text, default="{}")
    """Profiling configuration and the frequency list being swept."""
    profile_csv: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    drift_json: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    """The closed loop's drift state (:class:`perseus.server.control.DriftStatus` as JSON)."""
    created_at: Mapped[float] = mapped_column(Float, default=_now)
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1.0")
    """How much the job's slowdown counts under the cluster power cap."""
    cap_plan_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The plan the power cap chose (overrides ``plan_id``); NULL without a cap or when not capped."""


class PowerCapRow(Base):
    """The cluster power cap (one row, id 1) and the state of its last solution (no job refers to it, hence
    no ``scheduler_`` prefix: those tables are all per job)."""

    __tablename__ = "cluster_power_cap"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    watts: Mapped[float | None] = mapped_column(Float, nullable=True)
    """The budget; NULL: no cap."""
    version: Mapped[int] = mapped_column(Integer, default=1)
    status_json: Mapped[str] = mapped_column(Text, default="{}")
    """The last solution: feasible, note, exact, weighted slowdown, lower bound (see perseus.server.capping)."""


class RankRow(Base):
    """One registered rank (GPU process) of a job."""

    __tablename__ = "scheduler_ranks"

    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("scheduler_jobs.id"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage: Mapped[int] = mapped_column(Integer)
    pipeline_id: Mapped[int] = mapped_column(Integer)
    gpu_name: Mapped[str] = mapped_column(String(256), default="")
    frequencies_json: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[float] = mapped_column(Float, default=_now)


class PlanRow(Base):
    """A plan a job can run: a frontier point, a user plan or a baseline."""

    __tablename__ = "scheduler_plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("scheduler_jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """frontier | user | baseline"""
    position: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(256))
    iteration_time: Mapped[float] = mapped_column(Float)
    energy: Mapped[float] = mapped_column(Float)
    plan_json: Mapped[str] = mapped_column(Text)
    power_limits_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Per-stage watts for power-limit baselines; NULL for clock plans."""


class ProfileReportRow(Base):
    """One rank's per-instruction measurement at one frequency (profiling mode)."""

    __tablename__ = "scheduler_profile_reports"
    __table_args__ = (UniqueConstraint("job_id", "rank", "frequency", "instruction"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("scheduler_jobs.id"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    stage: Mapped[int] = mapped_column(Integer)
    frequency: Mapped[int] = mapped_column(Integer)
    instruction: Mapped[str] = mapped_column(String(16))
    time: Mapped[float] = mapped_column(Float)
    energy: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, default=_now)


class IterationReportRow(Base):
    """Time and energy of one training iteration of one rank."""

    __tablename__ = "scheduler_iteration_reports"
    __table_args__ = (UniqueConstraint("job_id", "run_id", "rank", "iteration", name="uq_scheduler_iteration_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("scheduler_jobs.id"), index=True)
    run_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    """The training run (attempt); a rerun of a job never collides with an earlier run's reports."""
    rank: Mapped[int] = mapped_column(Integer)
    iteration: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[float] = mapped_column(Float)
    energy: Mapped[float] = mapped_column(Float)
    plan_name: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[float] = mapped_column(Float, default=_now)
    measure_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The rank changed no GPU setting (``--measure_only``)."""
    clock_mhz: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    """Time-weighted mean clock read back over the iteration's instructions; 0: not read."""
    planned_instructions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    at_planned_clock: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Planned instructions that read back their planned clock."""
    busy_time: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    """Seconds the rank spent in instructions (what the closed loop compares with the plan); 0: not sent."""
    busy_energy: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class StragglerRow(Base):
    """A pipeline currently running slower than planned."""

    __tablename__ = "scheduler_stragglers"

    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("scheduler_jobs.id"), primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    factor: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16), default="manual", server_default="manual")
    """``manual`` (ReportStraggler) or ``auto`` (the server's detector); manual ones take precedence."""
