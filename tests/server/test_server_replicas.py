"""Two ``perseus serve`` replicas on one real PostgreSQL: shared jobs, changes that cross replicas,
one frontier computation per job, and a replica killed with SIGKILL mid-run."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import pytest
from server_helpers import Reporter, ServerProcess, free_port, profile_slice, solver_processes
from sqlalchemy import create_engine, text

from perseus.client import PerseusClient, ServedSchedule, Target
from perseus.server.app import ServerConfig, ServerThread

pytestmark = pytest.mark.postgres

STAGES, PIPELINES = 3, 2
RANKS = STAGES * PIPELINES


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.05)


class Watcher(threading.Thread):
    """A rank's schedule stream, as a worker keeps it open."""

    def __init__(self, targets: str, rank: int) -> None:
        super().__init__(daemon=True)
        self.client = PerseusClient(targets, retry_timeout=60)
        self.rank = rank
        self.seen: list[ServedSchedule] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for schedule in self.client.watch_schedule("live", self.rank):
                self.seen.append(schedule)
        except BaseException as exc:
            self.error = exc

    def wait_for(self, plan_name: str, what: str) -> None:
        _wait(lambda: bool(self.seen) and self.seen[-1].plan_name == plan_name, f"rank {self.rank} {what}")


def test_two_replicas_serve_one_job_and_survive_a_sigkill(postgres_db: str) -> None:
    a, b = ServerProcess(postgres_db), ServerProcess(postgres_db)
    try:
        # Ranks of pipeline 0 talk to replica A first, those of pipeline 1 to replica B.
        targets = {0: f"{a.target},{b.target}", 1: f"{b.target},{a.target}"}
        via_a, via_b = PerseusClient(a.target, retry_timeout=60), PerseusClient(b.target, retry_timeout=60)
        profile = profile_slice(STAGES, freq_step=3)
        via_a.register_job(job_id="live", num_stages=STAGES, num_microbatches=4, dp_degree=PIPELINES,
                           profile=profile)
        for rank in range(RANKS):
            PerseusClient(targets[rank // STAGES]).register_rank("live", rank, rank % STAGES, profile.frequencies(),
                                                                 pipeline_id=rank // STAGES)
        via_b.wait_for_phase("live", "serving")
        plans = [p.name for p in via_b.get_frontier("live").plans]
        watchers = [Watcher(targets[rank // STAGES], rank) for rank in range(RANKS)]
        for w in watchers:
            w.start()
        for w in watchers:
            w.wait_for(plans[0], "gets the fastest plan")

        # A change through one replica reaches the ranks watching the other.
        target = via_a.set_target("live", Target.max_slowdown(1.2)).plan_name
        assert target != plans[0]
        for w in watchers:
            w.wait_for(target, "follows a target set through replica A")
        via_b.report_straggler("live", 1, 1.5)
        slower = via_b.get_schedule("live", 0).plan_name
        assert slower != target
        for w in watchers[:STAGES]:
            w.wait_for(slower, "slows down for a straggler reported through replica B")
        before = {rank: via_b.get_schedule("live", rank) for rank in range(RANKS)}
        _wait(lambda: {rank: via_a.get_schedule("live", rank) for rank in range(RANKS)} == before,
              "replica A to serve what replica B serves")

        # A job whose frontier takes hours is computed by one replica only: the one that registered it.
        via_a.register_job(job_id="big", num_stages=8, num_microbatches=4000, profile=profile_slice(8, freq_step=3))
        _wait(lambda: bool(solver_processes(a.proc.pid)), "replica A to start the big job's solver")
        for _ in range(3):  # replica B's once-a-second checks leave it alone
            time.sleep(1.0)
            assert not solver_processes(b.proc.pid), "both replicas compute the same frontier"

        reporters = [Reporter(targets[rank // STAGES], "live", rank) for rank in range(RANKS)]
        for r in reporters:
            r.start()
        _wait(lambda: min(len(r.acked) for r in reporters) >= 5, "every rank to report")
        a.kill9()
        acked_at_kill = [len(r.acked) for r in reporters]
        _wait(lambda: all(len(r.acked) >= n + 5 for r, n in zip(reporters, acked_at_kill, strict=True)),
              "every rank to report through replica B")
        for r in reporters:
            r.stop.set()
            r.join(timeout=30)
            assert r.error is None, r.error

        # Every rank keeps its plan, and the watchers that were on A reconnected to B.
        assert {rank: via_b.get_schedule("live", rank) for rank in range(RANKS)} == before
        via_b.report_straggler("live", 1, 1.0)
        for w in watchers:
            w.wait_for(target, "hears of the recovered straggler after failing over")
            assert w.error is None, w.error
            names = [s.plan_name for s in w.seen]
            assert all(x != y for x, y in itertools.pairwise(names)), f"rank {w.rank} got a schedule twice: {names}"

        # No acknowledged report is lost, and replica B took the dead replica's frontier over.
        engine = create_engine(postgres_db)
        with engine.connect() as conn:
            stored = set(conn.execute(text(
                "SELECT rank, iteration FROM scheduler_iteration_reports WHERE job_id = 'live'")).all())
        engine.dispose()
        for r in reporters:
            assert {(r.rank, i) for i in r.acked} <= stored
        assert via_b.get_job("live").num_iteration_reports == len(stored)
        _wait(lambda: bool(solver_processes(b.proc.pid)), "replica B to take over the big job's frontier")
        assert via_b.get_job("big").phase == "optimizing"
    finally:
        a.stop()
        assert b.stop() == 0


def test_client_fails_over_to_the_next_server(postgres_db: str) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    with ServerThread(ServerConfig(port=0, db=postgres_db)) as srv, \
            PerseusClient(f"{dead},127.0.0.1:{srv.port}", retry_timeout=10) as client:
        assert client.target == dead
        job = client.register_job(job_id="j", num_stages=2, num_microbatches=2,
                                  profile=profile_slice(2, freq_step=3))
        assert job.job_id == "j" and client.target == f"127.0.0.1:{srv.port}"
