"""Iteration reports sent from a background thread: the training thread never waits on the network.

:meth:`BackgroundReporter.put` appends to a bounded in-memory buffer and returns (microseconds).
A sender thread drains the buffer over one long-lived ``StreamReports`` stream
(:mod:`perseus.client.stream`): it wakes as soon as a report is queued and sends everything queued
in one batch, and whatever the training thread queues while a batch waits for its acknowledgement
goes in the next one. A server without streams (an older one) is told once and gets the batches in
``ReportIterations`` calls every ``interval`` seconds instead. While the server is
unreachable it backs off (jittered) and keeps the reports; when the buffer fills, or the reporter
closes before the server returns, the reports go to a spill file, which the sender sends first
once the server answers again (this run, or the next one that uses the same file). Reports the
server rejects for good (say, the job was deleted) go to ``<spill file>.rejected``, with a warning.
Nothing is dropped silently: the only loss is the buffer overflowing while the spill file cannot be
written, and that is announced with a count.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from perseus.client.client import PerseusClient, PerseusRpcError
from perseus.client.health import TRANSIENT, Backoff, LinkHealth
from perseus.client.stream import ReportStream, StreamFailed, StreamRefused
from perseus.errors import InputError
from perseus.reports import IterationReport, append_spill, read_spill

#: Reports per ReportIterations call (the server accepts up to 4096).
BATCH_SIZE = 1024
#: Seconds between two unary sends (a server without StreamReports): half a second of reports per call.
SEND_INTERVAL_S = 0.5
#: Seconds an idle stream sender sleeps before it looks at the spill file again.
IDLE_S = 1.0


@dataclass(frozen=True)
class Delivery:
    """What became of one reporter's reports when it closed."""

    sent: int
    """Acknowledged by the server (including reports replayed from the spill file)."""
    pending: int
    """Waiting in the spill file for the next start or ``perseus upload``."""
    rejected: int
    """Refused by the server for good; kept in ``<spill file>.rejected``."""
    dropped: int
    """Lost: the buffer overflowed while the spill file could not be written (announced)."""
    spill_path: Path


class BackgroundReporter:
    """Sends one rank's iteration reports for ``job_id`` under ``run_id`` from a daemon thread.

    Args:
        client: Its own client (calls must fail fast: ``retry_timeout=0``, a short ``timeout``).
        spill_path: The file reports go to when they cannot be sent; replayed first when it exists.
        health: Shared outage bookkeeping (announces outages once).
        capacity: Reports kept in memory before they spill to the file.
        interval: Seconds between sends to a server without report streams (an older server).
        flush_timeout: How long :meth:`close` keeps trying before it spills what is left.
        warn: Where warnings go (None: nowhere, e.g. ranks > 0 while rank 0 speaks for all).
    """

    def __init__(
        self,
        client: PerseusClient,
        job_id: str,
        run_id: str,
        spill_path: Path,
        *,
        health: LinkHealth,
        capacity: int = 8192,
        interval: float = SEND_INTERVAL_S,
        flush_timeout: float = 10.0,
        warn: Callable[[str], None] | None = print,
    ) -> None:
        self._client, self._job_id, self._run_id = client, job_id, run_id
        self.spill_path = spill_path
        self._rejected_path = spill_path.with_name(spill_path.name + ".rejected")
        self._health = health
        self._capacity, self._interval, self._flush_timeout = capacity, interval, flush_timeout
        self._warn = warn
        self._buffer: deque[IterationReport] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._replay = spill_path.is_file()
        self._sent = self._rejected = self._dropped = 0
        self._streaming = True
        """Whether batches go over a report stream (False once the server said it has none)."""
        self._stream: ReportStream | None = None
        self._thread = threading.Thread(target=self._run, name="perseus-reports", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ training thread

    def put(self, report: IterationReport) -> None:
        """Queue one report; never blocks on the network or the disk."""
        with self._cond:
            self._buffer.append(report)
            if len(self._buffer) > 4 * self._capacity:  # the sender could not spill (disk full?)
                self._buffer.popleft()
                self._dropped += 1
            if self._streaming:
                self._cond.notify()  # a stream sender sends at once

    def close(self) -> Delivery:
        """Send what is left (for up to ``flush_timeout`` s), spill the rest, stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(self._flush_timeout + self._client.timeout + 5.0)
        if self._thread.is_alive():
            self._say(f"perseus: warning: the report sender did not stop; {len(self._buffer)} reports left unsent")
        if self._dropped:
            self._say(f"perseus: warning: {self._dropped} iteration reports were lost: the buffer overflowed and "
                      f"{self.spill_path} could not be written")
        pending = 0
        if self.spill_path.is_file():
            with self.spill_path.open() as f:
                pending = sum(1 for _ in f)
        return Delivery(self._sent, pending, self._rejected, self._dropped, self.spill_path)

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        backoff = Backoff()
        while self._wait_for_work():
            if self._deliver():
                backoff.reset()
                continue
            self._spill_if(full=True)
            self._wait(backoff.delay())
        deadline = time.monotonic() + self._flush_timeout
        while not self._deliver() and time.monotonic() < deadline:
            time.sleep(min(backoff.delay(), max(0.0, deadline - time.monotonic())))
        self._end_stream()
        self._spill_if(full=False)

    def _wait_for_work(self) -> bool:
        """Until a report is queued (streaming) or ``interval`` passed (unary calls); False once closing."""
        if not self._streaming:
            return self._wait(self._interval)
        with self._cond:
            self._cond.wait_for(lambda: self._buffer or self._closing, IDLE_S)
            return not self._closing

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` (queued reports do not shorten it) unless closing; False once closing."""
        with self._cond:
            self._cond.wait_for(lambda: self._closing, seconds)
            return not self._closing

    def _deliver(self) -> bool:
        """Send the spill file (if any), then the buffer; False as soon as the server is unreachable."""
        if self._replay and not self._send_spill():
            return False
        while True:
            with self._cond:
                batch = [self._buffer.popleft() for _ in range(min(BATCH_SIZE, len(self._buffer)))]
            if not batch:
                return True
            if not self._send(self._job_id, self._run_id, batch):
                with self._cond:
                    self._buffer.extendleft(reversed(batch))
                return False

    def _send(self, job_id: str, run_id: str, batch: Sequence[IterationReport]) -> bool:
        """One batch, acknowledged after the commit; False if the server is unreachable (the caller keeps it)."""
        try:
            if self._streaming:
                self._send_on_stream(job_id, run_id, batch)
            else:
                self._client.report_iterations(job_id, run_id, batch)
        except (PerseusRpcError, StreamRefused, StreamFailed) as exc:
            if exc.code in TRANSIENT:
                self._health.failed(exc.code.name)
                return False
            self._health.ok()
            self._rejected += append_spill(self._rejected_path, job_id, run_id, batch)
            self._say(f"perseus: warning: server {self._client.target} rejected {len(batch)} iteration reports "
                      f"({exc.code.name}: {exc.details}); kept in {self._rejected_path}")
            return True
        self._health.ok()
        self._sent += len(batch)
        return True

    def _send_on_stream(self, job_id: str, run_id: str, batch: Sequence[IterationReport]) -> None:
        """Send over the open stream (opened first if needed); a broken stream is dropped, to reopen next time."""
        try:
            if self._stream is None:
                self._stream = self._client.open_report_stream()
            self._stream.send(job_id, run_id, batch)
        except StreamFailed as exc:
            self._stream = None
            if exc.code == grpc.StatusCode.UNIMPLEMENTED:  # an older server: unary calls from now on
                self._streaming = False
                self._say(f"perseus: server {self._client.target} has no report streams (an older server); "
                          f"sending reports in ReportIterations calls every {self._interval:g} s")
                self._client.report_iterations(job_id, run_id, batch)
                return
            if exc.code == grpc.StatusCode.UNAVAILABLE:
                self._client.failover()  # the next stream goes to the next replica, if there is one
            raise

    def _end_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _send_spill(self) -> bool:
        """Replay the spill file; it is removed once every report in it is acknowledged."""
        try:
            groups, truncated = read_spill(self.spill_path)
        except (OSError, InputError) as exc:
            self._say(f"perseus: warning: cannot replay {self.spill_path}: {exc}; left for `perseus upload`")
            self._replay = False
            return True
        for (job_id, run_id), reports in groups.items():
            for start in range(0, len(reports), BATCH_SIZE):
                if not self._send(job_id, run_id, reports[start:start + BATCH_SIZE]):
                    return False
        self.spill_path.unlink()
        self._replay = False
        if truncated:
            self._say(f"perseus: warning: {self.spill_path} ended in a cut-short line (a killed process); "
                      "that one report is lost")
        return True

    def _spill_if(self, *, full: bool) -> None:
        """Move the buffer to the spill file (only when it reached capacity if ``full``)."""
        with self._cond:
            if not self._buffer or (full and len(self._buffer) < self._capacity):
                return
            reports, self._buffer = list(self._buffer), deque()
        try:
            append_spill(self.spill_path, self._job_id, self._run_id, reports)
        except OSError as exc:
            self._say(f"perseus: warning: cannot write {self.spill_path}: {exc}; keeping reports in memory")
            with self._cond:
                self._buffer.extendleft(reversed(reports))
            return
        self._replay = True

    def _say(self, line: str) -> None:
        if self._warn is not None:
            self._warn(line)
