"""The closed loop in a real server (gRPC on 127.0.0.1, SQLite): reports with busy time drive it.

Ranks here are plain clients that report what the served plan predicts, times a slowdown: exact
inputs, so the tests check the server's decisions (precedence with manual stragglers, restart,
drift into a re-profile request, the control hook) rather than wall time.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import profile_slice, wait_until

from perseus.client import PerseusClient, Target
from perseus.control.drift import DriftConfig
from perseus.control.predict import stage_busy
from perseus.control.straggler import StragglerConfig
from perseus.profile import PipelineProfile
from perseus.reports import IterationReport
from perseus.server.app import ServerConfig, ServerThread
from perseus.server.control import ControlConfig

CONTROL = ControlConfig(StragglerConfig(window=5, enter=1.1, exit=1.05, confirm=2, dwell=3),
                        DriftConfig(window=5, threshold=0.15, hold=2, max_scale=1.5))


@pytest.fixture(scope="module")
def profile() -> PipelineProfile:
    return profile_slice(2, freq_step=4)


class Job:
    """A dp=2, pp=2 job whose four ranks report busy times of the plan they are served, times ``slow[p]``."""

    def __init__(self, client: PerseusClient, profile: PipelineProfile, job_id: str = "loop") -> None:
        self.client, self.profile, self.job_id, self.iteration = client, profile, job_id, 0
        client.register_job(job_id=job_id, num_stages=2, num_microbatches=4, dp_degree=2, profile=profile,
                            target=Target.fastest())
        client.wait_for_phase(job_id, "serving", timeout=60)
        freqs = list(profile[(0, "forward")].frequencies)
        for rank in range(4):
            client.register_rank(job_id, rank, rank % 2, freqs, pipeline_id=rank // 2)
        self.plans = {p.name: p.plan for p in client.get_frontier(job_id, include_plans=True).plans}

    def run(self, iterations: int, slow: dict[int, float] | None = None, energy: float | None = None) -> None:
        for _ in range(iterations):
            reports = []
            for rank in range(4):
                served = self.client.get_schedule(self.job_id, rank)
                plan = self.plans[served.plan_name]
                busy = stage_busy(self.profile, plan)
                assert busy is not None
                t, e = busy[rank % 2]
                f = (slow or {}).get(rank // 2, 1.0)
                reports.append(IterationReport(rank, self.iteration, plan.iteration_time * f, 1.0, served.plan_name,
                                               busy_time=t * f, busy_energy=e * (energy or f)))
            self.client.report_iterations(self.job_id, "run-1", reports)
            self.iteration += 1


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerThread, PerseusClient]]:
    config = ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'perseus.db'}", control=CONTROL)
    with ServerThread(config) as srv, PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=5) as c:
        yield srv, c


def test_auto_straggler_switches_and_recovers_and_yields_to_manual(
    served: tuple[ServerThread, PerseusClient], profile: PipelineProfile
) -> None:
    server, client = served
    events: list[tuple[str, str]] = []
    server.core.add_control_listener(lambda job_id, event: events.append((job_id, event)))
    job = Job(client, profile)
    fastest = client.get_schedule("loop", 0).plan_name
    job.run(10)
    assert client.get_job("loop").stragglers == {}
    job.run(8, slow={1: 1.25})
    info = client.get_job("loop")
    assert info.auto_stragglers == (1,) and info.stragglers[1] == pytest.approx(1.25)
    assert client.get_schedule("loop", 0).plan_name != fastest  # the fast pipeline keeps pace, at less energy
    assert client.get_schedule("loop", 2).plan_name == fastest  # the straggler keeps its plan
    assert ("loop", "stragglers") in events
    assert info.drift == ""  # one slow pipeline is a straggler, not drift

    # A manual report takes precedence: the detector changes nothing while it stands.
    client.report_straggler("loop", 1, 1.5)
    job.run(12)  # recovered
    info = client.get_job("loop")
    assert info.stragglers == {1: 1.5} and info.auto_stragglers == ()
    # Clearing it hands the job back to the detector, which sees the recovery.
    client.report_straggler("loop", 1, 1.0)
    job.run(8, slow={0: 1.3})
    info = client.get_job("loop")
    assert info.auto_stragglers == (0,) and info.stragglers[0] == pytest.approx(1.3)
    job.run(12)
    assert client.get_job("loop").stragglers == {}
    assert client.get_schedule("loop", 0).plan_name == fastest


def test_auto_stragglers_and_drift_survive_a_restart(tmp_path: Path, profile: PipelineProfile) -> None:
    config = ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'perseus.db'}", control=CONTROL, metrics_port=0)
    with ServerThread(config) as srv, PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=5) as client:
        job = Job(client, profile)
        job.run(10, slow={1: 1.25})
        assert client.get_job("loop").auto_stragglers == (1,)
        job.run(10, slow={0: 2.5, 1: 2.5 * 1.25})  # every copy 2.5x slower: beyond a rescale
        info = client.get_job("loop")
        assert info.drift == "reprofile" and "perseus jobs reprofile loop" in info.drift_note
        text = urllib.request.urlopen(f"http://127.0.0.1:{srv.server.metrics_port}/metrics", timeout=10).read()
        metrics = {(m.name, tuple(sorted(x.labels.items()))): x.value
                   for m in text_string_to_metric_families(text.decode()) for x in m.samples}
        assert metrics[("perseus_job_drifted", (("job", "loop"), ("state", "reprofile")))] == 1
        assert metrics[("perseus_job_stragglers", (("job", "loop"), ("source", "auto")))] == 1
    with ServerThread(config) as srv, PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=5) as client:
        info = client.get_job("loop")
        assert info.auto_stragglers == (1,) and info.drift == "reprofile"
        client.reprofile_job("loop")
        assert client.get_job("loop").drift == ""


def test_drift_rescale_replans_and_never_on_noise(
    served: tuple[ServerThread, PerseusClient], profile: PipelineProfile
) -> None:
    server, client = served
    events: list[str] = []
    server.core.add_control_listener(lambda job_id, event: events.append(event))
    job = Job(client, profile)
    planned = client.get_job("loop").plan_iteration_time
    job.run(30, slow={0: 1.08, 1: 1.05}, energy=1.1)  # within the thresholds: neither drift nor straggler
    assert client.get_job("loop").drift == "" and events == []
    job.run(8, slow={0: 1.3, 1: 1.3}, energy=1.2)
    wait_until(lambda: client.get_job("loop").drift == "replanned", 60, "the job is re-planned")
    info = client.get_job("loop")
    assert events[:2] == ["drifted", "replanned"]
    assert info.plan_iteration_time == pytest.approx(1.3 * planned, rel=0.02)
    assert "time 1.30x, energy 1.20x" in info.drift_note
