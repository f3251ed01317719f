"""A lost peer: one line naming the rank that went away, instead of gloo's or NCCL's traceback.

When one worker dies (OOM-killed, SIGKILL, a crashed host), every rank talking to it fails inside a
point-to-point send/receive or a collective with a backend error ("Connection reset by peer",
"Connection closed by peer", "Broken pipe" from gloo; "remote process exited" from NCCL). That
error is a consequence, not a cause, and its traceback says nothing about who went away.

Every worker records itself (``HOST PID``) in torchrun's key-value store when it starts
(:class:`PeerRegistry`). On a lost-peer error the survivor looks the other ranks up: a rank on its own
host whose process is gone (or a zombie) is the one that went away; a lost rank on another host
cannot be checked from here, and the launcher on that host names it. The survivor hands its line to
the launcher as a *consequence* (:func:`merak_integration.supervisor.report_error` with
``lost_peer=True``), so the launcher prints the cause when it knows one (a worker's own reason, or how
the dead worker ended) and this line otherwise.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
import time
from dataclasses import dataclass

import torch.distributed as dist

from merak_integration.supervisor import running

#: Fragments of the backend errors a vanished peer causes (gloo's TCP transport, NCCL, the store).
LOST_PEER_MARKERS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "remote process exited",
    "NCCL communicator was aborted",
)
#: Seconds a survivor waits for a dead peer's process to show as gone: the kernel closes a dying
#: process's sockets (which is what the survivor saw) a moment before it marks the process exited.
SETTLE_S = 1.0
#: Seconds the background lookup waits for every rank to record itself (ranks start within seconds of
#: each other: they have just joined one process group).
SNAPSHOT_S = 120.0
#: Seconds between two looks for ranks not yet recorded.
POLL_S = 0.5


def lost_peer_cause(exc: BaseException) -> str | None:
    """The marker in ``exc`` (or its causes) that says a peer went away, or ``None`` for other errors."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RuntimeError):
            text = str(seen)
            for marker in LOST_PEER_MARKERS:
                if marker.lower() in text.lower():
                    return marker
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass(frozen=True)
class Peer:
    """Where one rank's worker runs, as it recorded itself at start."""

    rank: int
    host: str
    pid: int


class PeerRegistry:
    """This job's ``rank -> (host, pid)`` records in torchrun's store, and the lookup after a loss."""

    PREFIX = "perseus/worker/"

    def __init__(self, store: dist.Store | None, rank: int, world: int, pp: int) -> None:
        self._store, self.rank, self.world, self.pp = store, rank, world, pp
        self.host = socket.gethostname()
        self._known: dict[int, Peer] = {}
        """Records read so far: the store lives in one node's torchrun, which may be gone by the time a
        survivor on another node asks (see :meth:`remember_all`)."""

    def remember_all(self, timeout: float = SNAPSHOT_S) -> None:
        """Look (off the training thread) until every rank recorded itself, and keep the records.

        Uses its own store client: the registry's is not shared across threads. A rank that never
        records itself within ``timeout`` is simply looked up again after a loss."""
        host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if self._store is None or not host or not port:
            return
        missing = [r for r in range(self.world) if r != self.rank]
        deadline = time.monotonic() + timeout
        with contextlib.suppress(RuntimeError, ValueError):
            # Short polls, never one long blocking wait: a daemon thread must not sit inside a C++
            # call when the interpreter exits.
            store = dist.PrefixStore(self.PREFIX, dist.TCPStore(
                host, int(port), is_master=False, timeout=datetime.timedelta(seconds=5)))
            while missing and time.monotonic() < deadline:
                for r in [r for r in missing if store.check([str(r)])]:
                    peer_host, pid = store.get(str(r)).decode().split()
                    self._known[r] = Peer(r, peer_host, int(pid))
                    missing.remove(r)
                if missing:
                    time.sleep(POLL_S)

    @classmethod
    def join(cls, rank: int, world: int, pp: int) -> PeerRegistry:
        """Record this worker in torchrun's store (none reachable: a registry that names no one)."""
        host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        store: dist.Store | None = None
        if host and port:
            try:
                store = dist.PrefixStore(cls.PREFIX, dist.TCPStore(
                    host, int(port), is_master=False, timeout=datetime.timedelta(seconds=5)))
                store.set(str(rank), f"{socket.gethostname()} {os.getpid()}")
            except (RuntimeError, ValueError):
                store = None  # the lost-peer line then says it could not look the ranks up
        registry = cls(store, rank, world, pp)
        threading.Thread(target=registry.remember_all, name="perseus-peers", daemon=True).start()
        return registry

    def remembered(self, rank: int) -> bool:
        """Whether ``rank``'s record has been read and kept (:meth:`remember_all`)."""
        return rank in self._known

    def peers(self) -> list[Peer]:
        """Every other rank that recorded itself (read without waiting for missing keys)."""
        if self._store is None:
            return []
        found: list[Peer] = []
        for r in range(self.world):
            if r == self.rank:
                continue
            if r in self._known:
                found.append(self._known[r])
                continue
            with contextlib.suppress(RuntimeError, ValueError):
                if self._store.check([str(r)]):
                    host, pid = self._store.get(str(r)).decode().split()
                    found.append(Peer(r, host, int(pid)))
        return found

    def gone(self, settle: float = SETTLE_S) -> tuple[list[Peer], bool]:
        """The ranks on this host whose process is gone, and whether any rank runs on another host
        (whose liveness cannot be checked from here). Waits up to ``settle`` seconds for a dead one."""
        peers = self.peers()
        local = [p for p in peers if p.host == self.host]
        remote = len(peers) < self.world - 1 or any(p.host != self.host for p in peers)
        deadline = time.monotonic() + settle
        while True:
            dead = [p for p in local if not running(p.pid)]
            if dead or time.monotonic() >= deadline:
                return dead, remote
            time.sleep(0.05)

    def describe(self, exc: BaseException) -> str:
        """One line for the launcher: which rank stopped, because which rank went away."""
        cause = lost_peer_cause(exc) or "connection lost"
        me = f"rank {self.rank} (stage {self.rank % self.pp})"
        dead, remote = self.gone()
        if dead:
            names = ", ".join(f"rank {p.rank} (stage {p.rank % self.pp}, pid {p.pid})" for p in dead)
            return (f"perseus: error: {me} stopped: {names} on this host went away (backend: {cause}); "
                    "training cannot go on without it")
        if self._store is None:
            where = "the ranks could not be looked up in torchrun's store"
        elif remote:
            where = "no rank on this host stopped, so one on another host did; the launcher there names it"
        else:
            where = "every rank on this host still runs"
        return f"perseus: error: {me} stopped: it lost its connection to another rank (backend: {cause}); {where}"

