"""``perseus.server.tail.ReportTail`` on a real SQLite file, and measured power read through it on a real
PostgreSQL: rows committed late (smaller ids after larger ones, as two replicas' transactions on
PostgreSQL can) are read once, other jobs' rows never."""

from __future__ import annotations

from pathlib import Path

import pytest

from perseus.reports import IterationReport
from perseus.server import models as m
from perseus.server.capping import MeasuredPower
from perseus.server.db import make_engine, session_factory, upgrade
from perseus.server.tail import LATE_S, ReportTail, TailedReport


def _add(s, row_id: int, job: str = "a", iteration: int | None = None) -> None:  # type: ignore[no-untyped-def]
    s.add(m.IterationReportRow(id=row_id, job_id=job, run_id="r", rank=0, iteration=row_id if iteration is None
                               else iteration, time=1.0, energy=2.0, plan_name="p", busy_time=0.5, busy_energy=1.5))
    s.commit()


def test_late_rows_are_read_once_and_other_jobs_never(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        s.add_all([m.JobRow(id=j, schedule="1f1b", num_stages=1, num_microbatches=1, blocking_power=0.0, phase="serving")
                   for j in ("a", "b")])
        s.commit()
        _add(s, 1)
        tail = ReportTail()
        assert tail.read(s, ["a"], now=0.0) == []  # starts at the newest row
        _add(s, 2)
        _add(s, 4)
        _add(s, 5, job="b")
        got = tail.read(s, ["a"], now=1.0)
        assert [(j, r.iteration, r.busy_time, r.busy_energy) for j, _, r, _ in got] == [("a", 2, 0.5, 1.5), ("a", 4, 0.5, 1.5)]
        _add(s, 3)  # committed after 4: read at the next call
        assert [r.iteration for _, _, r, _ in tail.read(s, ["a"], now=1.5)] == [3]
        assert tail.read(s, ["a"], now=1.6) == []  # never twice
        _add(s, 7)
        assert [r.iteration for _, _, r, _ in tail.read(s, ["a"], now=2.0)] == [7]
        _add(s, 6)  # later than LATE_S after it was missed: given up
        assert tail.read(s, ["a"], now=2.0 + LATE_S + 0.1) == []
    engine.dispose()


@pytest.mark.postgres
def test_measured_power_counts_a_report_committed_late_with_a_smaller_id(postgres_db: str) -> None:
    """Two transactions on real PostgreSQL: the one that took the smaller id commits last. Measured
    power must count its report once it commits (a plain "ids above the last read" cursor skips it)."""
    engine = make_engine(postgres_db)
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        s.add(m.JobRow(id="a", schedule="1f1b", num_stages=1, num_microbatches=1, blocking_power=0.0, phase="serving"))
        s.commit()
    measured = MeasuredPower()
    with sessions() as s:
        assert measured.read(s, ["a"]) == {}
    with sessions() as late, sessions() as early:
        late.add(m.IterationReportRow(job_id="a", run_id="r", rank=0, iteration=0, time=1.0, energy=100.0))
        late.flush()  # takes the smaller id, not committed yet
        early.add(m.IterationReportRow(job_id="a", run_id="r", rank=1, iteration=0, time=1.0, energy=300.0))
        early.commit()
        with sessions() as s:
            assert measured.read(s, ["a"]) == {"a": pytest.approx(300.0)}
        late.commit()
    with sessions() as s:
        assert measured.read(s, ["a"]) == {"a": pytest.approx(400.0)}  # both ranks: 100 W + 300 W
    engine.dispose()


def test_own_reports_come_from_memory_once(tmp_path: Path) -> None:
    """The writer hands this replica's committed reports over: they are returned from memory, their rows
    left out of the query, and one the query returned before the hand-over is not returned again."""
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    upgrade(engine)
    sessions = session_factory(engine)

    def mine(row_id: int) -> tuple[int, TailedReport]:
        return row_id, TailedReport("a", "r", IterationReport(0, row_id, 1.0, 2.0, "from memory"), 0.0)

    with sessions() as s:
        s.add(m.JobRow(id="a", schedule="1f1b", num_stages=1, num_microbatches=1, blocking_power=0.0, phase="serving"))
        s.commit()
        _add(s, 1)
        tail = ReportTail()
        assert tail.read(s, ["a"], now=0.0) == []
        _add(s, 2)
        _add(s, 3)
        _add(s, 5)  # another replica's
        tail.own([mine(2), mine(3)])
        got = tail.read(s, ["a"], now=1.0)
        assert [(r.report.iteration, r.report.plan_name) for r in got] == [(2, "from memory"), (3, "from memory"),
                                                                          (5, "p")]
        _add(s, 6)
        assert [r.report.iteration for r in tail.read(s, ["a"], now=1.2)] == [6]
        tail.own([mine(6)])  # handed over after the query returned it (the writer hands over after its commit)
        _add(s, 4)  # and 4, committed late, is this replica's too
        tail.own([mine(4)])
        assert [(r.report.iteration, r.report.plan_name) for r in tail.read(s, ["a"], now=1.4)] == [(4, "from memory")]
        assert tail.read(s, ["a"], now=1.6) == []
    engine.dispose()
