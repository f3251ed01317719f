"""The server mounts the batch size optimizer next to the scheduler, on the same database and port."""

from __future__ import annotations

import grpc
import pytest

import perseus.bso.service  # noqa: F401 (an import error in our own code fails here, never skips)
from perseus.server.app import SERVICERS, ServerThread
from perseus.v1 import bso_pb2, bso_pb2_grpc


def test_batch_size_optimizer_is_served(server: ServerThread) -> None:
    assert len(SERVICERS) == 2
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = bso_pb2_grpc.BatchSizeOptimizerStub(channel)
        spec = bso_pb2.JobSpec(job_id="bso-1", default_batch_size=64, batch_sizes=[32, 64, 128], eta=0.5, beta=2.0,
                               target_metric=0.9, higher_is_better=True, max_epochs=5, max_power=300.0)
        assert stub.RegisterJob(bso_pb2.RegisterJobRequest(spec=spec)).created
        trial = stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id="bso-1"))
        assert trial.batch_size == 64  # the search starts at the default batch size
        assert stub.GetJob(bso_pb2.GetJobRequest(job_id="bso-1")).spec.job_id == "bso-1"
        # Their synchronous servicer's errors come through the asyncio server as status codes.
        with pytest.raises(grpc.RpcError) as err:
            stub.GetBatchSize(bso_pb2.GetBatchSizeRequest(job_id="nope"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
