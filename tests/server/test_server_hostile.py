"""Hostile and broken input: undecodable bodies, unauthenticated garbage, limits, leaks, bad job ids."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_helpers import profile_csv, profile_slice

from perseus.client import PerseusClient, PerseusRpcError
from perseus.server.app import ServerConfig, ServerThread
from perseus.server.guard import RateLimitedLog, client_address
from perseus.server.limits import Limits
from perseus.server.service import SchedulerServicer
from perseus.v1 import scheduler_pb2 as pb
from perseus.v1 import scheduler_pb2_grpc as pb_grpc

TOKEN = "tok-123"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
GARBAGE = b"\xff\xff\xff\xff\x0f"  # a field with an over-long varint: no protobuf message parses from it


def _server(tmp_path: Path, limits: Limits | None = None, token: str | None = TOKEN) -> ServerThread:
    return ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'p.db'}", token=token,
                                     limits=limits or Limits()))


def _servicer(srv: ServerThread) -> SchedulerServicer:
    """The scheduler servicer (it listens to the core's changes)."""
    found = [cb.__self__ for cb in srv.core._listeners if isinstance(getattr(cb, "__self__", None), SchedulerServicer)]
    assert len(found) == 1
    return found[0]


def _raw(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/perseus.v1.Scheduler/{method}")  # bytes in, bytes out


def test_undecodable_bodies_get_invalid_argument_and_one_log_line(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with _server(tmp_path) as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        for method in ("ListJobs", "RegisterJob"):
            for _ in range(50):
                with pytest.raises(grpc.RpcError) as err:
                    _raw(channel, method)(GARBAGE, metadata=AUTH, timeout=10)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert err.value.details() == (f"/perseus.v1.Scheduler/{method}: the request body is not a valid "
                                               "protobuf message")
        # The batch size optimizer's handlers are synchronous (they run in a thread pool): same answer.
        bso = channel.unary_unary("/perseus.v1.BatchSizeOptimizer/GetJob")
        with pytest.raises(grpc.RpcError) as err:
            bso(GARBAGE, metadata=AUTH, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # The server still works, and decoded nothing into a job.
        assert pb.ListJobsResponse.FromString(_raw(channel, "ListJobs")(b"", metadata=AUTH, timeout=10)).jobs == []
    decode_lines = [r for r in caplog.records if "request body is not a valid protobuf message" in r.getMessage()]
    assert len(decode_lines) == 3  # one per method within the minute, not one per call
    assert all(r.levelno == logging.WARNING for r in decode_lines)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]  # no traceback


def test_unauthenticated_garbage_is_refused_before_decoding(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with _server(tmp_path) as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            for _ in range(30):
                with pytest.raises(grpc.RpcError) as err:
                    _raw(channel, "RegisterJob")(GARBAGE, metadata=metadata, timeout=10)
                # Decoding first would have answered UNKNOWN (or INVALID_ARGUMENT): the token came first.
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stream = channel.unary_stream("/perseus.v1.Scheduler/WatchSchedule")(GARBAGE, timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            next(iter(stream))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not [r for r in caplog.records if "protobuf" in r.getMessage() or r.exc_info]
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected /perseus")]
    assert refused == ["rejected /perseus.v1.Scheduler/RegisterJob: missing bearer token",
                       "rejected /perseus.v1.Scheduler/WatchSchedule: missing bearer token"]


def test_rate_limited_log_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(interval=60.0, clock=lambda: now[0])
    assert limited.warning("k", "first")
    assert not limited.warning("k", "second")
    assert limited.warning("other", "another key")
    now[0] = 59.9
    assert not limited.warning("k", "third")
    now[0] = 60.1
    assert limited.warning("k", "fourth")
    assert [r.getMessage() for r in caplog.records] == [
        "first", "another key", "fourth (2 more since the last such line)"]
    assert client_address("ipv4:10.0.0.7:51234") == "ipv4:10.0.0.7"
    assert client_address("ipv6:[::1]:5000") == "ipv6:[::1]"


def test_watching_unknown_jobs_leaves_nothing_behind(tmp_path: Path) -> None:
    with _server(tmp_path, token=None) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
        servicer = _servicer(srv)
        stub = pb_grpc.SchedulerStub(client._channels[0])
        for i in range(300):
            with pytest.raises(grpc.RpcError) as err:
                next(iter(stub.WatchSchedule(pb.GetScheduleRequest(job_id=f"{i:05d}" + "x" * 5000), timeout=10)))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # The client may see NOT_FOUND just before the server's stream has finished unwinding.
        _wait(lambda: servicer._changed == {} and not servicer._watchers, "the unknown jobs' watch entries to go")
        # A watched job that is deleted ends its watchers with NOT_FOUND and frees its entry too.
        client.register_job(job_id="gone", num_stages=1, num_microbatches=1, blocking_power=70.0)
        client.register_rank("gone", 0, 0, [1410, 1000])
        stream = stub.WatchSchedule(pb.GetScheduleRequest(job_id="gone", rank=0), timeout=30)
        updates = iter(stream)
        assert next(updates).mode == pb.SCHEDULE_MODE_PROFILING
        client.delete_job("gone")
        with pytest.raises(grpc.RpcError) as err:
            next(updates)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        _wait(lambda: servicer._changed == {} and not servicer._watchers, "the deleted job's watch entry to go")


def _wait(condition: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def test_job_and_profile_limits(tmp_path: Path) -> None:
    profile = profile_slice(2, freq_step=3)
    text = profile_csv(profile)
    limits = Limits(max_jobs=2, max_ranks_per_job=2, max_profile_bytes=len(text) + 10, max_message_bytes=256 * 1024)
    with _server(tmp_path, limits, token=None) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
        client.register_job(job_id="a", num_stages=2, num_microbatches=2, profile=text)
        client.register_job(job_id="b", num_stages=1, num_microbatches=1, blocking_power=70.0)
        for rank in (0, 1, 1):  # re-registering a known rank is fine at the limit
            client.register_rank("b", rank, 0, [1410])
        with pytest.raises(PerseusRpcError) as err:
            client.register_rank("b", 2, 0, [1410])
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details == "job 'b' has 2 ranks, the server's limit (perseus serve --max-ranks-per-job)"
        with pytest.raises(PerseusRpcError) as err:
            client.register_job(job_id="c", num_stages=1, num_microbatches=1, blocking_power=70.0)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the server holds 2 jobs, its limit (perseus serve --max-jobs)" in err.value.details
        client.register_job(job_id="b", num_stages=1, num_microbatches=1, blocking_power=70.0)  # same job: fine
        client.delete_job("b")
        client.register_job(job_id="c", num_stages=1, num_microbatches=1, blocking_power=70.0)

        client.delete_job("c")
        padded = text + "\n" * 20  # over max_profile_bytes, under the message limit
        with pytest.raises(PerseusRpcError) as err:
            client.register_job(job_id="d", num_stages=2, num_microbatches=2, profile=padded)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "profile_csv:" in err.value.details and "(perseus serve --max-profile-bytes)" in err.value.details
        with pytest.raises(PerseusRpcError) as err:
            client.register_job(job_id="d", num_stages=2, num_microbatches=2, profile=text + "\n" * 300_000)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED  # gRPC's own message size limit
        assert [j.job_id for j in client.list_jobs()] == ["a"]


def test_a_15_mb_profile_is_refused_cleanly_with_default_limits(server: ServerThread, client: PerseusClient) -> None:
    row = "0,forward,1410,0.05,23.8\n"
    huge = "stage,instruction,frequency,time,energy\n" + row * (15_000_000 // len(row))
    with pytest.raises(PerseusRpcError) as err:
        client.register_job(job_id="huge", num_stages=1, num_microbatches=1, blocking_power=70.0, profile=huge)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details == ("profile_csv: 15.0 MB is over the server's limit of 8.4 MB "
                                 "(perseus serve --max-profile-bytes)")


def test_job_ids_must_match_whole(client: PerseusClient) -> None:
    for bad in ("ab\n", "ab\ncd", "-ab", "a" * 65):
        with pytest.raises(PerseusRpcError) as err:
            client.register_job(job_id=bad, num_stages=1, num_microbatches=1, blocking_power=70.0)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "job_id" in err.value.details
    assert client.list_jobs() == []


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[PerseusClient]:
    limits = Limits(max_watch_streams=3, max_watch_streams_per_client=2)
    with _server(tmp_path, limits, token=None) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
        client.register_job(job_id="w", num_stages=1, num_microbatches=1, blocking_power=70.0)
        client.register_rank("w", 0, 0, [1410, 1000])
        yield client


def test_watch_streams_are_limited_per_client(watched: PerseusClient) -> None:
    stub = pb_grpc.SchedulerStub(watched._channels[0])
    request = pb.GetScheduleRequest(job_id="w", rank=0)
    open_calls = []
    for _ in range(2):
        call = stub.WatchSchedule(request, timeout=60)
        next(iter(call))
        open_calls.append(call)
    with pytest.raises(grpc.RpcError) as err:
        next(iter(stub.WatchSchedule(request, timeout=10)))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == ("ipv4:127.0.0.1 has 2 open watch streams, the per-client limit "
                                   "(perseus serve --max-watch-streams-per-client)")
    open_calls.pop().cancel()  # a closed stream frees its slot

    def reopened() -> bool:
        try:
            call = stub.WatchSchedule(request, timeout=60)
            next(iter(call))
        except grpc.RpcError:
            return False
        open_calls.append(call)
        return True

    _wait(reopened, "a cancelled stream's slot to be freed")
    for call in open_calls:
        call.cancel()


def test_watch_streams_are_limited_in_total(tmp_path: Path) -> None:
    limits = Limits(max_watch_streams=2, max_watch_streams_per_client=2)
    with _server(tmp_path, limits, token=None) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
        client.register_job(job_id="w", num_stages=1, num_microbatches=1, blocking_power=70.0)
        client.register_rank("w", 0, 0, [1410, 1000])
        stub = pb_grpc.SchedulerStub(client._channels[0])
        request = pb.GetScheduleRequest(job_id="w", rank=0)
        calls = [stub.WatchSchedule(request, timeout=60) for _ in range(2)]
        for call in calls:
            next(iter(call))
        with pytest.raises(grpc.RpcError) as err:
            next(iter(stub.WatchSchedule(request, timeout=10)))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(perseus serve --max-watch-streams)" in err.value.details()
        for call in calls:
            call.cancel()
