"""Transactional state of the batch size optimizer: what the gRPC servicer does, minus gRPC.

Every call runs in its own transaction that starts by locking the job row
(``SELECT ... FOR UPDATE``) and ends by bumping the job's optimistic version. On PostgreSQL the row
lock serialises replicas per job; on SQLite (whose driver reads outside a write transaction) the
version check turns a concurrent change into ``StaleDataError``. Conflicts, deadlocks and "database
is locked" are retried with a fresh transaction, so a decision is always made on current rows.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified
from sqlalchemy.orm.exc import StaleDataError

from perseus.bso.models import BsoJob, BsoTrial
from perseus.bso.search import (
    Decision,
    TrialKind,
    TrialRecord,
    TrialStatus,
    epoch_decision,
    next_assignment,
    pruning_state,
    zeus_cost,
)
from perseus.bso.spec import JobSpec
from perseus.errors import InputError, PerseusError

T = TypeVar("T")

_SPEC_FIELDS = (
    "default_batch_size", "batch_sizes", "target_metric", "max_epochs", "higher_is_better", "eta", "beta",
    "window_size", "num_pruning_rounds", "max_power", "lease_seconds", "seed",
)  # fmt: skip


class NotFoundError(PerseusError, LookupError):
    """Unknown job or trial."""


class ConflictError(PerseusError):
    """The request contradicts stored state (e.g. re-registering a job with another spec)."""


@dataclass(frozen=True)
class Assigned:
    job_id: str
    trial_number: int
    batch_size: int
    kind: TrialKind
    lease_seconds: float


@dataclass(frozen=True)
class EpochAnswer:
    decision: Decision
    cost: float
    message: str


@dataclass(frozen=True)
class TrialView:
    trial_number: int
    batch_size: int
    kind: str
    status: str
    epochs: int
    time: float
    energy: float
    cost: float
    reason: str


@dataclass(frozen=True)
class JobView:
    spec: JobSpec
    phase: str
    survivors: tuple[int, ...]
    best_cost: float | None
    best_batch_size: int | None
    trials: tuple[TrialView, ...]


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, StaleDataError | IntegrityError):
        return True
    if isinstance(exc, DBAPIError):
        text = str(exc.orig).lower()
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        # 40001 serialization failure, 40P01 deadlock; SQLite's "database is locked".
        return code in ("40001", "40P01") or "database is locked" in text or "deadlock" in text
    return False


def spec_of(job: BsoJob) -> JobSpec:
    return JobSpec(
        job_id=job.job_id,
        default_batch_size=job.default_batch_size,
        batch_sizes=tuple(job.batch_sizes),
        target_metric=job.target_metric,
        max_epochs=job.max_epochs,
        higher_is_better=job.higher_is_better,
        eta=job.eta,
        beta=job.beta,
        window_size=job.window_size,
        num_pruning_rounds=job.num_pruning_rounds,
        max_power=job.max_power,
        lease_seconds=job.lease_seconds,
        seed=job.seed,
    )


def _touch(job: BsoJob, now: float) -> None:
    """Force an UPDATE of the job row so its optimistic version is checked and bumped."""
    job.updated_at = now
    flag_modified(job, "updated_at")


def _record(trial: BsoTrial) -> TrialRecord:
    return TrialRecord(trial.trial_number, trial.batch_size, TrialKind(trial.kind), TrialStatus(trial.status), trial.cost)


class BsoStore:
    """The batch size optimizer's operations on the database.

    Args:
        session_factory: Makes a new :class:`~sqlalchemy.orm.Session` (e.g. a ``sessionmaker``).
        clock: Seconds since the epoch; injectable so lease expiry can be tested.
        max_attempts: Transactions retried on conflicts before giving up.
    """

    def __init__(
        self,
        session_factory: Callable[[], Session],
        clock: Callable[[], float] = time.time,
        max_attempts: int = 50,
    ) -> None:
        self._session_factory = session_factory
        self._clock = clock
        self._max_attempts = max_attempts

    def _transaction(self, body: Callable[[Session], T]) -> T:
        for attempt in range(self._max_attempts):
            session = self._session_factory()
            try:
                with session.begin():
                    return body(session)
            except (DBAPIError, StaleDataError) as exc:
                if not _is_retryable(exc) or attempt == self._max_attempts - 1:
                    raise
                # Jittered backoff so contending replicas do not retry in lockstep.
                time.sleep(random.uniform(0.0, min(0.2, 0.005 * 2**attempt)))
            finally:
                session.close()
        raise AssertionError("unreachable")

    def _lock_job(self, session: Session, job_id: str) -> BsoJob:
        job = session.execute(select(BsoJob).where(BsoJob.job_id == job_id).with_for_update()).scalar_one_or_none()
        if job is None:
            raise NotFoundError(f"unknown batch size optimizer job {job_id!r}; register it first")
        return job

    def _trials(self, session: Session, job_id: str) -> list[BsoTrial]:
        query = select(BsoTrial).where(BsoTrial.job_id == job_id).order_by(BsoTrial.trial_number)
        return list(session.execute(query).scalars())

    def _expire_leases(self, trials: list[BsoTrial], now: float, keep: int | None = None) -> None:
        for trial in trials:
            if trial.status == TrialStatus.RUNNING.value and trial.lease_expires_at < now and trial.trial_number != keep:
                trial.status = TrialStatus.FAILED.value
                trial.reason = "lease expired: no report within lease_seconds"
                trial.decision = Decision.STOP_ENDED.value
                trial.updated_at = now

    def register(self, spec: JobSpec) -> tuple[JobSpec, bool]:
        """Store the job, or return the stored one if the same spec was registered before.

        Raises:
            InputError: the spec is invalid.
            ConflictError: the job exists with a different spec.
        """
        spec = spec.normalized()

        def body(session: Session) -> tuple[JobSpec, bool]:
            job = session.get(BsoJob, spec.job_id)
            if job is not None:
                stored = spec_of(job)
                diff = [name for name in _SPEC_FIELDS if getattr(stored, name) != getattr(spec, name)]
                if diff:
                    raise ConflictError(
                        f"job {spec.job_id!r} is registered with a different {', '.join(diff)}; "
                        "use a new job_id for a changed job"
                    )
                return stored, False
            now = self._clock()
            values = asdict(spec)
            values["batch_sizes"] = list(spec.batch_sizes)
            session.add(BsoJob(**values, next_trial_number=1, created_at=now, updated_at=now))
            return spec, True

        return self._transaction(body)

    def start_trial(self, job_id: str) -> Assigned:
        """Open a new trial and decide its batch size."""

        def body(session: Session) -> Assigned:
            job = self._lock_job(session, job_id)
            now = self._clock()
            trials = self._trials(session, job_id)
            self._expire_leases(trials, now)
            number = job.next_trial_number
            config = spec_of(job).search_config()
            assignment = next_assignment(config, [_record(t) for t in trials], number)
            session.add(
                BsoTrial(
                    job_id=job_id, trial_number=number, batch_size=assignment.batch_size,
                    kind=assignment.kind.value, status=TrialStatus.RUNNING.value, epochs=0, time=0.0,
                    energy=0.0, cost=0.0, reason="", decision=Decision.CONTINUE.value, started_at=now,
                    updated_at=now, lease_expires_at=now + job.lease_seconds,
                )
            )
            job.next_trial_number = number + 1
            _touch(job, now)
            return Assigned(job_id, number, assignment.batch_size, assignment.kind, job.lease_seconds)

        return self._transaction(body)

    def report_epoch(
        self, job_id: str, trial_number: int, epoch: int, time_s: float, energy_j: float, metric: float
    ) -> EpochAnswer:
        """Add one epoch to a trial and say whether it continues, converged or must stop."""
        where = f"job {job_id!r} trial {trial_number}"
        for name, value in (("time", time_s), ("energy", energy_j)):
            if not (math.isfinite(value) and value >= 0):
                raise InputError(where, f"{name} must be a non-negative number, got {value}")
        if not math.isfinite(metric):
            raise InputError(where, f"metric must be a finite number, got {metric}")

        def body(session: Session) -> EpochAnswer:
            job = self._lock_job(session, job_id)
            now = self._clock()
            trials = self._trials(session, job_id)
            trial = next((t for t in trials if t.trial_number == trial_number), None)
            if trial is None:
                raise NotFoundError(f"{where}: no such trial")
            self._expire_leases(trials, now, keep=trial_number)
            _touch(job, now)
            if trial.status != TrialStatus.RUNNING.value:
                decision = Decision(trial.decision) if trial.decision else Decision.STOP_ENDED
                return EpochAnswer(decision, trial.cost, f"trial already ended ({trial.status}: {trial.reason})")
            if epoch <= trial.epochs:  # a retried report: answer again, change nothing
                return EpochAnswer(Decision(trial.decision), trial.cost, "duplicate report ignored")
            if epoch != trial.epochs + 1:
                raise InputError(where, f"expected a report for epoch {trial.epochs + 1}, got epoch {epoch}")
            trial.epochs = epoch
            trial.time += time_s
            trial.energy += energy_j
            trial.cost = zeus_cost(trial.energy, trial.time, job.eta, job.max_power)
            trial.last_metric = metric
            trial.updated_at = now
            trial.lease_expires_at = now + job.lease_seconds
            config = spec_of(job).search_config()
            decision = epoch_decision(config, trial.epochs, trial.cost, metric, job.best_cost)
            trial.decision = decision.value
            message = ""
            if decision is Decision.CONVERGED:
                trial.status = TrialStatus.CONVERGED.value
                trial.reason = f"reached target metric {job.target_metric} in {epoch} epochs"
                if job.best_cost is None or trial.cost < job.best_cost:
                    job.best_cost, job.best_batch_size = trial.cost, trial.batch_size
            elif decision is Decision.STOP_COST:
                trial.status = TrialStatus.STOPPED.value
                trial.reason = f"cost {trial.cost:.6g} exceeded beta x best cost {job.beta * (job.best_cost or 0):.6g}"
            elif decision is Decision.STOP_MAX_EPOCHS:
                trial.status = TrialStatus.STOPPED.value
                trial.reason = f"max_epochs {job.max_epochs} reached without converging"
            message = trial.reason
            return EpochAnswer(decision, trial.cost, message)

        return self._transaction(body)

    def end_trial(self, job_id: str, trial_number: int, failed: bool, reason: str = "") -> str:
        """End a trial that will report no more; returns its final status."""

        def body(session: Session) -> str:
            job = self._lock_job(session, job_id)
            now = self._clock()
            trial = session.execute(
                select(BsoTrial).where(BsoTrial.job_id == job_id, BsoTrial.trial_number == trial_number)
            ).scalar_one_or_none()
            if trial is None:
                raise NotFoundError(f"job {job_id!r} trial {trial_number}: no such trial")
            if trial.status == TrialStatus.RUNNING.value:
                trial.status = (TrialStatus.FAILED if failed else TrialStatus.STOPPED).value
                trial.reason = (reason or ("failed" if failed else "ended by the client"))[:255]
                trial.decision = Decision.STOP_ENDED.value
                trial.updated_at = now
                _touch(job, now)
            return trial.status

        return self._transaction(body)

    def job_view(self, job_id: str) -> JobView:
        """Read-only view of the job's search state."""

        def body(session: Session) -> JobView:
            job = session.get(BsoJob, job_id)
            if job is None:
                raise NotFoundError(f"unknown batch size optimizer job {job_id!r}")
            spec = spec_of(job)
            trials = self._trials(session, job_id)
            state = pruning_state(spec.search_config(), [_record(t) for t in trials])
            views = tuple(
                TrialView(t.trial_number, t.batch_size, t.kind, t.status, t.epochs, t.time, t.energy, t.cost, t.reason)
                for t in trials
            )
            phase = "bandit" if state.done else "pruning"
            return JobView(spec, phase, state.survivors, job.best_cost, job.best_batch_size, views)

        return self._transaction(body)
