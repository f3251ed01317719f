"""Two real Perseus servers sharing one PostgreSQL: per-job state stays consistent under concurrency."""

from __future__ import annotations

import threading

import grpc
import pytest

from perseus.bso.convert import spec_to_proto
from perseus.bso.search import TrialKind, TrialRecord, TrialStatus, pruning_state
from perseus.bso.spec import JobSpec
from perseus.server.app import ServerConfig, ServerThread
from perseus.v1 import bso_pb2, bso_pb2_grpc

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CONVERGE_EPOCH = {8: 99, 16: 3, 32: 3, 64: 4, 128: 99}


def test_two_replicas_one_database(postgres_db: str) -> None:
    spec = JobSpec("shared", 32, (8, 16, 32, 64, 128), 0.9, 6, max_power=300.0)
    servers = [ServerThread(ServerConfig(port=0, db=postgres_db, workers=8)) for _ in range(2)]
    channels = [grpc.insecure_channel(f"127.0.0.1:{s.port}") for s in servers]
    stubs = [bso_pb2_grpc.BatchSizeOptimizerStub(c) for c in channels]
    errors: list[BaseException] = []
    created: list[bool] = []
    barrier = threading.Barrier(8)

    def worker(index: int) -> None:
        stub = stubs[index % 2]
        try:
            barrier.wait()
            created.append(stub.RegisterJob(bso_pb2.RegisterJobRequest(spec=spec_to_proto(spec))).created)
            for _ in range(5):
                got = stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id="shared"))
                for epoch in range(1, 100):
                    # Alternate replicas per epoch: any replica may serve any call.
                    answer = stubs[(index + epoch) % 2].ReportEpoch(bso_pb2.ReportEpochRequest(
                        job_id="shared", trial_number=got.trial_number, epoch=epoch, time=100.0 / got.batch_size,
                        energy=20000.0 / got.batch_size,
                        metric=0.95 if epoch >= CONVERGE_EPOCH[got.batch_size] else 0.1))  # fmt: skip
                    if answer.decision != bso_pb2.DECISION_CONTINUE:
                        break
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert created.count(True) == 1  # exactly one replica created the job
        state = stubs[1].GetJob(bso_pb2.GetJobRequest(job_id="shared"))
        assert sorted(t.trial_number for t in state.trials) == list(range(1, 41))
        assert all(t.status in ("converged", "stopped") for t in state.trials)
        for t in state.trials:  # each epoch was counted exactly once
            assert t.time == pytest.approx(t.epochs * 100.0 / t.batch_size)
        converged = [t for t in state.trials if t.status == "converged"]
        assert state.best_cost == pytest.approx(min(t.cost for t in converged))
        # At most one exploration trial was ever in flight, so the exploration history replays cleanly.
        records = [TrialRecord(t.trial_number, t.batch_size, TrialKind(t.kind), TrialStatus(t.status), t.cost)
                   for t in state.trials]  # fmt: skip
        replay = pruning_state(spec.normalized().search_config(), records)
        assert replay.survivors == tuple(state.survivors)
        explorations = [t.batch_size for t in sorted(state.trials, key=lambda t: t.trial_number) if t.kind == "exploration"]
        assert explorations[:5] == [32, 16, 8, 64, 128]
    finally:
        for c in channels:
            c.close()
        for server in servers:
            server.stop()
