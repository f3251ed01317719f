"""Read the iteration reports every replica stores, as they arrive, without missing late commits.

Replicas of one PostgreSQL database store reports in their own transactions. Row ids come from one
sequence, but a transaction that took smaller ids may commit after one that took larger ids, so
"every row above the largest id read so far" would skip it for good. :class:`ReportTail` therefore
reads again from the largest id it had read :data:`LATE_S` seconds ago and drops the rows it has
already returned: a report committed up to that late is still read, once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection
from typing import Any

from sqlalchemy import select

from perseus.reports import IterationReport
from perseus.server import models as m

LATE_S = 2.0
"""Seconds a report may commit after reports with larger ids and still be read (a group commit takes
milliseconds; a stalled one longer than this is missed, which costs the closed loop one iteration)."""
BATCH = 20_000
"""Rows read per call at most (the rest come at the next call)."""


class ReportTail:
    """New iteration reports of some jobs, each returned once (see the module docstring)."""

    def __init__(self) -> None:
        self._cursor: int | None = None
        self._marks: deque[tuple[float, int]] = deque()
        """(when, cursor then): where a read ``LATE_S`` ago had got to."""
        self._seen: set[int] = set()

    def read(self, s: Any, jobs: Collection[str], now: float | None = None) -> list[tuple[str, str, IterationReport]]:
        """(job id, run id, report) of rows of ``jobs`` not returned before, oldest first. The first call
        returns nothing and starts at the newest row (a new reader starts with fresh windows)."""
        r = m.IterationReportRow
        now = time.monotonic() if now is None else now
        if self._cursor is None:
            self._cursor = s.scalar(select(r.id).order_by(r.id.desc()).limit(1)) or 0
            self._marks.append((now, self._cursor))
            return []
        while len(self._marks) > 1 and self._marks[1][0] <= now - LATE_S:
            self._marks.popleft()
        low = self._marks[0][1]
        self._seen = {i for i in self._seen if i > low}
        # Every job's rows move the cursor (else rows of other jobs would be scanned again and again).
        self._cursor = max(self._cursor, s.scalar(select(r.id).order_by(r.id.desc()).limit(1)) or 0)
        if not jobs:
            self._marks.append((now, self._cursor))
            return []
        rows = s.execute(
            select(r.id, r.job_id, r.run_id, r.rank, r.iteration, r.time, r.energy, r.plan_name, r.busy_time,
                   r.busy_energy)
            .where(r.id > low, r.job_id.in_(list(jobs))).order_by(r.id).limit(BATCH)
        ).all()
        out: list[tuple[str, str, IterationReport]] = []
        for row_id, job_id, run_id, rank, iteration, t, e, plan, busy_t, busy_e in rows:
            if row_id in self._seen:
                continue
            self._seen.add(row_id)
            self._cursor = max(self._cursor, row_id)
            out.append((job_id, run_id, IterationReport(rank, iteration, t, e, plan, busy_time=busy_t,
                                                        busy_energy=busy_e)))
        self._marks.append((now, self._cursor))
        return out
