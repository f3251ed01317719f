"""The BatchSizeOptimizer gRPC service over a real server on 127.0.0.1 and a SQLite file."""

from __future__ import annotations

import threading

import grpc
import pytest
from bso_helpers import Clock

from perseus.bso.convert import spec_to_proto
from perseus.bso.spec import JobSpec
from perseus.v1 import bso_pb2, bso_pb2_grpc

SPEC = JobSpec("resnet-nightly", 32, (8, 16, 32, 64, 128), target_metric=0.9, max_epochs=10, max_power=300.0)
CONVERGE_EPOCH = {8: 99, 16: 3, 32: 3, 64: 4, 128: 99}  # 8 and 128 never converge


def register(stub: bso_pb2_grpc.BatchSizeOptimizerStub, spec: JobSpec = SPEC) -> bso_pb2.RegisterJobResponse:
    return stub.RegisterJob(bso_pb2.RegisterJobRequest(spec=spec_to_proto(spec)))


def run_trial(stub: bso_pb2_grpc.BatchSizeOptimizerStub, job_id: str = SPEC.job_id) -> tuple[int, int]:
    """Run one trial to its end on the synthetic workload; returns (batch size, final decision)."""
    got = stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id=job_id))
    for epoch in range(1, 100):
        metric = 0.95 if epoch >= CONVERGE_EPOCH[got.batch_size] else 0.1
        answer = stub.ReportEpoch(bso_pb2.ReportEpochRequest(
            job_id=job_id, trial_number=got.trial_number, epoch=epoch, time=3200.0 / got.batch_size,
            energy=250.0 * 3200.0 / got.batch_size, metric=metric))  # fmt: skip
        if answer.decision != bso_pb2.DECISION_CONTINUE:
            return got.batch_size, answer.decision
    raise AssertionError("trial never ended")


def test_register_is_idempotent_and_validated(stub: bso_pb2_grpc.BatchSizeOptimizerStub) -> None:
    assert register(stub).created
    again = register(stub)
    assert not again.created and list(again.spec.batch_sizes) == [8, 16, 32, 64, 128]
    with pytest.raises(grpc.RpcError) as err:
        register(stub, JobSpec(SPEC.job_id, 32, (16, 32), 0.9, 10, max_power=300.0))
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "batch_sizes" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        register(stub, JobSpec("other", 32, (16,), 0.9, 10, beta=0.5, max_power=300.0))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "beta" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id="nope"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


def test_full_search_prunes_and_samples(stub: bso_pb2_grpc.BatchSizeOptimizerStub) -> None:
    register(stub)
    outcomes = [run_trial(stub) for _ in range(14)]
    assert [bs for bs, _ in outcomes[:5]] == [32, 16, 8, 64, 128]
    assert outcomes[2][1] == bso_pb2.DECISION_STOP_COST  # batch 8 converges late: stopped at beta x best cost
    state = stub.GetJob(bso_pb2.GetJobRequest(job_id=SPEC.job_id))
    assert state.phase == "bandit" and list(state.survivors) == [16, 32, 64]
    converged = [t.cost for t in state.trials if t.status == "converged"]
    assert state.has_best and state.best_cost == pytest.approx(min(converged))
    assert {t.batch_size for t in state.trials if t.kind == "bandit"} <= {16, 32, 64}
    # cost = 0.5 * energy + 0.5 * 300 W * time, accumulated per epoch
    t1 = state.trials[0]
    assert t1.cost == pytest.approx(0.5 * t1.energy + 0.5 * 300.0 * t1.time)
    assert t1.epochs == 3 and t1.time == pytest.approx(3 * 100.0)


def test_concurrent_trials_and_duplicate_reports(stub: bso_pb2_grpc.BatchSizeOptimizerStub) -> None:
    register(stub)
    first = stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id=SPEC.job_id))
    second = stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id=SPEC.job_id))
    assert (first.kind, second.kind) == ("exploration", "concurrent")
    assert second.trial_number == first.trial_number + 1 and second.batch_size == 32
    request = bso_pb2.ReportEpochRequest(job_id=SPEC.job_id, trial_number=first.trial_number, epoch=1,
                                         time=10.0, energy=100.0, metric=0.1)  # fmt: skip
    a = stub.ReportEpoch(request)
    b = stub.ReportEpoch(request)  # a retry of the same epoch changes nothing
    assert a.cost == b.cost and b.message == "duplicate report ignored"
    with pytest.raises(grpc.RpcError) as err:
        stub.ReportEpoch(bso_pb2.ReportEpochRequest(job_id=SPEC.job_id, trial_number=first.trial_number, epoch=5,
                                                    time=1.0, energy=1.0, metric=0.1))  # fmt: skip
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "epoch 2" in err.value.details()
    ended = stub.EndTrial(bso_pb2.EndTrialRequest(job_id=SPEC.job_id, trial_number=second.trial_number,
                                                  failed=True, reason="OOM"))  # fmt: skip
    assert ended.status == "failed"
    late = stub.ReportEpoch(bso_pb2.ReportEpochRequest(job_id=SPEC.job_id, trial_number=second.trial_number,
                                                       epoch=1, time=1.0, energy=1.0, metric=0.99))  # fmt: skip
    assert late.decision == bso_pb2.DECISION_STOP_ENDED


def test_lease_expiry_fails_silent_trials(clock_stub: bso_pb2_grpc.BatchSizeOptimizerStub, clock: Clock) -> None:
    stub = clock_stub
    register(stub, JobSpec("leased", 32, (16, 32), 0.9, 10, max_power=300.0, lease_seconds=60.0))
    first = stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id="leased"))
    clock.now += 30
    stub.ReportEpoch(bso_pb2.ReportEpochRequest(job_id="leased", trial_number=first.trial_number, epoch=1,
                                                time=1.0, energy=1.0, metric=0.1))  # fmt: skip
    clock.now += 59  # the report renewed the lease
    nxt = stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id="leased"))
    assert nxt.kind == "concurrent"
    clock.now += 61
    state = stub.GetJob(bso_pb2.GetJobRequest(job_id="leased"))
    assert [t.status for t in state.trials] == ["running", "running"]  # GetJob is read-only
    third = stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id="leased"))
    state = stub.GetJob(bso_pb2.GetJobRequest(job_id="leased"))
    assert [t.status for t in state.trials[:2]] == ["failed", "failed"]
    assert "lease expired" in state.trials[0].reason
    # A dead exploration is retried once (it may have been preempted) ...
    assert (third.kind, third.batch_size) == ("exploration", 32)
    clock.now += 61
    fourth = stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id="leased"))
    # ... and a second failure counts as not converged: exploring down stops at the default and there
    # is nothing above it, so pruning ends with only the default left.
    assert (fourth.kind, fourth.batch_size) == ("bandit", 32)


def test_many_threads_one_job(bso_server: str) -> None:
    """Concurrent trials from many threads: numbers unique, pruning history stays consistent."""
    with grpc.insecure_channel(bso_server) as channel:
        stub = bso_pb2_grpc.BatchSizeOptimizerStub(channel)
        register(stub)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(4):
                    run_trial(stub)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        state = stub.GetJob(bso_pb2.GetJobRequest(job_id=SPEC.job_id))
        assert sorted(t.trial_number for t in state.trials) == list(range(1, 25))
        assert all(t.status != "running" for t in state.trials)
        for t in state.trials:  # every epoch counted exactly once
            assert t.time == pytest.approx(t.epochs * 3200.0 / t.batch_size)
        converged = [t.cost for t in state.trials if t.status == "converged"]
        assert state.best_cost == pytest.approx(min(converged))
