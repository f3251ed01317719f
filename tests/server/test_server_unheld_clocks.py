"""A clock a rank could not hold under load (ReportProfile with ``not_held``): the server drops it from
that stage's sweep, says so once in its log and in the job, and the sweep goes on and completes with
the other clocks; a stage left with fewer than two clocks fails the job with the reason."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from server_helpers import profile_slice

from perseus.cli.main import main as perseus_main
from perseus.client import PerseusClient, PerseusRpcError
from perseus.profile import parse_profile
from perseus.server.app import ServerConfig, ServerThread
from perseus.v1 import scheduler_pb2 as pb
from perseus.v1 import scheduler_pb2_grpc as pb_grpc

SWEEP = [1410, 1200, 1005]


def _job(client: PerseusClient, job_id: str) -> None:
    client.register_job(job_id=job_id, num_stages=2, num_microbatches=2, blocking_power=60.0,
                        frequencies=SWEEP, early_stop_rises=5, warmup_iterations=1, measure_iterations=1)
    for rank in (0, 1):
        client.register_rank(job_id, rank, rank, SWEEP, gpu_name="A100")


def _measure(stage: int, f: int) -> dict[str, tuple[float, float]]:
    profile = profile_slice(2)
    return {k: (profile[(stage, k)].at(f).time, profile[(stage, k)].at(f).energy) for k in ("forward", "backward")}


def test_not_held_reports_are_validated(server: ServerThread, client: PerseusClient) -> None:
    _job(client, "v")
    stub = pb_grpc.SchedulerStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    bad = {
        "measurements": pb.ReportProfileRequest(job_id="v", rank=0, frequency=1410, not_held=True, measurements=[
            pb.InstructionMeasurement(instruction="forward", time=1.0, energy=1.0)]),
        "read_back_mhz: only with not_held": pb.ReportProfileRequest(
            job_id="v", rank=0, frequency=1410, read_back_mhz=[1305],
            measurements=[pb.InstructionMeasurement(instruction="forward", time=1.0, energy=1.0)]),
        "read_back_mhz: at most 16": pb.ReportProfileRequest(job_id="v", rank=0, frequency=1410, not_held=True,
                                                             read_back_mhz=list(range(1000, 1017))),
        "read_back_mhz[1]": pb.ReportProfileRequest(job_id="v", rank=0, frequency=1410, not_held=True,
                                                    read_back_mhz=[1305, 200_000]),
        "frequency": pb.ReportProfileRequest(job_id="v", rank=0, frequency=0, not_held=True),
    }
    for field, request in bad.items():
        with pytest.raises(grpc.RpcError) as info:
            stub.ReportProfile(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in (info.value.details() or ""), (field, info.value.details())
    with pytest.raises(PerseusRpcError) as err:  # an unknown rank cannot drop a clock either
        client.report_profile("v", 7, 1410, {}, not_held=True)
    assert err.value.code.name == "NOT_FOUND"
    job = client.get_job("v")
    assert job.phase == "profiling" and job.sweep_note == ""  # nothing was dropped by the rejected calls


def test_a_dropped_clock_leaves_the_sweep_once_and_the_sweep_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'p.db'}")
    with ServerThread(config) as srv, PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=5) as client:
        _job(client, "held")
        with caplog.at_level(logging.WARNING, logger="perseus.server"):
            ack = client.report_profile("held", 0, 1410, {}, not_held=True, read_back=[1305, 210])
            again = client.report_profile("held", 0, 1410, {}, not_held=True)  # a retry: nothing more
        assert (ack.phase, ack.next.done, ack.next.frequency) == ("profiling", False, 1200)
        assert (again.next.frequency, again.version) == (1200, ack.version)
        drops = [r.getMessage() for r in caplog.records if "dropped from the sweep" in r.getMessage()]
        assert len(drops) == 1 and "stage 0: 1410 MHz" in drops[0] and "1305, 210" in drops[0], drops
        assert client.get_job("held").sweep_note == "dropped clocks a rank could not hold under load (stage 0: 1410 MHz)"
        # Stage 1 still sweeps 1410; stage 0 goes on with 1200 and 1005.
        assert client.get_schedule("held", 1).profiling.frequency == 1410  # type: ignore[union-attr]
        for f in (1200, 1005):
            client.report_profile("held", 0, f, _measure(0, f))
        for f in SWEEP:
            client.report_profile("held", 1, f, _measure(1, f))
        client.wait_for_phase("held", "serving", timeout=60)
        profile = parse_profile(srv.core.profile_of("held") or "", source="x", blocking_power=60.0)
        assert profile[(0, "forward")].frequencies == (1200, 1005)
        assert profile[(1, "forward")].frequencies == tuple(SWEEP)
        assert perseus_main(["jobs", "--server", f"127.0.0.1:{srv.port}"]) == 0
        assert "held: sweep: dropped clocks a rank could not hold under load (stage 0: 1410 MHz)" in capsys.readouterr().out
    with ServerThread(config) as srv, PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=5) as client:
        assert "stage 0: 1410 MHz" in client.get_job("held").sweep_note  # kept across a restart
        client.reprofile_job("held")  # e.g. the power cap was lifted: every clock is tried again
        assert client.get_job("held").sweep_note == ""
        assert client.get_schedule("held", 0).profiling.frequency == 1410  # type: ignore[union-attr]


def test_a_stage_left_with_one_clock_fails_the_job_with_the_reason(server: ServerThread, client: PerseusClient) -> None:
    _job(client, "capped")
    client.report_profile("capped", 0, 1410, _measure(0, 1410))
    first = client.report_profile("capped", 1, 1410, {}, not_held=True)
    assert (first.phase, first.next.frequency) == ("profiling", 1200)
    last = client.report_profile("capped", 1, 1200, {}, not_held=True, read_back=[1005])
    assert last.phase == "failed" and last.next.done
    job = client.get_job("capped")
    assert job.phase == "failed"
    assert job.error.startswith("profiling failed: stage 1 holds 1 of the sweep's 3 clocks under load, fewer than 2")
    assert "perseus jobs reprofile capped" in job.error
    assert job.sweep_note.endswith("(stage 1: 1410, 1200 MHz)")
    assert client.get_schedule("capped", 0).mode == "default"  # every rank stops sweeping
    with pytest.raises(Exception, match="capped failed: profiling failed"):
        client.wait_for_phase("capped", "serving", timeout=5)


def test_a_flat_energy_counter_fails_the_profiling_without_dropping_a_clock(
    server: ServerThread, client: PerseusClient
) -> None:
    # The rank held 1410 MHz but its energy counter did not advance over longer and longer windows: no
    # clock is dropped (another clock would read 0 J too); the job's profiling fails naming the counter.
    _job(client, "flat")
    stub = pb_grpc.SchedulerStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    bad = {
        "counter_flat_s: only alone": pb.ReportProfileRequest(job_id="flat", rank=1, frequency=1410, not_held=True,
                                                              counter_flat_s=0.5),
        "counter_flat_s: at most 86400": pb.ReportProfileRequest(job_id="flat", rank=1, frequency=1410,
                                                                 counter_flat_s=1e9),
        "counter_flat_s": pb.ReportProfileRequest(job_id="flat", rank=1, frequency=1410, counter_flat_s=float("nan")),
    }
    for field, request in bad.items():
        with pytest.raises(grpc.RpcError) as info:
            stub.ReportProfile(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in (info.value.details() or ""), (field, info.value.details())
    assert client.get_job("flat").phase == "profiling"
    ack = client.report_profile("flat", 1, 1410, {}, counter_flat_s=0.8)
    assert ack.phase == "failed" and ack.next.done
    job = client.get_job("flat")
    assert job.phase == "failed" and job.sweep_note == "", job
    assert job.error.startswith("profiling failed: rank 1 (stage 1): the GPU's energy counter did not advance over "
                                "0.80 s of work at 1410 MHz"), job.error
    assert "hold" not in job.error and "perseus jobs reprofile flat" in job.error
    assert client.get_schedule("flat", 0).mode == "default"  # every rank stops sweeping
