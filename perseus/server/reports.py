"""Group commit of iteration reports: the control plane's hottest write.

A thousand ranks each report once a second. Committing each report on its own costs a
transaction per report, serialized; instead one writer thread stores, in one transaction,
every report that arrived while its previous commit ran, and only then acknowledges them (a
caller's :class:`~concurrent.futures.Future` resolves after the commit, so an acknowledged report
is on disk). A report stored before (a retry of an acknowledged one) is skipped by the database
(``ON CONFLICT DO NOTHING`` on the (job, run, rank, iteration) key).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from perseus.reports import IterationReport
from perseus.server import models as m

log = logging.getLogger("perseus.server")
T = TypeVar("T")

#: Reports per transaction at most (bounds one commit's latency and the statement's size).
MAX_BATCH = 2000

Done = Callable[[list[bool] | BaseException], None]
"""Called from the writer thread after the commit: which reports were new, or the error."""


class ReportWriter:
    """Stores iteration reports in batches from one thread; see the module docstring."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert: Any = None
        self._returns_keys = False
        """Whether ``_insert`` returns the keys of the rows it stored (else its rowcount is checked)."""
        if engine.dialect.name == "sqlite":
            self._insert = sqlite.insert(m.IterationReportRow).on_conflict_do_nothing()
        elif engine.dialect.name == "postgresql":
            # PostgreSQL's rowcount of a many-row insert is not the rows inserted: the statement
            # returns the keys it stored instead (one statement, where the rowcount check fell back
            # to one SELECT per row: 2.4 s for 1000 reports).
            table = m.IterationReportRow.__table__
            self._insert = postgresql.insert(m.IterationReportRow).on_conflict_do_nothing().returning(
                table.c.job_id, table.c.run_id, table.c.rank, table.c.iteration)
            self._returns_keys = True
        self._pending: list[tuple[list[dict[str, Any]], Done]] = []
        """Calls waiting for the next commit: each call's rows and what to call after it."""
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="perseus-reports", daemon=True)
        self._thread.start()

    def submit_many(self, job_id: str, run_id: str, reports: Sequence[IterationReport]) -> Future[list[bool]]:
        """Queue reports of run ``run_id``; the future says (after the commit) which were new."""
        future: Future[list[bool]] = Future()
        future.set_running_or_notify_cancel()  # a caller that gives up cannot cancel reports being stored
        self.submit(job_id, run_id, reports, lambda result: settle(future, result))
        return future

    def submit(self, job_id: str, run_id: str, reports: Sequence[IterationReport], done: Done) -> None:
        """Queue reports of run ``run_id``; ``done`` gets (after the commit) which were new, or the error.

        The hot path: no future (a ``concurrent.futures.Future`` builds a lock and a condition each).
        """
        now = time.time()
        rows = [dict(job_id=job_id, run_id=run_id, rank=r.rank, iteration=r.iteration, time=r.time,
                     energy=r.energy, plan_name=r.plan_name, created_at=now, measure_only=r.measure_only,
                     clock_mhz=r.clock_mhz, planned_instructions=r.planned_instructions,
                     at_planned_clock=r.at_planned_clock, busy_time=r.busy_time, busy_energy=r.busy_energy)
                for r in reports]
        with self._wake:
            if self._closed:
                raise RuntimeError("the server is stopping")
            self._pending.append((rows, done))
            self._wake.notify()

    def close(self) -> None:
        """Store what is queued, then stop."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return
                # Whole calls, up to MAX_BATCH rows (a bigger call goes alone).
                taken, rows = 0, 0
                while taken < len(self._pending) and (not taken or rows + len(self._pending[taken][0]) <= MAX_BATCH):
                    rows += len(self._pending[taken][0])
                    taken += 1
                batch, self._pending = self._pending[:taken], self._pending[taken:]
            try:
                stored = self._store([row for rows_, _ in batch for row in rows_])
            except Exception as exc:  # the database failed: every caller in the batch gets the error
                log.warning("storing %d iteration reports failed: %s", rows, exc)
                for _, done in batch:
                    _call(done, exc)
                continue
            start = 0
            for rows_, done in batch:
                _call(done, stored[start:start + len(rows_)])
                start += len(rows_)

    def _store(self, rows: list[dict[str, Any]]) -> list[bool]:
        """Whether each row was new (rows a batch repeats, or that were stored before, are not)."""
        keys = [_key(r) for r in rows]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        unique = [rows[i] for i in sorted(first.values())]
        with self._engine.begin() as conn:
            if self._returns_keys:
                new = {(job, run, rank, iteration) for job, run, rank, iteration in conn.execute(self._insert, unique)}
            elif self._insert is not None:
                result = conn.execute(self._insert, unique)
                if result.rowcount == len(unique):
                    return [first[key] == i for i, key in enumerate(keys)]
                new = self._new_keys(conn, unique)
            else:  # a database without ON CONFLICT: one savepoint per row
                new = set()
                for row in unique:
                    try:
                        with conn.begin_nested():
                            conn.execute(insert(m.IterationReportRow), row)
                        new.add(_key(row))
                    except IntegrityError:
                        pass
        return [first[key] == i and key in new for i, key in enumerate(keys)]

    def _new_keys(self, conn: Any, rows: list[dict[str, Any]]) -> set[tuple[str, str, int, int]]:
        """Some rows existed already: the ones this transaction stored are those with our timestamps."""
        table = m.IterationReportRow.__table__
        new = set()
        for row in rows:
            created = conn.execute(
                table.select().with_only_columns(table.c.created_at).where(
                    table.c.job_id == row["job_id"], table.c.run_id == row["run_id"], table.c.rank == row["rank"],
                    table.c.iteration == row["iteration"])).scalar()
            if created == row["created_at"]:
                new.add(_key(row))
        return new


def _key(row: dict[str, Any]) -> tuple[str, str, int, int]:
    """What makes a report unique: (job, run, rank, iteration)."""
    return row["job_id"], row["run_id"], row["rank"], row["iteration"]


def settle(future: Future[T], result: T | BaseException) -> None:
    """Resolve ``future`` with ``result``, or fail it when ``result`` is an exception."""
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _call(done: Done, result: list[bool] | BaseException) -> None:
    try:
        done(result)
    except Exception:  # one caller's bug must not stop the writer (the reports are stored)
        log.exception("a report callback failed")
