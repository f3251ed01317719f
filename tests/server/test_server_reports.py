"""Group commit of iteration reports: many reports per transaction, acknowledged only once stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from perseus.reports import IterationReport
from perseus.server import models as m
from perseus.server.db import make_engine, session_factory, upgrade
from perseus.server.reports import ReportWriter


def test_reports_that_arrive_during_a_commit_share_the_next_one(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade(engine)
    with session_factory(engine)() as s:
        s.add(m.JobRow(id="j", schedule="1f1b", num_stages=1, num_microbatches=1, blocking_power=0.0,
                       phase="serving"))
        s.commit()
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    writer = ReportWriter(engine)
    try:
        assert writer.submit_many("j", "", [IterationReport(0, 0, 1.0, 5.0, "p")]).result(timeout=30) == [True]
        assert writer.submit_many("j", "", [IterationReport(0, 0, 1.0, 5.0, "p")]).result(timeout=30) == [False]  # a retry: stored once
        commits.clear()
        # Another writer holds the database: every report queued meanwhile waits, then goes in together.
        blocker = sqlite3.connect(tmp_path / "r.db", timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        first = writer.submit_many("j", "", [IterationReport(1, 0, 1.0, 5.0, "")])
        rest = [writer.submit_many("j", "", [IterationReport(rank, it, 1.0, 5.0, "")])
                for rank in range(1, 5) for it in range(1, 50)]
        twice = writer.submit_many("j", "", [IterationReport(2, 7, 1.0, 5.0, "")])  # the same report twice in one batch
        assert not first.done() and not any(f.done() for f in rest)  # nothing acknowledged before its commit
        blocker.rollback()
        blocker.close()
        assert first.result(timeout=30) == [True] and all(f.result(timeout=30) == [True] for f in rest)
        assert twice.result(timeout=30) == [False]
        assert len(commits) <= 2, f"{len(rest) + 2} reports took {len(commits)} commits"
    finally:
        writer.close()
    con = sqlite3.connect(tmp_path / "r.db")
    assert con.execute("SELECT COUNT(*) FROM scheduler_iteration_reports").fetchone() == (2 + 4 * 49,)
    con.close()
    engine.dispose()


def test_loop_waker_resolves_a_burst_of_results_in_one_wake_up() -> None:
    import asyncio
    import threading
    from concurrent.futures import Future

    from perseus.server.wakeups import LoopWaker

    async def main() -> tuple[list[object], int]:
        loop = asyncio.get_running_loop()
        waker = LoopWaker(loop)
        futures: list[Future[int]] = [Future() for _ in range(100)]
        waiters = [waker.wrap(f) for f in futures]
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counted(*args: object, **kw: object) -> object:
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kw)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]

        def commit() -> None:  # what the report writer does after one transaction
            for i, f in enumerate(futures):
                if i == 7:
                    f.set_exception(RuntimeError("database gone"))
                else:
                    f.set_result(i)

        thread = threading.Thread(target=commit)
        thread.start()
        thread.join(timeout=30)
        results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), timeout=30)
        return results, wakeups

    results, wakeups = asyncio.run(main())
    assert [r for i, r in enumerate(results) if i != 7] == [i for i in range(100) if i != 7]
    assert isinstance(results[7], RuntimeError) and str(results[7]) == "database gone"
    assert wakeups == 1  # the loop was busy with nothing else: the whole burst in one pass


def _database_serving_job(url: str) -> Engine:
    """An engine on a migrated database holding one serving job, ``j``."""
    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine)() as s:
        s.add(m.JobRow(id="j", schedule="1f1b", num_stages=1, num_microbatches=1, blocking_power=0.0,
                       phase="serving"))
        s.commit()
    return engine


def test_postgres_batch_is_one_insert_that_tells_new_reports_from_retries(postgres_db: str) -> None:
    engine = _database_serving_job(postgres_db)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql))
    writer = ReportWriter(engine)
    try:
        first = [IterationReport(rank, 0, 1.0, 5.0) for rank in range(1500)]
        assert writer.submit_many("j", "r", first).result(timeout=60) == [True] * 1500
        inserts = [sql for sql in statements if sql.lstrip().upper().startswith("INSERT")]
        assert len(inserts) <= 2 and not any(sql.lstrip().upper().startswith("SELECT") for sql in statements)
        # Half retries of acknowledged reports, half new: only the new ones count as stored.
        mixed = [IterationReport(rank, rank % 2, 1.0, 5.0) for rank in range(1500)]
        assert writer.submit_many("j", "r", mixed).result(timeout=60) == [rank % 2 == 1 for rank in range(1500)]
    finally:
        writer.close()
        engine.dispose()
    with session_factory(engine)() as s:
        assert s.query(m.IterationReportRow).count() == 1500 + 750


def test_postgres_writer_keeps_its_connection_and_replaces_one_the_server_closed(postgres_db: str) -> None:
    """The writer holds one connection (no pool checkout and ping per commit); when the server ends it
    (a restart, an idle timeout), the next batch is stored on a new one, not failed."""
    engine = _database_serving_job(postgres_db)
    checkouts: list[int] = []
    event.listen(engine, "checkout", lambda *_: checkouts.append(1))
    writer = ReportWriter(engine)
    try:
        for it in range(3):
            assert writer.submit_many("j", "r", [IterationReport(0, it, 1.0, 5.0)]).result(timeout=60) == [True]
        assert len(checkouts) == 1  # one connection for the three commits
        with engine.connect() as admin:
            ended = admin.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")).scalars().all()
            admin.commit()
        assert ended and all(ended)
        assert writer.submit_many("j", "r", [IterationReport(0, 3, 1.0, 5.0)]).result(timeout=60) == [True]
    finally:
        writer.close()
        engine.dispose()
    with session_factory(engine)() as s:
        assert s.query(m.IterationReportRow).count() == 4
