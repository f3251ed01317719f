"""Kill -9 a real ``perseus serve`` subprocess mid-job and restart it: nothing acknowledged is lost."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from server_helpers import (
    Reporter,
    ServerProcess,
    SimulatedRank,
    profile_csv,
    profile_slice,
    solver_processes,
    wait_until,
)

from perseus.client import PerseusClient, Target
from perseus.profile import parse_profile
from perseus.solver import compute_frontier


def test_kill9_while_serving_then_restart(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'perseus.db'}"
    profile = profile_slice(3, freq_step=3)
    first = ServerProcess(db)
    target = first.target
    try:
        client = PerseusClient(target, retry_timeout=60)
        client.register_job(job_id="live", num_stages=3, num_microbatches=4, dp_degree=2, profile=profile)
        for rank in range(6):
            client.register_rank("live", rank, rank % 3, profile.frequencies(), pipeline_id=rank // 3)
        client.wait_for_phase("live", "serving")
        job = client.set_target("live", Target.max_slowdown(1.1))
        client.report_straggler("live", 1, 1.3)
        before = {rank: client.get_schedule("live", rank) for rank in range(6)}

        watched: list = []
        watch_started = threading.Event()

        def watch() -> None:
            for schedule in PerseusClient(target, retry_timeout=60).watch_schedule("live", 0):
                watched.append(schedule)
                watch_started.set()
                if len(watched) == 2:
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert watch_started.wait(30)
        reporters = [Reporter(target, "live", rank) for rank in range(3)]
        for r in reporters:
            r.start()
        wait_until(lambda: min(len(r.acked) for r in reporters) >= 5, 60, "every reporter has 5 acknowledged reports")
        # A second job still optimizing when the server dies must finish after the restart.
        client.register_job(job_id="pending", num_stages=2, num_microbatches=2, profile=profile_csv(profile_slice(2)),
                            blocking_power=80.0)
        first.kill9()
        acked_at_kill = [len(r.acked) for r in reporters]
        second = ServerProcess(db, port=first.port)
    finally:
        if first.proc.poll() is None:
            first.kill9()
    try:
        # Reporters ride through the restart on their own (retries on UNAVAILABLE).
        def five_more_or_error() -> bool:
            if any(r.error is not None for r in reporters):
                return True
            return min(len(r.acked) - n for r, n in zip(reporters, acked_at_kill, strict=True)) >= 5

        wait_until(five_more_or_error, 120, "every reporter has 5 more acknowledged reports after the restart")
        assert all(r.error is None for r in reporters), [r.error for r in reporters]
        for r in reporters:
            r.stop.set()
            r.join(timeout=30)
            assert not r.is_alive(), f"reporter {r.rank} still running 30 s after stop"
            assert r.error is None
        after = {rank: client.get_schedule("live", rank) for rank in range(6)}
        for rank in range(6):  # same plans, ids and version: ranks continue where they were
            assert after[rank] == before[rank]
        assert client.get_job("live").plan_name == job.plan_name
        assert client.get_job("live").stragglers == {1: pytest.approx(1.3)}

        # Every acknowledged iteration report is in the database.
        con = sqlite3.connect(tmp_path / "perseus.db")
        stored = set(con.execute("SELECT rank, iteration FROM scheduler_iteration_reports WHERE job_id='live'"))
        con.close()
        for r in reporters:
            assert {(r.rank, i) for i in r.acked} <= stored
        assert client.get_job("live").num_iteration_reports == len(stored)

        # The watcher reconnected without a duplicate and sees the next change.
        client.report_straggler("live", 1, 1.0)
        watcher.join(timeout=30)
        assert not watcher.is_alive(), f"the watcher saw {len(watched)} schedules, not 2, in 30 s"
        assert [w.plan_name for w in watched] == [before[0].plan_name, job.plan_name]
        assert client.wait_for_phase("pending", "serving").frontier_size > 0
    finally:
        assert second.stop() == 0


def test_kill9_leaves_no_solver_behind_and_restart_resumes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'perseus.db'}"
    first = ServerProcess(db)
    client = PerseusClient(first.target, retry_timeout=60)
    client.register_job(job_id="big", num_stages=8, num_microbatches=4000, profile=profile_slice(8, freq_step=3))
    solvers = _solvers_of(first)
    first.kill9()
    deadline = time.monotonic() + 30
    while set(solver_processes()) & set(solvers):
        assert time.monotonic() < deadline, f"solver processes {solvers} outlived the killed server"
        time.sleep(0.05)
    second = ServerProcess(db, port=first.port)
    try:
        resumed = _solvers_of(second)  # the job was left optimizing: computed again
        client.register_job(job_id="small", num_stages=2, num_microbatches=2,
                            profile=profile_csv(profile_slice(2)), blocking_power=80.0)
        assert client.wait_for_phase("small", "serving", timeout=120).frontier_size > 0
        assert client.get_job("big").phase == "optimizing"
    finally:
        assert second.stop() == 0
    assert not set(solver_processes()) & set(resumed)


def _solvers_of(server: ServerProcess) -> list[int]:
    deadline = time.monotonic() + 60
    while not (found := solver_processes(server.proc.pid)):
        assert time.monotonic() < deadline, "the server started no solver process"
        time.sleep(0.05)
    return found


@pytest.mark.slow
def test_kill9_mid_sweep_then_restart(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'perseus.db'}"
    profile = profile_slice(2, freq_step=1)
    server = ServerProcess(db)
    client = PerseusClient(server.target, retry_timeout=60)
    client.register_job(job_id="sweep", num_stages=2, num_microbatches=3, blocking_power=profile.blocking_power,
                        early_stop_rises=40)  # no early stop: all 38 clocks
    ranks = [SimulatedRank(server.target, "sweep", r, r, profile) for r in range(2)]
    for r in ranks:
        r.start()
    wait_until(lambda: min(len(r.reported) for r in ranks) >= 10 or any(r.error for r in ranks), 120,
               "both ranks have reported 10 sweep measurements")
    assert all(r.error is None for r in ranks), [r.error for r in ranks]
    server.kill9()
    second = ServerProcess(db, port=server.port)
    try:
        for r in ranks:
            r.join(timeout=120)
            assert not r.is_alive() and r.error is None, r.error
        job = client.wait_for_phase("sweep", "serving", timeout=120)
        assembled = parse_profile(_profile_of(tmp_path), source="db", blocking_power=profile.blocking_power)
        for key in profile.instructions:
            assert assembled[key].frequencies == profile[key].frequencies
            assert [m.time for m in assembled[key].measurements] == [m.time for m in profile[key].measurements]
        assert job.frontier_size == len(compute_frontier(assembled, "1f1b", 2, 3).plans)
    finally:
        assert second.stop() == 0


def _profile_of(tmp_path: Path) -> str:
    con = sqlite3.connect(tmp_path / "perseus.db")
    (text,) = con.execute("SELECT profile_csv FROM scheduler_jobs WHERE id='sweep'").fetchone()
    con.close()
    return str(text)


def test_clean_shutdown_with_open_watch_streams_logs_no_traceback(tmp_path: Path) -> None:
    """SIGTERM ends open WatchSchedule streams with UNAVAILABLE (clients reconnect) and logs no traceback."""
    import grpc

    from perseus.v1 import scheduler_pb2 as pb
    from perseus.v1 import scheduler_pb2_grpc as pb_grpc

    server = ServerProcess(f"sqlite:///{tmp_path / 'perseus.db'}", extra=("--log-level", "debug"))
    try:
        profile = profile_slice(2, freq_step=3)
        with PerseusClient(server.target, retry_timeout=5) as client:
            client.register_job(job_id="w", num_stages=2, num_microbatches=3, profile=profile)
            client.register_rank("w", 0, 0, profile.frequencies())
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.SchedulerStub(channel)
            streams = [stub.WatchSchedule(pb.GetScheduleRequest(job_id="w", rank=0), timeout=60) for _ in range(3)]
            for stream in streams:
                assert next(stream).job_id == "w"  # open: the first schedule arrived
            assert server.stop() == 0
            for stream in streams:
                with pytest.raises(grpc.RpcError) as ended:
                    for _ in stream:
                        pass
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
    finally:
        server.stop()
    assert server.proc.stderr is not None
    log = server.proc.stderr.read()
    assert "Traceback" not in log and "CancelledError" not in log and "ERROR" not in log, log
