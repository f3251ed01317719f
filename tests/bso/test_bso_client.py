"""The training-side client against a real gRPC server, with simulated GPUs behind EnergyMonitor."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest
from bso_helpers import Clock

from perseus.bso.client import BatchSizeOptimizer, TrainFailError
from perseus.bso.spec import JobSpec
from perseus.device import EnergyMonitor, SimulatedGPU
from perseus.profile import load_profile
from perseus.v1 import bso_pb2, bso_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"


class Sim:
    """Two idle simulated A100s on a settable clock: an epoch of ``s`` seconds costs blocking power x s."""

    def __init__(self) -> None:
        self.now = 0.0
        profile = load_profile(PROFILE)
        self.blocking_power = profile.blocking_power
        self.gpus = [SimulatedGPU(profile, index=i, clock=lambda: self.now) for i in range(2)]
        self.monitor = EnergyMonitor(self.gpus, clock=lambda: self.now)


def job_state(address: str, job_id: str) -> bso_pb2.JobState:
    with grpc.insecure_channel(address) as channel:
        return bso_pb2_grpc.BatchSizeOptimizerStub(channel).GetJob(bso_pb2.GetJobRequest(job_id=job_id))


def train(bso: BatchSizeOptimizer, sim: Sim, converge_epoch: int, epoch_seconds: float = 100.0) -> int:
    """A training loop using the client; returns the number of epochs run."""
    bso.get_batch_size()
    bso.on_train_begin()
    for epoch in range(1, 50):
        sim.now += epoch_seconds
        bso.on_evaluate(0.95 if epoch >= converge_epoch else 0.2)
        if bso.training_finished:
            return epoch
    raise AssertionError("never finished")


def test_client_reports_measured_epochs(bso_server: str) -> None:
    sim = Sim()
    spec = JobSpec("client-job", 32, (16, 32, 64), target_metric=0.9, max_epochs=10)
    with BatchSizeOptimizer(sim.monitor, bso_server, job=spec, handle_signals=False) as bso:
        assert bso.get_batch_size() == 32
        assert bso.job.max_power == pytest.approx(2 * 400.0)  # filled in from the GPUs' power limits (W)
        assert train(bso, sim, converge_epoch=3) == 3
    state = job_state(bso_server, "client-job")
    trial = state.trials[0]
    assert (trial.status, trial.epochs) == ("converged", 3)
    assert trial.time == pytest.approx(300.0)
    assert trial.energy == pytest.approx(2 * sim.blocking_power * 300.0)
    assert trial.cost == pytest.approx(0.5 * trial.energy + 0.5 * 800.0 * 300.0)


def test_server_stop_raises_train_fail_error(bso_server: str) -> None:
    sim = Sim()
    spec = JobSpec("failing", 32, (16, 32), target_metric=0.9, max_epochs=20)
    with BatchSizeOptimizer(sim.monitor, bso_server, job=spec, handle_signals=False) as bso:
        train(bso, sim, converge_epoch=2)
    with BatchSizeOptimizer(sim.monitor, bso_server, job=spec, handle_signals=False) as bso:
        assert bso.get_batch_size() == 16
        with pytest.raises(TrainFailError, match="exceeded beta"):
            train(bso, sim, converge_epoch=99)  # cost passes 2x the best after epoch 5
        assert not bso.training_finished
    trials = job_state(bso_server, "failing").trials
    assert [(t.status, t.epochs) for t in trials] == [("converged", 2), ("stopped", 5)]


def test_exception_in_training_fails_the_trial(bso_server: str) -> None:
    sim = Sim()
    spec = JobSpec("crashy", 32, (16, 32), target_metric=0.9, max_epochs=20)
    with pytest.raises(RuntimeError), BatchSizeOptimizer(sim.monitor, bso_server, job=spec, handle_signals=False) as bso:
        bso.on_train_begin()
        raise RuntimeError("CUDA out of memory")
    trial = job_state(bso_server, "crashy").trials[0]
    assert trial.status == "failed" and "out of memory" in trial.reason


def test_unreachable_server_is_a_clear_error() -> None:
    from bso_helpers import free_port

    from perseus.errors import PerseusError

    sim = Sim()
    spec = JobSpec("nowhere", 32, (16, 32), target_metric=0.9, max_epochs=20)
    bso = BatchSizeOptimizer(sim.monitor, f"127.0.0.1:{free_port()}", job=spec, timeout=0.5, handle_signals=False)
    bso.retry_delay = 0.01
    with pytest.raises(PerseusError, match="batch size optimizer server: UNAVAILABLE"):
        bso.get_batch_size()
    bso.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    from perseus.bso.client import BatchSizeOptimizer
    from perseus.bso.spec import JobSpec
    from perseus.device import EnergyMonitor, get_gpus
    monitor = EnergyMonitor(get_gpus("sim"))
    spec = JobSpec(sys.argv[2], 32, (16, 32), target_metric=0.9, max_epochs=20, lease_seconds=60.0)
    bso = BatchSizeOptimizer(monitor, sys.argv[1], job=spec)
    bso.on_train_begin()
    print("ready", flush=True)
    if sys.argv[3] == "wait":
        time.sleep(60)
    """
)


def spawn(address: str, job_id: str, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, address, job_id, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


@pytest.mark.slow
def test_dying_process_fails_its_trial(clock_server: str, clock: Clock) -> None:
    bso_server = clock_server
    # SIGTERM: the handler ends the trial, then the default action still kills the process.
    proc = spawn(bso_server, "sigterm", "wait")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    trial = job_state(bso_server, "sigterm").trials[0]
    assert trial.status == "failed" and "SIGTERM" in trial.reason
    # Normal exit without ending the trial: the atexit hook fails it.
    proc = spawn(bso_server, "atexit", "exit")
    assert proc.wait(timeout=30) == 0
    assert job_state(bso_server, "atexit").trials[0].status == "failed"
    # SIGKILL: nothing runs in the child; the server's lease expires instead.
    proc = spawn(bso_server, "sigkill", "wait")
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(0.1)
    assert job_state(bso_server, "sigkill").trials[0].status == "running"
    clock.now += 61
    with grpc.insecure_channel(bso_server) as channel:
        bso_pb2_grpc.BatchSizeOptimizerStub(channel).GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id="sigkill"))
    trial = job_state(bso_server, "sigkill").trials[0]
    assert trial.status == "failed" and "lease expired" in trial.reason
