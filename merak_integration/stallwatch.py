"""Stall detection: name the rank that stopped making progress instead of hanging in silence.

Pipeline ranks wait for each other in collectives, which hang rather than fail when a peer stops
(SIGSTOP, a stuck kernel, a dead host). Every rank runs a daemon thread that writes a heartbeat
(a counter and its last finished iteration) to torchrun's key-value store once a second. When a
rank has finished no iteration for ``PERSEUS_STALL_TIMEOUT`` seconds (default 60), its thread reads
every rank's heartbeat and one rank prints one line: which rank (and stage) sent no heartbeat
(process stopped or gone), or which ranks are behind (alive but stuck), or that every rank is
alive at the same iteration (a communication deadlock or a very slow iteration). When progress
resumes it says so. The thread only reads and writes small keys; it never blocks training.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Callable

import torch.distributed as dist

#: Seconds without a new heartbeat after which a rank counts as stopped (heartbeats come every second).
SILENT_AFTER = 5.0


class StallWatch:
    """One rank's heartbeat and stall check; :meth:`progress` is the training thread's only call."""

    def __init__(self, store: dist.Store, rank: int, world: int, pp: int, timeout: float,
                 say: Callable[[str], None] = print, interval: float = 1.0) -> None:
        self._store, self.rank, self.world, self.pp = store, rank, world, pp
        self.timeout, self.interval, self._say = timeout, interval, say
        self.iteration = -1
        self._progress_at = time.monotonic()
        self._stopped = threading.Event()
        self._stall_reported_at: float | None = None
        self._watching_since: float | None = None
        """When this rank began reading the others' heartbeats (its own progress stalled)."""
        self._seen: dict[int, tuple[bytes, float]] = {}
        """rank -> (its last heartbeat value, when this rank saw it change)"""
        self._thread = threading.Thread(target=self._run, name="perseus-stallwatch", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, rank: int, world: int, pp: int, say: Callable[[str], None] = print) -> StallWatch | None:
        """A watch on torchrun's store, or None (said once) when there is none to reach."""
        timeout = float(os.environ.get("PERSEUS_STALL_TIMEOUT", "60"))
        host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if timeout <= 0 or not host or not port:
            return None
        try:
            store = dist.TCPStore(host, int(port), is_master=False, timeout=datetime.timedelta(seconds=10))
        except (RuntimeError, ValueError) as exc:
            if rank == 0:
                say(f"perseus: warning: stall detection off: cannot reach torchrun's store at {host}:{port}: {exc}")
            return None
        return cls(dist.PrefixStore("perseus/heartbeat/", store), rank, world, pp, timeout, say)

    def progress(self, iteration: int) -> None:
        """Iteration ``iteration`` finished on this rank (two attribute writes: no lock, no I/O)."""
        self.iteration = iteration
        self._progress_at = time.monotonic()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        beats = 0
        while not self._stopped.wait(self.interval):
            beats += 1
            try:
                self._store.set(str(self.rank), f"{beats} {self.iteration}")
                if time.monotonic() - self._progress_at >= self.timeout:
                    self._check()
                    continue
                self._watching_since = None
                if self._stall_reported_at is not None:
                    self._report_resumed()
            except RuntimeError:  # the store went away: torchrun is shutting the job down
                return

    def _check(self) -> None:
        now = time.monotonic()
        self._watching_since = self._watching_since or now
        values = self._heartbeats()
        if values is None:
            return  # the store went away or did not answer: the next beat asks again
        for r, value in enumerate(values):
            # A rank that never beat (stopped before its first heartbeat) is seen "silent since watching".
            if r not in self._seen or self._seen[r][0] != value:
                self._seen[r] = (value, now if value else self._watching_since)
        # Judge only after watching long enough to tell a silent rank from a live one.
        if self._stall_reported_at is not None or now - self._watching_since <= SILENT_AFTER + self.interval:
            return
        silent = [r for r in range(self.world) if now - self._seen[r][1] > SILENT_AFTER]
        alive = [r for r in range(self.world) if r not in silent]
        if not alive or alive[0] != self.rank:
            return  # the lowest live rank speaks for all
        self._stall_reported_at = now
        waited = now - self._progress_at
        iterations = {r: int(self._seen[r][0].split()[1]) if self._seen[r][0] else -1 for r in range(self.world)}
        if silent:
            names = ", ".join(f"rank {r} (stage {r % self.pp}, "
                              + (f"last finished iteration {iterations[r]}, " if iterations[r] >= 0 else
                                 "never sent a heartbeat, ")
                              + f"silent for {now - self._seen[r][1]:.0f} s)" for r in silent)
            what = f"no heartbeat from {names}: stopped, hung outside Python or gone"
        else:
            newest = max(iterations.values())
            behind = [r for r in range(self.world) if iterations[r] < newest]
            what = (", ".join(f"rank {r} (stage {r % self.pp}) is stuck after iteration {iterations[r]}"
                              for r in behind) + " while its heartbeat goes on") if behind else (
                f"every rank is alive after iteration {newest}: a deadlock in communication or a very slow "
                "iteration")
        self._say(f"perseus: stall: no iteration finished for {waited:.0f} s; {what}")

    def _heartbeats(self) -> list[bytes] | None:
        """Every rank's last heartbeat (b"" for a rank that never beat), or None if the store failed."""
        keys = [str(r) for r in range(self.world)]
        try:
            if self._store.check(keys):
                return list(self._store.multi_get(keys))
            # multi_get would wait for the missing keys: read the present ones one by one.
            return [self._store.get(k) if self._store.check([k]) else b"" for k in keys]
        except RuntimeError:
            return None

    def _report_resumed(self) -> None:
        assert self._stall_reported_at is not None
        self._say(f"perseus: progress resumed {time.monotonic() - self._stall_reported_at:.0f} s after the stall "
                  "was reported")
        self._stall_reported_at = None
