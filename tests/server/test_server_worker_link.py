"""The worker's background link against a real server that goes away and comes back.

The report sender keeps reports through an outage and delivers them after a restart, says so once
per outage, spills to its file when the buffer fills or it closes with the server still away, and
replays that file when a later reporter of the same rank starts.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from perseus.client import PerseusClient
from perseus.client.health import LinkHealth
from perseus.client.reporter import BackgroundReporter, Delivery
from perseus.reports import IterationReport, read_spill
from perseus.server.app import ServerConfig, ServerThread

JOB = "link"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server(db: Path, port: int) -> ServerThread:
    return ServerThread(ServerConfig(port=port, db=f"sqlite:///{db}"))


def _register(port: int, ranks: int = 1) -> None:
    with PerseusClient(f"127.0.0.1:{port}") as client:
        client.register_job(job_id=JOB, model="m", num_stages=ranks, num_microbatches=ranks)
        for rank in range(ranks):
            client.register_rank(JOB, rank, rank, [1410])


def _wait_until(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {timeout} s: {what}"
        time.sleep(0.05)


class Link:
    """A reporter with its own fail-fast client, as a worker rank builds it."""

    def __init__(self, port: int, spill: Path, run_id: str, lines: list[str], **kw: float) -> None:
        self.client = PerseusClient(f"127.0.0.1:{port}", retry_timeout=0.0, timeout=2.0)
        health = LinkHealth(self.client.target, lines.append)
        self.reporter = BackgroundReporter(self.client, JOB, run_id, spill, health=health, interval=0.05,
                                           warn=lines.append, **kw)

    def put(self, report: IterationReport) -> None:
        self.reporter.put(report)

    def close(self) -> Delivery:
        try:
            return self.reporter.close()
        finally:
            self.client.close()


def _report(i: int) -> IterationReport:
    return IterationReport(0, i, 1.0 + i / 1000, 50.0)


def test_reports_survive_a_restart_with_one_warning(tmp_path: Path) -> None:
    db, port, lines = tmp_path / "p.db", _port(), []
    srv = _server(db, port)
    _register(port)
    reporter = Link(port, tmp_path / "spill.jsonl", "run1", lines, flush_timeout=20.0)
    for i in range(10):
        reporter.put(_report(i))
    _wait_until("10 reports stored", lambda: len(srv.core.iteration_reports(JOB)) == 10)
    srv.stop()
    for i in range(10, 30):  # the server is away: put() keeps them
        reporter.put(_report(i))
        time.sleep(0.02)
    _wait_until("the outage announced", lambda: any("unreachable" in line for line in lines))
    srv = _server(db, port)
    try:
        _wait_until("all 30 reports stored after the restart", lambda: len(srv.core.iteration_reports(JOB)) == 30)
        delivery = reporter.close()
        assert (delivery.sent, delivery.pending, delivery.rejected, delivery.dropped) == (30, 0, 0, 0)
        assert [r[1] for r in srv.core.iteration_reports(JOB)] == list(range(30))
        assert sum("unreachable" in line for line in lines) == 1, lines
        assert sum("is back after" in line for line in lines) == 1, lines
        assert not (tmp_path / "spill.jsonl").exists()
    finally:
        srv.stop()


def test_full_buffer_and_early_end_spill_and_the_next_start_replays(tmp_path: Path) -> None:
    db, port, lines = tmp_path / "p.db", _port(), []
    spill = tmp_path / "unsent" / "link.rank0.jsonl"
    reporter = Link(port, spill, "run1", lines, capacity=4, flush_timeout=0.5)  # nothing listens on port
    for i in range(10):
        reporter.put(_report(i))
    _wait_until("the full buffer spilled while running", spill.exists)
    delivery = reporter.close()
    assert (delivery.sent, delivery.pending, delivery.dropped) == (0, 10, 0)
    groups, truncated = read_spill(spill)
    assert not truncated and [r.iteration for r in groups[(JOB, "run1")]] == list(range(10))

    srv = _server(db, port)
    try:
        _register(port)
        later = Link(port, spill, "run2", lines)
        later.put(_report(0))  # run 2's iteration 0 does not collide with run 1's
        _wait_until("the spill file replayed and removed", lambda: not spill.exists())
        delivery = later.close()
        assert (delivery.sent, delivery.pending) == (11, 0)
        runs = {r.run_id: r.num_reports for r in srv.core.list_jobs([JOB])[0].runs}
        assert runs == {"run1": 10, "run2": 1}
    finally:
        srv.stop()


def test_rejected_reports_are_kept_aside_with_a_warning(tmp_path: Path) -> None:
    port, lines = _port(), []
    srv = _server(tmp_path / "p.db", port)
    try:
        _register(port)
        spill = tmp_path / "link.rank0.jsonl"
        reporter = Link(port, spill, "run1", lines)
        reporter.put(IterationReport(5, 0, 1.0, 1.0))  # rank 5 was never registered
        delivery = reporter.close()
        assert (delivery.sent, delivery.rejected) == (0, 1)
        assert any("rejected 1 iteration reports (NOT_FOUND" in line for line in lines), lines
        groups, _ = read_spill(spill.with_name(spill.name + ".rejected"))
        assert groups == {(JOB, "run1"): [IterationReport(5, 0, 1.0, 1.0)]}
    finally:
        srv.stop()
