"""Read the iteration reports every replica stores, as they arrive, without missing late commits.

Replicas of one PostgreSQL database store reports in their own transactions. Row ids come from one
sequence, but a transaction that took smaller ids may commit after one that took larger ids, so
"every row above the largest id read so far" would skip it for good. :class:`ReportTail` reads the
ids above its cursor, remembers the ids missing below it (*gaps*) and asks for those again on every
read for :data:`LATE_S` seconds: a report committed up to that late is still read, once. Gaps also
come from ids no row will ever have (a duplicate report's ``ON CONFLICT DO NOTHING`` uses one up);
they are dropped after :data:`LATE_S`. Each read costs a query for the new ids, one for the gaps and
one for the rows wanted, whatever the table's size.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from sqlalchemy import select

from perseus.reports import IterationReport
from perseus.server import models as m

LATE_S = 2.0
"""Seconds a report may commit after reports with larger ids and still be read (a group commit takes
milliseconds; one stalled longer than this is missed, which costs the closed loop one iteration)."""
BATCH = 20_000
"""New ids read per call at most (the rest come at the next call)."""
MAX_GAPS = 10_000
"""Missing ids remembered at most (a larger jump in the sequence is not waited for)."""


class ReportTail:
    """New iteration reports of some jobs, each returned once (see the module docstring)."""

    def __init__(self) -> None:
        self._cursor: int | None = None
        self._gaps: dict[int, float] = {}
        """Missing id -> when it was first missed."""

    def read(self, s: Any, jobs: Collection[str], now: float | None = None) -> list[tuple[str, str, IterationReport]]:
        """(job id, run id, report) of rows of ``jobs`` not returned before, in id order. The first call
        returns nothing and starts at the newest row (a new reader starts with fresh windows)."""
        r = m.IterationReportRow
        now = time.monotonic() if now is None else now
        if self._cursor is None:
            self._cursor = s.scalar(select(r.id).order_by(r.id.desc()).limit(1)) or 0
            return []
        self._gaps = {i: t for i, t in self._gaps.items() if t > now - LATE_S}
        fresh = s.execute(select(r.id, r.job_id).where(r.id > self._cursor).order_by(r.id).limit(BATCH)).all()
        late = s.execute(select(r.id, r.job_id).where(r.id.in_(list(self._gaps)))).all() if self._gaps else []
        for row_id, _ in late:
            self._gaps.pop(row_id, None)
        expected = self._cursor + 1
        for row_id, _ in fresh:
            if row_id - expected <= MAX_GAPS - len(self._gaps):
                self._gaps.update(dict.fromkeys(range(expected, row_id), now))
            expected = row_id + 1
        if fresh:
            self._cursor = fresh[-1][0]
        wanted = set(jobs)
        ids = sorted(row_id for row_id, job_id in (*late, *fresh) if job_id in wanted)
        if not ids:
            return []
        rows = s.execute(
            select(r.id, r.job_id, r.run_id, r.rank, r.iteration, r.time, r.energy, r.plan_name, r.busy_time,
                   r.busy_energy).where(r.id.in_(ids)).order_by(r.id)
        ).all()
        return [(job_id, run_id, IterationReport(rank, iteration, t, e, plan, busy_time=busy_t, busy_energy=busy_e))
                for _, job_id, run_id, rank, iteration, t, e, plan, busy_t, busy_e in rows]
