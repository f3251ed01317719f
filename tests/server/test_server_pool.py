"""The frontier pool: small jobs never wait behind big ones, limits fail a job with a reason, cancellation."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from server_helpers import profile_csv, profile_slice, solver_processes

from perseus.client import PerseusClient
from perseus.server.app import ServerConfig, ServerThread
from perseus.server.optimize import WARM_UP, FrontierRequest, compute_frontier_plans
from perseus.server.pool import FrontierPool, PoolLimits

PROFILE8 = profile_slice(8, freq_step=3)
#: 8 stages x 4000 microbatches: a frontier that takes hours and grows to gigabytes.
BIG = dict(num_stages=8, num_microbatches=4000, profile=PROFILE8)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.02)


def _request(job_id: str, microbatches: int) -> FrontierRequest:
    return FrontierRequest(job_id, profile_csv(PROFILE8), PROFILE8.blocking_power, "1f1b", 8, microbatches, 1)


def test_small_job_is_served_while_a_big_one_computes(tmp_path: Path) -> None:
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'p.db'}")) as srv, \
            PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=5) as client:
        client.register_job(job_id="big", **BIG)  # type: ignore[arg-type]
        _wait(lambda: bool(solver_processes(os.getpid())), "the big job's solver to start")
        client.register_job(job_id="small", num_stages=2, num_microbatches=3, profile=profile_slice(2, freq_step=3))
        job = client.wait_for_phase("small", "serving", timeout=120)
        assert job.frontier_size > 0
        assert client.get_job("big").phase == "optimizing"
    assert not solver_processes(os.getpid()), "stopping the server must stop its solvers"


def test_queue_starts_smallest_first_and_keeps_a_slot_for_small_jobs() -> None:
    done: list[str] = []
    pool = FrontierPool(PoolLimits(workers=2), lambda request, plans, error: done.append(request.job_id))
    try:
        pool.submit(_request("big-1", 4000))
        pool.submit(_request("big-2", 3000))
        # The second slot stays free for small jobs: the other big job waits.
        assert pool.jobs() == (["big-1"], ["big-2"])
        pool.submit(_request("medium", 100))
        pool.submit(_request("small", 2))
        running, queued = pool.jobs()
        assert running == ["big-1", "medium"] and queued == ["small", "big-2"]  # smallest first
        assert pool.cancel("medium")
        _wait(lambda: pool.jobs()[0] == ["big-1", "small"], "the small job to take the freed slot")
        assert not pool.cancel("unknown")
    finally:
        pool.close()
    _wait(lambda: not solver_processes(os.getpid()), "closing the pool to kill its children")
    assert "medium" not in done and "big-1" not in done  # cancelled or stopped: never reported


def test_time_and_memory_limits_fail_the_job_with_a_reason(tmp_path: Path) -> None:
    results: dict[str, tuple[object, str]] = {}
    finished = threading.Event()

    def on_done(request: FrontierRequest, plans: object, error: str) -> None:
        results[request.job_id] = (plans, error)
        finished.set()

    # Compile the solver's kernels into numba's cache here, where no limit runs: the memory case's
    # child then loads them (about a second) instead of compiling them (tens of seconds on a busy machine).
    compute_frontier_plans(WARM_UP)
    # Every case has a time backstop: a child that never hits its memory limit fails with a reason, not a hang.
    for limits, reason in ((PoolLimits(workers=1, time_limit_s=3), "exceeded the time limit of 3 s"),
                           (PoolLimits(workers=1, memory_limit_mib=300, time_limit_s=90),
                            "exceeded the memory limit of 300 MiB")):
        finished.clear()
        pool = FrontierPool(limits, on_done)
        try:
            pool.submit(_request("big", 4000))
            assert finished.wait(120), f"no answer with {limits}"
        finally:
            pool.close()
        assert results["big"] == (None, reason)

    config = ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'l.db'}", frontier=PoolLimits(time_limit_s=3))
    with ServerThread(config) as srv, PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=5) as client:
        client.register_job(job_id="big", **BIG)  # type: ignore[arg-type]
        _wait(lambda: client.get_job("big").phase == "failed", "the job to fail", timeout=120)
        assert client.get_job("big").error == "frontier computation failed: exceeded the time limit of 3 s"


def test_cancel_stops_the_solver(tmp_path: Path) -> None:
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'c.db'}")) as srv, \
            PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=5) as client:
        client.register_job(job_id="big", **BIG)  # type: ignore[arg-type]
        _wait(lambda: bool(solver_processes(os.getpid())), "the solver to start")
        assert srv.core.cancel_frontier("big")
        _wait(lambda: not solver_processes(os.getpid()), "the cancelled solver to exit")
        assert client.get_job("big").phase == "optimizing"  # the caller (delete, re-profile) decides what next
        assert not srv.core.cancel_frontier("big")
