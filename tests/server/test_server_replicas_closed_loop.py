"""The closed loop with two ``perseus serve`` replicas on one real PostgreSQL, the ranks of each
pipeline split across them: neither replica receives a whole iteration, yet the automatic straggler
switch happens once (one replica runs the job's loop from every replica's stored reports) and reaches
the ranks watching either replica. When that replica stops, the other takes the loop over."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from server_helpers import ServerProcess, profile_slice

from perseus.client import PerseusClient, ServedSchedule, Target
from perseus.control.drift import DriftConfig
from perseus.control.predict import stage_busy
from perseus.control.straggler import StragglerConfig
from perseus.reports import IterationReport
from perseus.server.app import ServerConfig, ServerThread
from perseus.server.control import ControlConfig

pytestmark = pytest.mark.postgres

CONTROL = ControlConfig(StragglerConfig(window=5, enter=1.1, exit=1.05, confirm=2, dwell=3),
                        DriftConfig(window=5, threshold=0.15, hold=2, max_scale=1.5))
REPLICA_OF_RANK = {0: 0, 1: 0, 2: 1, 3: 1}
"""dp=2 x pp=2: rank = pipeline * 2 + stage; pipeline 0 reports to replica A, pipeline 1 to B (as ranks
spread over a replica list would): neither replica alone sees two pipelines to compare."""


class Watcher(threading.Thread):
    """A rank's schedule stream on its replica, each change stamped with when it arrived."""

    def __init__(self, target: str, rank: int) -> None:
        super().__init__(daemon=True)
        self.client = PerseusClient(target, retry_timeout=30)
        self.rank = rank
        self.seen: list[tuple[float, ServedSchedule]] = []

    def run(self) -> None:
        try:
            for schedule in self.client.watch_schedule("split", self.rank):
                self.seen.append((time.monotonic(), schedule))
        except Exception:  # closed at the end of the test
            return


@pytest.fixture
def replicas(postgres_db: str) -> Iterator[tuple[ServerThread, ServerThread]]:
    config = ServerConfig(port=0, db=postgres_db, control=CONTROL)
    with ServerThread(config) as a, ServerThread(config) as b:
        yield a, b


def test_the_straggler_switch_happens_once_and_reaches_ranks_on_both_replicas(
    replicas: tuple[ServerThread, ServerThread],
) -> None:
    servers = replicas
    events: list[tuple[int, str, float]] = []
    for i, srv in enumerate(servers):
        srv.core.add_control_listener(lambda job_id, event, i=i: events.append((i, event, time.monotonic())))
    clients = [PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=30) for srv in servers]
    profile = profile_slice(2, freq_step=4)
    clients[0].register_job(job_id="split", num_stages=2, num_microbatches=4, dp_degree=2, profile=profile,
                            target=Target.fastest())
    clients[1].wait_for_phase("split", "serving", timeout=60)
    for rank in range(4):
        clients[REPLICA_OF_RANK[rank]].register_rank("split", rank, rank % 2, list(profile.frequencies()),
                                                     pipeline_id=rank // 2)
    plans = {p.name: p.plan for p in clients[0].get_frontier("split", include_plans=True).plans}
    fastest = clients[0].get_schedule("split", 0).plan_name
    watchers = [Watcher(f"127.0.0.1:{servers[REPLICA_OF_RANK[r]].port}", r) for r in range(4)]
    for w in watchers:
        w.start()

    def iteration(step: int, slow: dict[int, float]) -> None:
        """Every rank reports one iteration to its replica: the busy time its served plan predicts, times
        its pipeline's slowdown."""
        for rank in range(4):
            client = clients[REPLICA_OF_RANK[rank]]
            served = client.get_schedule("split", rank).plan_name
            busy = stage_busy(profile, plans[served])
            assert busy is not None
            t, e = busy[rank % 2]
            f = slow.get(rank // 2, 1.0)
            client.report_iterations("split", "run-1", [IterationReport(
                rank, step, plans[served].iteration_time * f, 1.0, served, busy_time=t * f, busy_energy=e * f)])

    deadline = time.monotonic() + 10
    while not any(srv.core._leads("split") for srv in servers):
        assert time.monotonic() < deadline, "no replica runs the job's closed loop"
        time.sleep(0.05)
    # The pipeline reporting to the replica that runs the loop straggles: the other pipeline's plan changes,
    # on the other replica, so the decision must cross replicas to reach its ranks.
    slow = next(i for i, srv in enumerate(servers) if srv.core._leads("split"))
    fast = 1 - slow
    step = 0
    for _ in range(10):  # no straggler: nothing changes
        iteration(step, {})
        step += 1
    time.sleep(1.0)  # the leader's reads of the other replica's reports catch up
    assert events == [] and clients[1].get_job("split").stragglers == {}
    deadline = time.monotonic() + 60
    while not events:  # the pipeline runs 1.25x slower until the loop decides
        assert time.monotonic() < deadline, "no automatic straggler decision within 60 s"
        iteration(step, {slow: 1.25})
        step += 1
        time.sleep(0.05)
    for _ in range(15):  # and goes on doing so: no second decision
        iteration(step, {slow: 1.25})
        step += 1
        time.sleep(0.05)
    time.sleep(1.0)
    assert [e[1] for e in events] == ["stragglers"] and events[0][0] == slow, events
    for client in clients:  # both replicas serve the decision
        job = client.get_job("split")
        assert job.auto_stragglers == (slow,) and job.stragglers[slow] == pytest.approx(1.25, rel=0.02), job
    schedules = [{rank: c.get_schedule("split", rank).plan_name for rank in range(4)} for c in clients]
    assert schedules[0] == schedules[1], schedules
    slower = schedules[0][2 * fast]
    assert slower != fastest and schedules[0][2 * fast + 1] == slower
    assert schedules[0][2 * slow] == schedules[0][2 * slow + 1] == fastest  # the straggler keeps its plan
    decided = events[0][2]
    for w in watchers:  # the fast pipeline's ranks (on the other replica) switch, once; the straggler's do not
        names = [sch.plan_name for _, sch in w.seen]
        assert names == ([fastest, slower] if w.rank // 2 == fast else [fastest]), (w.rank, names)
    arrived = [w.seen[-1][0] - decided for w in watchers if w.rank // 2 == fast]
    print(f"switch decided on replica {'AB'[slow]} reached the ranks on replica {'AB'[fast]} "
          f"{arrived[0]:.3f} s and {arrived[1]:.3f} s later")
    for w in watchers:
        w.client.close()
    for client in clients:
        client.close()


def test_the_other_replica_takes_the_loop_over_when_its_runner_is_killed(postgres_db: str) -> None:
    a = ServerProcess(postgres_db)  # alone at first: it claims the job's loop
    try:
        client = PerseusClient(a.target, retry_timeout=30)
        client.register_job(job_id="split", num_stages=2, num_microbatches=4, dp_degree=2,
                            profile=profile_slice(2, freq_step=4), target=Target.fastest())
        client.wait_for_phase("split", "serving", timeout=60)
        client.close()
        time.sleep(1.0)  # replica A's next loop round (every 0.2 s) claims it
        with ServerThread(ServerConfig(port=0, db=postgres_db, control=CONTROL)) as b:
            time.sleep(2.5)  # B tries to claim the loop every second: A holds it
            assert not b.core._leads("split")
            a.kill9()  # its connections, and the advisory lock with them, go away
            deadline = time.monotonic() + 15
            while not b.core._leads("split"):
                assert time.monotonic() < deadline, "replica B did not take the loop over within 15 s of the kill"
                time.sleep(0.05)
            print(f"replica B took the loop over {15 - (deadline - time.monotonic()):.2f} s after the kill")
    finally:
        a.stop()


def test_the_cap_corrects_measured_power_from_ranks_on_both_replicas(
    replicas: tuple[ServerThread, ServerThread],
) -> None:
    """GPUs drawing 10% over their profile, one rank reporting to each replica: the measured-power
    correction counts both ranks (a replica that knew only its own would halve the job's power)."""
    servers = replicas
    clients = [PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=30) for srv in servers]
    profile = profile_slice(2, freq_step=3)
    clients[0].register_job(job_id="hot", num_stages=2, num_microbatches=4, profile=profile)
    clients[1].wait_for_phase("hot", "serving", timeout=60)
    frontier = [p.energy / p.iteration_time for p in clients[0].get_frontier("hot").plans]
    cap = clients[0].set_power_cap((frontier[0] + min(frontier)) / 2).watts
    assert cap is not None
    for rank in range(2):  # after the cap's solve: no job change tells the other replica of this rank
        clients[rank].register_rank("hot", rank, rank, list(profile.frequencies()))
    first = clients[0].get_job("hot")
    power = {p.name: p.energy / p.iteration_time for p in clients[0].get_frontier("hot").plans}
    served: list[str] = []  # every plan the replicas serve rank 0, in order
    watch = PerseusClient(f"127.0.0.1:{servers[0].port}", retry_timeout=30)
    threading.Thread(target=lambda: served.extend(s.plan_name for s in watch.watch_schedule("hot", 0)),
                     daemon=True).start()
    stop = threading.Event()

    def report(rank: int) -> None:  # half the plan's energy, 10% over the profile, to the rank's replica
        iteration = 0
        while not stop.is_set():
            schedule = clients[rank].get_schedule("hot", rank)
            clients[rank].report_iteration("hot", rank, iteration, schedule.expected_iteration_time,
                                           1.1 * schedule.expected_energy / 2, schedule.plan_name)
            iteration += 1
            time.sleep(0.02)

    reporters = [threading.Thread(target=report, args=(rank,), daemon=True) for rank in range(2)]
    for r in reporters:
        r.start()
    try:
        deadline = time.monotonic() + 30
        while clients[1].get_job("hot").plan_name == first.plan_name:
            assert time.monotonic() < deadline, "the cap did not re-plan the hot job within 30 s"
            time.sleep(0.1)
        time.sleep(5)  # a few more feedback rounds on both replicas
        for client in clients:
            job = client.get_job("hot")
            assert 1.1 * job.planned_power <= cap * (1 + 1e-9) < 1.1 * first.planned_power, job
        ratios = [srv.core._ratios.get("hot") for srv in servers]
        assert all(r is not None and r == pytest.approx(1.1, rel=0.02) for r in ratios), ratios
        # Never a plan drawing more than the first: no replica took half the ranks for the whole job.
        assert served and all(power[name] <= power[first.plan_name] for name in served), served
    finally:
        stop.set()
        for r in reporters:
            r.join(timeout=10)
        for client in [*clients, watch]:
            client.close()


def test_the_loop_replica_feeds_each_of_its_own_reports_to_the_detectors_once(postgres_db: str) -> None:
    """The replica running a job's loop reads every replica's reports from the database, its own
    included: its own stores must not feed the detectors a second time (work on the hot path)."""
    with ServerThread(ServerConfig(port=0, db=postgres_db, control=CONTROL)) as srv:
        fed: list[tuple[str, int, int]] = []
        observe = srv.core._control.observe

        def counted(job_id, num_stages, ranks, plans, profile, run_id, reports):  # type: ignore[no-untyped-def]
            fed.extend((run_id, r.rank, r.iteration) for r in reports)
            return observe(job_id, num_stages, ranks, plans, profile, run_id, reports)

        srv.core._control.observe = counted  # type: ignore[method-assign]
        client = PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=30)
        profile = profile_slice(2, freq_step=4)
        client.register_job(job_id="own", num_stages=2, num_microbatches=4, profile=profile, target=Target.fastest())
        client.wait_for_phase("own", "serving", timeout=60)
        for rank in range(2):
            client.register_rank("own", rank, rank, list(profile.frequencies()))
        deadline = time.monotonic() + 10
        while not srv.core._leads("own"):
            assert time.monotonic() < deadline, "the only replica does not run the job's closed loop"
            time.sleep(0.05)
        plan = client.get_schedule("own", 0).plan_name
        sent = [("run-1", rank, step) for step in range(5) for rank in range(2)]
        for run_id, rank, step in sent:
            client.report_iterations("own", run_id, [IterationReport(rank, step, 1.0, 1.0, plan, busy_time=0.5,
                                                                     busy_energy=0.5)])
        deadline = time.monotonic() + 10
        while not set(sent) <= set(fed):
            assert time.monotonic() < deadline, f"reports not fed to the detectors within 10 s: {fed}"
            time.sleep(0.05)
        time.sleep(1.0)  # several more reads of the report tail: nothing is fed again
        assert sorted(fed) == sorted(sent), fed
        client.close()
