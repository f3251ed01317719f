"""``StreamReports`` against a real server on 127.0.0.1: acked means committed, kills lose nothing, limits hold.

A rank's reports ride one long-lived stream (:mod:`perseus.client.stream`); each batch is
acknowledged after its group commit. These tests hold the SQLite write lock to show no ack comes
before the commit, kill -9 the server under a streaming sender, and check the stream limits and the
answers to bad batches and undecodable messages, and the fallback to unary calls when the server
has no streams.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from server_helpers import ServerProcess, free_port, wait_until

from perseus.client import PerseusClient
from perseus.client.health import LinkHealth
from perseus.client.reporter import BackgroundReporter
from perseus.client.stream import StreamFailed, StreamRefused
from perseus.reports import IterationReport
from perseus.server import app
from perseus.server.app import ServerConfig, ServerThread
from perseus.server.guard import GuardInterceptor
from perseus.server.limits import Limits
from perseus.v1 import scheduler_pb2 as pb
from perseus.v1 import scheduler_pb2_grpc as pb_grpc

JOB = "s"


def _register(target: str, ranks: int = 2) -> None:
    with PerseusClient(target, retry_timeout=10) as client:
        client.register_job(job_id=JOB, model="m", num_stages=ranks, num_microbatches=ranks)
        for rank in range(ranks):
            client.register_rank(JOB, rank, rank, [1410])


def _stored(db: Path) -> list[tuple[int, int]]:
    """(rank, iteration) of every stored report of the job, read from the file (what survived)."""
    con = sqlite3.connect(db)
    try:
        return sorted(con.execute("SELECT rank, iteration FROM scheduler_iteration_reports WHERE job_id=?", (JOB,)))
    finally:
        con.close()


def _report(rank: int, i: int) -> IterationReport:
    return IterationReport(rank, i, 1.0 + i / 1000, 50.0)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    db = tmp_path / "p.db"
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{db}",
                                   limits=Limits(max_report_streams=3, max_report_streams_per_client=2))) as srv:
        _register(f"127.0.0.1:{srv.port}")
        yield srv, db


def test_a_batch_is_acked_only_after_its_commit(served: tuple[ServerThread, Path]) -> None:
    srv, db = served
    with PerseusClient(f"127.0.0.1:{srv.port}", timeout=20) as client:
        stream = client.open_report_stream()
        assert stream.send(JOB, "r", [_report(0, 0)]).stored == 1
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # the server's commit now waits (its busy timeout is 30 s)
        acks: queue.SimpleQueue[object] = queue.SimpleQueue()
        sender = threading.Thread(target=lambda: acks.put(stream.send(JOB, "r", [_report(0, 1), _report(1, 1)])))
        sender.start()
        with pytest.raises(queue.Empty):
            acks.get(timeout=0.5)  # queued, not committed: no ack
        lock.execute("ROLLBACK")
        lock.close()
        ack = acks.get(timeout=20)
        sender.join(timeout=20)
        assert ack.stored == 2 and ack.duplicates == 0  # type: ignore[attr-defined]
        assert _stored(db) == [(0, 0), (0, 1), (1, 1)]
        again = stream.send(JOB, "r", [_report(0, 1), _report(0, 2)])  # a resend after a lost ack
        assert (again.stored, again.duplicates) == (1, 1)
        stream.close()


def test_a_refused_batch_gets_one_clear_error_and_the_stream_goes_on(served: tuple[ServerThread, Path]) -> None:
    srv, db = served
    with PerseusClient(f"127.0.0.1:{srv.port}", timeout=20) as client:
        stream = client.open_report_stream()
        with pytest.raises(StreamRefused) as unknown:
            stream.send(JOB, "r", [_report(7, 0)])
        assert unknown.value.code == grpc.StatusCode.NOT_FOUND and "rank 7" in unknown.value.details
        with pytest.raises(StreamRefused) as bad_run:
            stream.send(JOB, "r\n", [_report(0, 0)])
        assert bad_run.value.code == grpc.StatusCode.INVALID_ARGUMENT and "run_id" in bad_run.value.details
        with pytest.raises(StreamRefused) as too_many:
            stream.send(JOB, "r", [_report(0, i) for i in range(4097)])
        assert too_many.value.code == grpc.StatusCode.INVALID_ARGUMENT and "4096" in too_many.value.details
        assert stream.send(JOB, "r", [_report(0, 0)]).stored == 1  # the same stream still works
        stream.close()
    assert _stored(db) == [(0, 0)]


def test_an_undecodable_message_ends_the_stream_with_invalid_argument(
    served: tuple[ServerThread, Path], caplog: pytest.LogCaptureFixture
) -> None:
    srv, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        raw = channel.stream_stream("/perseus.v1.Scheduler/StreamReports")  # bytes in, bytes out
        with caplog.at_level(logging.WARNING, logger="perseus.server"):
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as err:
                    list(raw(iter([b"\xff\xff\xff"]), timeout=20))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "not a valid protobuf message" in (err.value.details() or "")
    lines = [r for r in caplog.records if "StreamReports" in r.getMessage()]
    assert len(lines) == 1 and "Traceback" not in caplog.text  # one rate-limited line, no traceback


def test_report_streams_are_limited_per_client(served: tuple[ServerThread, Path]) -> None:
    srv, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        stub = pb_grpc.SchedulerStub(channel)
        open_streams = []
        for i in range(2):
            requests: queue.SimpleQueue[pb.ReportBatch | None] = queue.SimpleQueue()
            call = stub.StreamReports(iter(requests.get, None), timeout=60)
            requests.put(pb.ReportBatch(seq=1, job_id=JOB, run_id="r", reports=[
                pb.IterationReport(rank=0, iteration=i, time=1.0, energy=5.0)]))
            assert next(call).stored == 1  # open and serving
            open_streams.append((call, requests))
        with pytest.raises(StreamFailed) as err:
            PerseusClient(f"127.0.0.1:{srv.port}", timeout=20).open_report_stream().send(JOB, "r", [_report(0, 9)])
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details == ("ipv4:127.0.0.1 has 2 open report streams, the per-client limit "
                                     "(perseus serve --max-report-streams-per-client)")
        call, requests = open_streams.pop()
        requests.put(None)  # a stream that ends frees its slot
        assert list(call) == []
        with PerseusClient(f"127.0.0.1:{srv.port}", timeout=20) as client:
            wait_until(lambda: _sends(client), 20, "the ended stream's slot is free")
        for call, requests in open_streams:
            requests.put(None)
            call.cancel()


def _sends(client: PerseusClient) -> bool:
    try:
        stream = client.open_report_stream()
        stream.send(JOB, "r", [_report(1, 0)])
        stream.close()
        return True
    except StreamFailed:
        return False


def test_streamed_reports_survive_kill9_nothing_lost_nothing_twice(tmp_path: Path) -> None:
    """Acked reports are on disk at the kill; the sender resends the un-acked ones to the restarted server."""
    db = tmp_path / "p.db"
    port = free_port()
    server = ServerProcess(f"sqlite:///{db}", port=port)
    second: ServerProcess | None = None
    lines: list[str] = []
    client = PerseusClient(server.target, retry_timeout=0.0, timeout=2.0)
    reporter = BackgroundReporter(client, JOB, "r", tmp_path / "spill.jsonl", health=LinkHealth(server.target,
                                  lines.append), warn=lines.append, flush_timeout=30.0)
    try:
        _register(server.target)
        for i in range(40):
            reporter.put(_report(i % 2, i))
            time.sleep(0.005)
        wait_until(lambda: len(_stored(db)) == 40, 30, "40 reports stored")
        stream = client.open_report_stream()  # a second stream, to check acked = durable at the kill
        acked: list[int] = []
        sending = threading.Event()

        def send_until_killed() -> None:
            try:
                for i in range(1000, 100_000):
                    stream.send(JOB, "r", [_report(1, i)])
                    acked.append(i)
                    sending.set()
            except StreamFailed:
                pass

        flood = threading.Thread(target=send_until_killed)
        flood.start()
        assert sending.wait(30)
        for i in range(40, 60):  # queued while the server dies: resent after the restart
            reporter.put(_report(i % 2, i))
        server.kill9()
        flood.join(timeout=30)
        on_disk = set(_stored(db))
        assert {(1, i) for i in acked} <= on_disk  # every ack meant a commit
        for i in range(60, 80):
            reporter.put(_report(i % 2, i))
        second = ServerProcess(f"sqlite:///{db}", port=port)
        delivery = reporter.close()
        assert (delivery.pending, delivery.rejected, delivery.dropped) == (0, 0, 0)
        stored = [(rank, i) for rank, i in _stored(db) if i < 1000]
        assert stored == sorted((i % 2, i) for i in range(80))  # all of them, each once
        with PerseusClient(second.target) as check:
            assert check.get_job(JOB).num_iteration_reports == len(_stored(db))
        assert sum("unreachable" in line for line in lines) == 1, lines  # one warning for the outage
    finally:
        client.close()
        server.stop()
        if second is not None:
            assert second.stop() == 0


def test_sigterm_ends_idle_report_streams_with_unavailable_and_no_traceback(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'p.db'}", extra=("--log-level", "debug"))
    try:
        _register(server.target)
        with PerseusClient(server.target, timeout=20) as client:
            streams = [client.open_report_stream() for _ in range(3)]
            for i, stream in enumerate(streams):
                assert stream.send(JOB, "r", [_report(0, i)]).stored == 1
            assert server.stop() == 0
            for stream in streams:
                with pytest.raises(StreamFailed) as ended:
                    stream.send(JOB, "r", [_report(0, 99)])
                assert ended.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()
    assert server.proc.stderr is not None
    log = server.proc.stderr.read()
    assert "Traceback" not in log and "CancelledError" not in log and "ERROR" not in log, log


class _WithoutStreams(GuardInterceptor):
    """The real guard, but StreamReports is unknown (UNIMPLEMENTED), as on a server from before streams."""

    def wrap(self, handler: Any, method: str, metadata: Any) -> Any:
        return None if method.endswith("/StreamReports") else super().wrap(handler, method, metadata)


def test_a_server_without_streams_gets_unary_calls_and_the_sender_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "GuardInterceptor", _WithoutStreams)
    db = tmp_path / "p.db"
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{db}")) as srv:
        target = f"127.0.0.1:{srv.port}"
        _register(target)
        lines: list[str] = []
        client = PerseusClient(target, retry_timeout=0.0, timeout=5.0)
        reporter = BackgroundReporter(client, JOB, "r", tmp_path / "spill.jsonl", health=LinkHealth(target),
                                      warn=lines.append, interval=0.05)
        for i in range(20):
            reporter.put(_report(i % 2, i))
            time.sleep(0.01)
        delivery = reporter.close()
        client.close()
    assert (delivery.sent, delivery.pending, delivery.rejected, delivery.dropped) == (20, 0, 0, 0)
    assert _stored(db) == sorted((i % 2, i) for i in range(20))
    assert lines == [f"perseus: server {target} has no report streams (an older server); sending reports in "
                     "ReportIterations calls every 0.05 s"]
