"""Bearer token, TLS, and refusing to bind beyond loopback without a token."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from perseus.client import PerseusClient, PerseusRpcError
from perseus.errors import InputError
from perseus.server.app import ServerConfig, ServerThread, is_loopback
from perseus.v1 import scheduler_pb2, scheduler_pb2_grpc

TOKEN = "s3cret-token"


def test_token_is_required_on_every_scheduler_call(tmp_path: Path) -> None:
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'a.db'}", token=TOKEN)) as srv:
        target = f"127.0.0.1:{srv.port}"
        with PerseusClient(target, token=TOKEN) as good:
            good.register_job(job_id="secured", num_stages=2, num_microbatches=2, blocking_power=70.0)
            assert [j.job_id for j in good.list_jobs()] == ["secured"]
        for token, reason in ((None, "missing bearer token"), ("wrong", "wrong bearer token")):
            with PerseusClient(target, token=token or "") as bad:
                for call in (bad.list_jobs, lambda bad=bad: bad.get_schedule("secured", 0),
                             lambda bad=bad: bad.register_job(num_stages=1, num_microbatches=1)):
                    with pytest.raises(PerseusRpcError) as err:
                        call()
                    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
                    assert reason in err.value.details
                with pytest.raises(PerseusRpcError) as err:
                    next(iter(bad.watch_schedule("secured", 0)))
                assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(target) as channel:
            # Health stays open for probes; nothing was created by the rejected calls.
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            reply = stub.ListJobs(scheduler_pb2.ListJobsRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert len(reply.jobs) == 1


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls_with_token(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    config = ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'b.db'}", token=TOKEN, tls_cert=cert, tls_key=key)
    with ServerThread(config) as srv:
        target = f"127.0.0.1:{srv.port}"
        with PerseusClient(target, token=TOKEN, tls_ca=cert) as client:
            client.register_job(job_id="tls", num_stages=1, num_microbatches=1, blocking_power=70.0)
            assert client.get_job("tls").phase == "profiling"
        with PerseusClient(target, token=TOKEN, retry_timeout=0.5, timeout=5) as plaintext:
            with pytest.raises(PerseusRpcError) as err:
                plaintext.list_jobs()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_non_loopback_needs_a_token_or_insecure(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    with pytest.raises(InputError, match=r"--host: refusing to serve on non-loopback address '0\.0\.0\.0'"):
        ServerConfig(host="0.0.0.0", port=0).validate()
    # A token in clear text beyond loopback is refused too: it needs TLS, or --insecure behind a TLS proxy.
    with pytest.raises(InputError, match=r"--host: refusing to send the bearer token in clear text on non-loopback"):
        ServerConfig(host="0.0.0.0", port=0, token=TOKEN).validate()
    pem = tmp_path / "exists.pem"
    pem.write_text("checked at start-up, not here")
    ServerConfig(host="0.0.0.0", port=0, token=TOKEN, tls_cert=pem, tls_key=pem).validate()
    ServerConfig(host="0.0.0.0", port=0, token=TOKEN, insecure=True).validate()
    ServerConfig(host="0.0.0.0", port=0, insecure=True).validate()
    with pytest.raises(InputError, match="--tls-cert"):
        ServerConfig(tls_cert=tmp_path / "c.pem").validate()
    with pytest.raises(InputError, match="--token"):
        ServerConfig(token="has space").validate()
    # The command line refuses with one line and exit status 2, before touching the database.
    result = subprocess.run([sys.executable, "-m", "perseus.server", "--host", "0.0.0.0", "--port", "0",
                             "--db", f"sqlite:///{tmp_path / 'never.db'}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "perseus: error: --host: refusing to serve on non-loopback address '0.0.0.0' without --token "
        "(anyone could change GPU clocks); pass --insecure to do it anyway"
    ]
    assert not (tmp_path / "never.db").exists()
