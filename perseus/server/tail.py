"""Read the iteration reports every replica stores, as they arrive, without missing late commits.

Replicas of one PostgreSQL database store reports in their own transactions. Row ids come from one
sequence, but a transaction that took smaller ids may commit after one that took larger ids, so
"every row above the largest id read so far" would skip it for good. :class:`ReportTail` reads the
rows above its cursor, remembers the ids missing below it (*gaps*) and asks for those again on every
read for :data:`LATE_S` seconds: a report committed up to that late is still read, once. Gaps also
come from ids no row will ever have (a duplicate report's ``ON CONFLICT DO NOTHING`` uses one up);
they are dropped after :data:`LATE_S`.

Each read is one query for the new rows and, while there are gaps, one for them. Both have a text
that does not depend on how many rows or gaps there are (on PostgreSQL the gaps go as one array
parameter): the driver parses a statement's text in Python, once per distinct text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, all_, any_, bindparam, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from perseus.reports import IterationReport
from perseus.server import models as m

LATE_S = 2.0
"""Seconds a report may commit after reports with larger ids and still be read (a group commit takes
milliseconds; one stalled longer than this is missed, which costs the closed loop one iteration)."""
BATCH = 20_000
"""New rows read per call at most (the rest come at the next call)."""
MAX_GAPS = 10_000
"""Missing ids remembered at most (a larger jump in the sequence is not waited for)."""


class TailedReport(NamedTuple):
    """One stored report as the tail returns it."""

    job_id: str
    run_id: str
    report: IterationReport
    created_at: float
    """When the replica that stored it received it (seconds since the epoch)."""


_R = m.IterationReportRow
_COLUMNS = (_R.id, _R.job_id, _R.run_id, _R.rank, _R.iteration, _R.time, _R.energy, _R.plan_name, _R.busy_time,
            _R.busy_energy, _R.created_at)


class ReportTail:
    """New iteration reports of some jobs, each returned once (see the module docstring).

    A replica's own reports need not come back from the database: the report writer hands them over
    with their ids (:meth:`own`) once committed, and :meth:`read` returns them from memory and leaves
    their ids out of its query, so a replica alone on the database reads no rows at all. An own report
    the query returned before it was handed over (the writer hands over just after its commit) is not
    returned twice.
    """

    def __init__(self, back: int = 0, batch: int = BATCH) -> None:
        """``back``: the first read starts this many ids before the newest row (0: returns nothing and
        starts at the newest, for a reader that needs only what comes next); ``batch``: new rows per read."""
        self._back = back
        self._batch = batch
        self._cursor: int | None = None
        self._gaps: dict[int, float] = {}
        """Missing id -> when it was first missed."""
        self._handed: list[tuple[int, TailedReport]] = []
        """Own reports handed over since the last read (the writer thread appends, under ``_handing``)."""
        self._handing = threading.Lock()
        self._own_above: set[int] = set()
        """Ids of own reports above the cursor (returned already; left out of the query)."""
        self._from_db: dict[int, float] = {}
        """Ids the query returned in the last :data:`LATE_S` -> when (an own report handed over later is skipped)."""

    def own(self, reports: Collection[tuple[int, TailedReport]]) -> None:
        """Reports this replica committed, with their row ids (call from any thread). At most ``batch`` wait
        for the next read (a reader that stopped reading keeps the newest)."""
        with self._handing:
            self._handed.extend(reports)
            if len(self._handed) > self._batch:
                del self._handed[:len(self._handed) - self._batch]

    def read(self, s: Any, jobs: Collection[str], now: float | None = None) -> list[TailedReport]:
        """Rows of ``jobs`` not returned before, in id order (see ``back`` for the first call); ``s`` is a
        Session or a Connection."""
        now = time.monotonic() if now is None else now
        with self._handing:
            handed, self._handed = self._handed, []
        if self._cursor is None:
            self._cursor = max(0, (s.scalar(select(_R.id).order_by(_R.id.desc()).limit(1)) or 0) - self._back)
            if not self._back:
                return []
        self._gaps = {i: t for i, t in self._gaps.items() if t > now - LATE_S}
        self._from_db = {i: t for i, t in self._from_db.items() if t > now - LATE_S}
        mine = {row_id: report for row_id, report in handed if row_id not in self._from_db}
        for row_id in mine:
            self._gaps.pop(row_id, None)
        self._own_above.update(row_id for row_id in mine if row_id > self._cursor)
        query = select(*_COLUMNS).where(_R.id > self._cursor)
        if self._own_above:
            query = query.where(_id_filter(s, sorted(self._own_above), among=False))
        fresh = s.execute(query.order_by(_R.id).limit(self._batch)).all()
        late = (s.execute(select(*_COLUMNS).where(_id_filter(s, list(self._gaps), among=True))).all()
                if self._gaps else [])
        for row in late:
            self._gaps.pop(row[0], None)
        self._from_db.update((row[0], now) for row in (*late, *fresh))
        # Ids up to the last one read are accounted for by the query or by own reports; with a full
        # batch, own ids above its last row wait (rows of other replicas below them are still unread).
        last = (fresh[-1][0] if len(fresh) == self._batch
                else max([r[0] for r in fresh[-1:]] + list(self._own_above), default=self._cursor))
        expected = self._cursor + 1
        for row_id in sorted([r[0] for r in fresh] + [i for i in self._own_above if i <= last]):
            if row_id - expected <= MAX_GAPS - len(self._gaps):
                self._gaps.update(dict.fromkeys(range(expected, row_id), now))
            expected = row_id + 1
        self._cursor = max(self._cursor, last)
        self._own_above = {i for i in self._own_above if i > self._cursor}
        wanted = set(jobs)
        rows = [row for row in (*late, *fresh) if row[1] in wanted]
        found = {row_id: TailedReport(job_id, run_id, IterationReport(
            rank, iteration, t, e, plan, busy_time=busy_t, busy_energy=busy_e), created)
            for row_id, job_id, run_id, rank, iteration, t, e, plan, busy_t, busy_e, created in rows}
        found.update((row_id, report) for row_id, report in mine.items() if report.job_id in wanted)
        return [found[row_id] for row_id in sorted(found)]


def _id_filter(s: Any, ids: list[int], *, among: bool) -> Any:
    """``id`` is (``among``) or is not one of ``ids``: ``= ANY`` / ``<> ALL`` of one array parameter on
    PostgreSQL (the statement's text does not depend on how many), ``IN`` / ``NOT IN`` elsewhere."""
    dialect = s.dialect if isinstance(s, Connection) else s.get_bind().dialect
    if dialect.name == "postgresql":
        array = bindparam("among" if among else "besides", ids, type_=postgresql.ARRAY(BigInteger))
        return _R.id == any_(array) if among else _R.id != all_(array)
    return _R.id.in_(ids) if among else _R.id.notin_(ids)
