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

import time
from collections.abc import Collection
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, any_, bindparam, select
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
    """New iteration reports of some jobs, each returned once (see the module docstring)."""

    def __init__(self, back: int = 0, batch: int = BATCH) -> None:
        """``back``: the first read starts this many ids before the newest row (0: returns nothing and
        starts at the newest, for a reader that needs only what comes next); ``batch``: new rows per read."""
        self._back = back
        self._batch = batch
        self._cursor: int | None = None
        self._gaps: dict[int, float] = {}
        """Missing id -> when it was first missed."""

    def read(self, s: Any, jobs: Collection[str], now: float | None = None) -> list[TailedReport]:
        """Rows of ``jobs`` not returned before, in id order (see ``back`` for the first call); ``s`` is a
        Session or a Connection."""
        now = time.monotonic() if now is None else now
        if self._cursor is None:
            self._cursor = max(0, (s.scalar(select(_R.id).order_by(_R.id.desc()).limit(1)) or 0) - self._back)
            if not self._back:
                return []
        self._gaps = {i: t for i, t in self._gaps.items() if t > now - LATE_S}
        fresh = s.execute(select(*_COLUMNS).where(_R.id > self._cursor).order_by(_R.id).limit(self._batch)).all()
        late = s.execute(select(*_COLUMNS).where(_gap_filter(s, list(self._gaps)))).all() if self._gaps else []
        for row in late:
            self._gaps.pop(row[0], None)
        expected = self._cursor + 1
        for row in fresh:
            row_id = row[0]
            if row_id - expected <= MAX_GAPS - len(self._gaps):
                self._gaps.update(dict.fromkeys(range(expected, row_id), now))
            expected = row_id + 1
        if fresh:
            self._cursor = fresh[-1][0]
        wanted = set(jobs)
        rows = sorted((row for row in (*late, *fresh) if row[1] in wanted), key=lambda row: row[0])
        return [TailedReport(job_id, run_id, IterationReport(rank, iteration, t, e, plan, busy_time=busy_t,
                                                             busy_energy=busy_e), created)
                for _, job_id, run_id, rank, iteration, t, e, plan, busy_t, busy_e, created in rows]


def _gap_filter(s: Any, ids: list[int]) -> Any:
    """``id`` is one of ``ids``: ``= ANY(array)`` on PostgreSQL (one parameter), ``IN (...)`` elsewhere."""
    dialect = s.dialect if isinstance(s, Connection) else s.get_bind().dialect
    if dialect.name == "postgresql":
        return _R.id == any_(bindparam("gaps", ids, type_=postgresql.ARRAY(BigInteger)))
    return _R.id.in_(ids)
