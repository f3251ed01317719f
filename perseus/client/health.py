"""Whether a worker's link to the server is up, told once per outage rather than once per failed call.

The background threads of one rank (report sender, schedule follower) share a :class:`LinkHealth`;
the first failure of an outage prints one line, the first success after it prints how long it lasted.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import grpc

#: Codes that mean "not reachable right now" (retry later) rather than "this request is wrong".
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED})


class LinkHealth:
    """Outage bookkeeping of one rank's link; ``announce`` prints (None: stay quiet, e.g. ranks > 0)."""

    def __init__(self, target: str, announce: Callable[[str], None] | None = None) -> None:
        self.target = target
        self._announce = announce
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.outages = 0

    def failed(self, reason: str) -> None:
        """A call could not reach the server; the first one of an outage is announced."""
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
            self.outages += 1
        self._say(f"perseus: warning: server {self.target} unreachable ({reason}); training goes on with the "
                  "clocks it has, reports are kept and sent when the server is back")

    def ok(self) -> None:
        """A call went through; ends an outage (announced with its length)."""
        with self._lock:
            since, self.down_since = self.down_since, None
        if since is not None:
            self._say(f"perseus: server {self.target} is back after {time.monotonic() - since:.0f} s")

    @property
    def up(self) -> bool:
        return self.down_since is None

    def _say(self, line: str) -> None:
        if self._announce is not None:
            self._announce(line)


class Backoff:
    """Exponential backoff with full jitter, so a thousand ranks do not reconnect in lockstep."""

    def __init__(self, first: float = 0.2, cap: float = 5.0) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def delay(self) -> float:
        """The next wait (random in (0, bound]); the bound doubles up to ``cap``."""
        bound, self._next = self._next, min(self._next * 2, self.cap)
        return random.uniform(bound / 10, bound)

    def reset(self) -> None:
        self._next = self.first
