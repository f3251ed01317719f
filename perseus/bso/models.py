"""Database tables of the batch size optimizer (on the shared :class:`perseus.db.Base`).

``bso_jobs`` holds one row per recurring job: its spec, the best converged cost, a trial counter and
an optimistic ``version``. Every state change of a job first takes ``SELECT ... FOR UPDATE`` on its
row, so replicas sharing one PostgreSQL serialise per job; the version column additionally turns a
lost update on backends without row locks (SQLite) into a retryable ``StaleDataError``.
``bso_trials`` holds one row per run (trial) with its accumulated time, energy and cost.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from perseus.db import Base


class BsoJob(Base):
    __tablename__ = "bso_jobs"

    job_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    default_batch_size: Mapped[int] = mapped_column(Integer)
    batch_sizes: Mapped[list[int]] = mapped_column(JSON)
    eta: Mapped[float] = mapped_column(Float)
    beta: Mapped[float] = mapped_column(Float)
    target_metric: Mapped[float] = mapped_column(Float)
    higher_is_better: Mapped[bool] = mapped_column(Boolean)
    max_epochs: Mapped[int] = mapped_column(Integer)
    window_size: Mapped[int] = mapped_column(Integer)
    num_pruning_rounds: Mapped[int] = mapped_column(Integer)
    max_power: Mapped[float] = mapped_column(Float)
    lease_seconds: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    best_cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    next_trial_number: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy's declarative API)


class BsoTrial(Base):
    __tablename__ = "bso_trials"
    __table_args__ = (UniqueConstraint("job_id", "trial_number", name="uq_bso_trials_job_trial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(255), ForeignKey("bso_jobs.job_id", ondelete="CASCADE"), index=True)
    trial_number: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    time: Mapped[float] = mapped_column(Float, default=0.0)
    energy: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    last_metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(String(255), default="")
    decision: Mapped[int] = mapped_column(Integer, default=0)  # last answer given (search.Decision value)
    started_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    lease_expires_at: Mapped[float] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
