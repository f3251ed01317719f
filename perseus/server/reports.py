"""Group commit of iteration reports: the control plane's hottest write.

A thousand ranks each report once a second. Committing each report on its own costs a
transaction per report, serialized; instead one writer thread stores, in one transaction,
every report that arrived while its previous commit ran, and only then acknowledges them (a
caller's callback runs after the commit, so an acknowledged report is on disk). A report stored
before (a retry of an acknowledged one) is skipped by the database (``ON CONFLICT DO NOTHING`` on
the (job, run, rank, iteration) key).

The writer keeps one connection for itself (a pool checkout pings the server first: one more round
trip per commit) and, on PostgreSQL, stores a batch with one statement whose text never changes,
``INSERT ... SELECT * FROM unnest(one array per column)``, in autocommit: one round trip per
commit, where BEGIN, INSERT and COMMIT took three (each a wake-up of the server's backend process,
which waits for a CPU on a busy machine). A multi-row ``VALUES`` statement has a
different text for every batch size, which psycopg re-parses in Python on every commit (with a
bind parameter per value: two fifths of the writer thread's CPU at 1,024 reports/s, py-spy) and
the server can never prepare.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from perseus.reports import IterationReport
from perseus.server import models as m
from perseus.server.db import HeldConnection

log = logging.getLogger("perseus.server")
T = TypeVar("T")

#: Reports per transaction at most (bounds one commit's latency and the statement's size).
MAX_BATCH = 2000

Key = tuple[str, str, int, int]
"""A report's key: (job, run, rank, iteration)."""
Done = Callable[[list[bool] | BaseException], None]
"""Called from the writer thread after the commit: which reports were new, or the error."""


@dataclass(frozen=True)
class Stored:
    """The reports of one call that a commit stored (retries of stored reports left out)."""

    job_id: str
    run_id: str
    reports: list[IterationReport]
    created_at: float
    """When the server received them (seconds since the epoch)."""
    ids: list[int | None]
    """Each report's row id (None where the database does not return ids: SQLite)."""


OnCommit = Callable[[list[Stored]], None]
"""Called from the writer thread once per commit, before its acknowledgements, with what it stored."""


@dataclass(frozen=True)
class _Call:
    job_id: str
    run_id: str
    reports: Sequence[IterationReport]
    created_at: float
    done: Done


class ReportWriter:
    """Stores iteration reports in batches from one thread; see the module docstring."""

    def __init__(self, engine: Engine, on_commit: OnCommit | None = None) -> None:
        self._engine = engine
        self._on_commit = on_commit
        self._unnest = _unnest_insert(engine) if engine.dialect.name == "postgresql" else None
        self._insert: Any = (sqlite.insert(m.IterationReportRow).on_conflict_do_nothing()
                             if engine.dialect.name == "sqlite" else None)
        # PostgreSQL stores a batch in one statement: in autocommit it is its own transaction, durable
        # when it returns (synchronous_commit), with no BEGIN and COMMIT round trips around it.
        self._held = HeldConnection(engine, autocommit=self._unnest is not None)
        self._pending: list[_Call] = []
        """Calls waiting for the next commit."""
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

        The hot path: no future (a ``concurrent.futures.Future`` builds a lock and a condition each),
        and the rows are built in the writer thread, not the caller's (the event loop).
        """
        call = _Call(job_id, run_id, reports, time.time(), done)
        with self._wake:
            if self._closed:
                raise RuntimeError("the server is stopping")
            self._pending.append(call)
            self._wake.notify()

    def close(self) -> None:
        """Store what is queued, then stop."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            while self._next_batch():
                pass
        finally:
            self._held.drop()

    def _next_batch(self) -> bool:
        """Store the calls queued now (waiting for one first) and acknowledge them; False once closed."""
        with self._wake:
            while not self._pending and not self._closed:
                self._wake.wait()
            if not self._pending:
                return False
            # Whole calls, up to MAX_BATCH rows (a bigger call goes alone).
            taken, rows = 0, 0
            while taken < len(self._pending) and (not taken or rows + len(self._pending[taken].reports) <= MAX_BATCH):
                rows += len(self._pending[taken].reports)
                taken += 1
            batch, self._pending = self._pending[:taken], self._pending[taken:]
        try:
            stored, ids = self._store(batch)
        except Exception as exc:  # the database failed: every caller in the batch gets the error
            log.warning("storing %d iteration reports failed: %s", rows, exc)
            for call in batch:
                _call(call.done, exc)
            return True
        news, start = [], 0
        for call in batch:
            news.append(stored[start:start + len(call.reports)])
            start += len(call.reports)
        if self._on_commit is not None:
            try:
                commit = []
                for call, new in zip(batch, news, strict=True):
                    if any(new):
                        fresh = [r for r, n in zip(call.reports, new, strict=True) if n]
                        commit.append(Stored(call.job_id, call.run_id, fresh, call.created_at,
                                             [ids[(call.job_id, call.run_id, r.rank, r.iteration)] for r in fresh]))
                self._on_commit(commit)
            except Exception:  # the reports are stored: they are acknowledged all the same
                log.exception("counting %d stored iteration reports failed", rows)
        for call, new in zip(batch, news, strict=True):
            _call(call.done, new)
        return True

    def _store(self, batch: Sequence[_Call]) -> tuple[list[bool], dict[Key, int | None]]:
        """Whether each report of the batch was new (reports a batch repeats, or stored before, are not),
        and the new ones' row ids by key (None where the database does not return them)."""
        rows = [_row(call, r) for call in batch for r in call.reports]
        keys = [_key(r) for r in rows]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        unique = [rows[i] for i in sorted(first.values())]
        if not unique:  # only empty calls: nothing to store
            return [], {}
        for attempt in (1, 2):
            try:
                with self._held.use() as conn, conn.begin():  # in autocommit on PostgreSQL: no BEGIN, no COMMIT
                    new = self._insert_rows(conn, unique)
                break
            except DBAPIError as exc:
                # A connection the server closed (restarted, idle timeout): once more on a fresh one.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        return [first[key] == i and key in new for i, key in enumerate(keys)], new

    def _insert_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[Key, int | None]:
        """Insert ``rows`` (unique keys) in the open transaction; the keys of those that were new, with
        their row ids where the statement returns them (PostgreSQL)."""
        if self._unnest is not None:
            sql, columns = self._unnest
            arrays = {name: [row[name] for row in rows] for name in columns}
            return {(job, run, rank, it): row_id for row_id, job, run, rank, it in conn.exec_driver_sql(sql, arrays)}
        if self._insert is not None:
            result = conn.execute(self._insert, rows)
            if result.rowcount == len(rows):
                return dict.fromkeys(map(_key, rows))
            return dict.fromkeys(self._new_keys(conn, rows))
        new: dict[Key, int | None] = {}  # a database without ON CONFLICT: one savepoint per row
        for row in rows:
            try:
                with conn.begin_nested():
                    conn.execute(insert(m.IterationReportRow), row)
                new[_key(row)] = None
            except IntegrityError:
                pass
        return new

    def _new_keys(self, conn: Any, rows: list[dict[str, Any]]) -> set[Key]:
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


def _unnest_insert(engine: Engine) -> tuple[str, list[str]]:
    """PostgreSQL's batch insert (see the module docstring) and its columns, each bound as one array."""
    table = m.IterationReportRow.__table__
    dialect = engine.dialect
    quote = dialect.identifier_preparer.quote
    columns = [c for c in table.columns if not c.primary_key]
    arrays = ", ".join(f"CAST(%({c.name})s AS {c.type.compile(dialect)}[])" for c in columns)
    sql = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({', '.join(quote(c.name) for c in columns)}) "
           f"SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING RETURNING id, job_id, run_id, {quote('rank')}, iteration")
    return sql, [c.name for c in columns]


def _row(call: _Call, r: IterationReport) -> dict[str, Any]:
    return dict(job_id=call.job_id, run_id=call.run_id, rank=r.rank, iteration=r.iteration, time=r.time,
                energy=r.energy, plan_name=r.plan_name, created_at=call.created_at, measure_only=r.measure_only,
                clock_mhz=r.clock_mhz, planned_instructions=r.planned_instructions,
                at_planned_clock=r.at_planned_clock, busy_time=r.busy_time, busy_energy=r.busy_energy)


def _key(row: dict[str, Any]) -> Key:
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
