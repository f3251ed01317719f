"""``perseus serve --metrics-port``: scraped over HTTP and read with prometheus_client's own parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import profile_slice

from perseus.client import PerseusClient, PerseusRpcError
from perseus.client.stream import StreamRefused
from perseus.errors import InputError
from perseus.reports import IterationReport
from perseus.server.app import ServerConfig, ServerThread
from perseus.server.baselines import build_baseline
from perseus.v1 import scheduler_pb2 as pb
from perseus.v1 import scheduler_pb2_grpc as pb_grpc

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[ServerThread]:
    config = ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'm.db'}", metrics_port=0)
    with ServerThread(config) as srv:
        yield srv


def test_metrics_endpoint(metered: ServerThread) -> None:
    profile = profile_slice(2, freq_step=3)
    port = metered.server.metrics_port
    assert port > 0
    with PerseusClient(f"127.0.0.1:{metered.port}") as client:
        client.register_job(job_id="m", num_stages=2, num_microbatches=3, dp_degree=2, profile=profile)
        job = client.wait_for_phase("m", "serving")
        for rank in range(4):
            client.register_rank("m", rank, rank % 2, profile.frequencies(), pipeline_id=rank // 2)
        # Iteration 1 from every rank, then iteration 2 from two of them: each rank's latest counts.
        energies = {0: 100.0, 1: 150.0, 2: 110.0, 3: 140.0}
        for rank, energy in energies.items():
            client.report_iteration("m", rank, 1, 0.60 + rank / 100, energy)
        energies.update({0: 90.0, 1: 130.0})
        client.report_iteration("m", 0, 2, 0.58, 90.0)
        client.report_iteration("m", 1, 2, 0.59, 130.0)
        with pytest.raises(PerseusRpcError):
            client.get_schedule("nope", 0)
        stream = client.open_report_stream()
        stream.send("m", "r", [IterationReport(0, 3, 0.58, 90.0), IterationReport(1, 3, 0.59, 130.0)])
        with pytest.raises(StreamRefused):
            stream.send("m", "r", [IterationReport(9, 3, 0.58, 90.0)])
        stream.close()
        stub = pb_grpc.SchedulerStub(client._channels[0])
        watch = stub.WatchSchedule(pb.GetScheduleRequest(job_id="m", rank=0), timeout=60)
        next(iter(watch))
        samples = scrape(port)
        watch.cancel()

    def value(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        assert key in samples, f"{key} not scraped; have {sorted(k for k in samples if k[0] == name)}"
        return samples[key]

    all_max = build_baseline(profile, "1f1b", 2, 3, 1, "max-frequency").plan.energy
    measured = sum(energies.values()) / 2  # joules per iteration of one pipeline
    assert value("perseus_jobs", phase="serving") == 1
    assert value("perseus_job_plan_info", job="m", phase="serving", target="fastest", plan=job.plan_name) == 1
    assert value("perseus_job_planned_iteration_seconds", job="m") == pytest.approx(job.plan_iteration_time)
    assert value("perseus_job_planned_iteration_energy_joules", job="m") == pytest.approx(job.plan_energy)
    assert value("perseus_job_iteration_energy_joules", job="m") == pytest.approx(measured)
    assert value("perseus_job_iteration_seconds", job="m") == pytest.approx(0.63)  # rank 3's iteration 1
    assert value("perseus_job_energy_savings_ratio", job="m", source="measured") == pytest.approx(1 - measured / all_max)
    assert value("perseus_job_energy_savings_ratio", job="m", source="planned") == pytest.approx(
        1 - job.plan_energy / all_max)
    assert 0 <= value("perseus_job_report_lag_seconds", job="m") < 120
    assert value("perseus_job_iteration_reports_total", job="m") == 8
    assert value("perseus_watch_streams_open") == 1
    rpc = "perseus_rpc_duration_seconds_count"
    assert value(rpc, method="perseus.v1.Scheduler/ReportIteration", code="OK") == 6
    assert value(rpc, method="perseus.v1.Scheduler/GetSchedule", code="NOT_FOUND") == 1
    assert value(rpc, method="perseus.v1.Scheduler/RegisterRank", code="OK") == 4
    assert value(rpc, method="perseus.v1.Scheduler/StreamReports", code="OK") == 1  # one per batch
    assert value(rpc, method="perseus.v1.Scheduler/StreamReports", code="NOT_FOUND") == 1


def test_deleted_jobs_leave_the_metrics(metered: ServerThread) -> None:
    profile = profile_slice(1, freq_step=3)
    port = metered.server.metrics_port
    with PerseusClient(f"127.0.0.1:{metered.port}") as client:
        client.register_job(job_id="gone", num_stages=1, num_microbatches=1, profile=profile)
        client.wait_for_phase("gone", "serving")
        client.register_rank("gone", 0, 0, profile.frequencies())
        client.report_iteration("gone", 0, 1, 0.5, 50.0)
        assert scrape(port)[("perseus_job_iteration_energy_joules", (("job", "gone"),))] == 50.0
        client.delete_job("gone")
    assert not [key for key in scrape(port) if ("job", "gone") in key[1]]


def test_a_metrics_port_in_use_is_one_clear_error(metered: ServerThread, tmp_path: Path) -> None:
    taken = metered.server.metrics_port
    with pytest.raises(InputError, match=f"--metrics-port: cannot bind 127.0.0.1:{taken}: "):
        ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'other.db'}", metrics_port=taken))
