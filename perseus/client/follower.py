"""A rank's schedule, followed through the server's watch stream on a background thread.

The training thread calls :meth:`ScheduleFollower.take` at an iteration boundary: it returns the
newest schedule the server sent since the last call (or None), without touching the network. The
thread reconnects with jittered backoff for as long as the server is away, so an outage of any
length only delays schedule changes.
"""

from __future__ import annotations

import threading

import grpc

from perseus.client.client import PerseusClient, PerseusRpcError
from perseus.client.health import TRANSIENT, Backoff, LinkHealth
from perseus.client.types import ServedSchedule


class ScheduleFollower:
    """Follows ``job_id``'s schedule for ``rank``; stop with :meth:`stop`, then close the client."""

    def __init__(self, client: PerseusClient, job_id: str, rank: int, health: LinkHealth) -> None:
        self._client, self._job_id, self._rank, self._health = client, job_id, rank, health
        self._lock = threading.Lock()
        self._latest: ServedSchedule | None = None
        self._stopped = threading.Event()
        self.error = ""
        """Why following stopped for good (the server refused the stream), or ''."""
        self._thread = threading.Thread(target=self._run, name="perseus-schedule", daemon=True)
        self._thread.start()

    def take(self) -> ServedSchedule | None:
        """The schedule received since the last call, if any (newest wins)."""
        with self._lock:
            latest, self._latest = self._latest, None
        return latest

    def stop(self) -> None:
        """Stop following; closing the client afterwards ends a stream in progress."""
        self._stopped.set()

    def _run(self) -> None:
        backoff = Backoff()
        while not self._stopped.is_set():
            try:
                for schedule in self._client.watch_schedule(self._job_id, self._rank):
                    self._health.ok()
                    backoff.reset()
                    with self._lock:
                        self._latest = schedule
                return  # the stream ended: the client was closed
            except PerseusRpcError as exc:
                if self._stopped.is_set() or exc.code == grpc.StatusCode.CANCELLED:
                    return
                if exc.code not in TRANSIENT:
                    self.error = f"{exc.code.name}: {exc.details}"
                    return
                self._health.failed(exc.code.name)
            except ValueError:  # the channel was closed under the stream
                return
            self._stopped.wait(backoff.delay())
