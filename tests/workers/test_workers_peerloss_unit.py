"""The lost-peer line (``merak_integration.peerloss``) on a real TCPStore and real processes, and which
worker the launcher names (``merak_integration.torchrun.unexplained``)."""

from __future__ import annotations

import datetime
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch.distributed as dist
from workers_helpers import free_port

from merak_integration.peerloss import PeerRegistry, lost_peer_cause
from merak_integration.torchrun import unexplained

GLOO = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:40619: "
        "Connection reset by peer. This is typically caused by a remote worker hanging")


def test_lost_peer_errors_are_told_apart_from_other_errors() -> None:
    assert lost_peer_cause(RuntimeError(GLOO)) == "Connection reset by peer"
    try:
        try:
            raise RuntimeError("gloo: Connection closed by peer [10.0.0.2]:1234")
        except RuntimeError as inner:
            raise ValueError("while stepping the schedule") from inner
    except ValueError as outer:
        assert lost_peer_cause(outer) == "Connection closed by peer"
    assert lost_peer_cause(RuntimeError("CUDA out of memory")) is None
    assert lost_peer_cause(ValueError("Connection reset by peer")) is None  # not a backend error


def test_the_survivor_names_the_rank_whose_process_is_gone() -> None:
    store = dist.TCPStore("127.0.0.1", free_port(), is_master=True, timeout=datetime.timedelta(seconds=5))
    peers = dist.PrefixStore(PeerRegistry.PREFIX, store)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # exited and reaped: its pid names no process
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = socket.gethostname()
        peers.set("0", f"{host} {gone.pid}")
        peers.set("2", f"{host} {alive.pid}")
        me = PeerRegistry(peers, rank=1, world=3, pp=3)
        line = me.describe(RuntimeError(GLOO))
        assert line == (f"perseus: error: rank 1 (stage 1) stopped: rank 0 (stage 0, pid {gone.pid}) on this host "
                        "went away (backend: Connection reset by peer); training cannot go on without it")
        peers.set("0", f"node7 {gone.pid}")  # the lost rank ran on another host: not checkable from here
        line = me.describe(RuntimeError(GLOO))
        assert "no rank on this host stopped, so one on another host did; the launcher there names it" in line
    finally:
        alive.kill()
        alive.wait()
    nobody = PeerRegistry(None, rank=1, world=2, pp=2)
    assert "could not be looked up" in nobody.describe(RuntimeError(GLOO))


def test_the_survivor_remembers_its_peers_after_the_store_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store lives in one node's torchrun, which may exit before a survivor on another node asks."""
    port = free_port()
    store = dist.TCPStore("127.0.0.1", port, is_master=True, timeout=datetime.timedelta(seconds=5))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = PeerRegistry.join(rank=1, world=2, pp=2)  # starts looking for rank 0 in the background
    dist.PrefixStore(PeerRegistry.PREFIX, store).set("0", f"{socket.gethostname()} {gone.pid}")
    deadline = time.monotonic() + 10
    while not me.remembered(0):
        assert time.monotonic() < deadline, "rank 0's record was never read"
        time.sleep(0.05)
    del store  # the master store goes away with its torchrun
    assert f"rank 0 (stage 0, pid {gone.pid}) on this host went away" in me.describe(RuntimeError(GLOO))


def test_the_launcher_names_the_worker_that_left_no_line(tmp_path: Path) -> None:
    failures = {0: SimpleNamespace(pid=100), 1: SimpleNamespace(pid=101), 2: SimpleNamespace(pid=102)}
    (tmp_path / "lost-100").write_text("perseus: error: rank 0 (stage 0) stopped: rank 2 ... went away")
    assert unexplained(failures, tmp_path) == (1, failures[1])  # rank 1 said nothing: it is the cause
    (tmp_path / "error-101").write_text("perseus: error: NVML ...")
    assert unexplained(failures, tmp_path) == (2, failures[2])
    (tmp_path / "lost-102").write_text("...")
    assert unexplained(failures, tmp_path) is None
    assert unexplained(failures, None) == (0, failures[0])  # no supervisor: the first failure
