"""A rank's iteration reports on one long-lived ``StreamReports`` call instead of one call per batch.

A unary call costs the server about a millisecond of CPU in gRPC Python alone (call set-up, metadata,
a task); a message on an open stream costs a fraction of that, so a server keeps up with thousands of
ranks reporting every iteration. :class:`ReportStream` is used by one thread (the report sender):
:meth:`ReportStream.send` writes one batch and waits for its acknowledgement, which the server sends
only after the batch is committed, exactly like a ``ReportIterations`` reply. Any failure ends the
stream (the caller keeps the batch, opens a new stream later and sends it again; the server stores a
report once however often it arrives).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from perseus.client.types import ReportAck
from perseus.reports import IterationReport
from perseus.v1 import scheduler_pb2 as pb


class StreamRefused(Exception):
    """The server refused one batch for good (its ack carries a code); the stream goes on."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class StreamFailed(Exception):
    """The stream itself failed (server gone, stopping, deadline): open a new one and resend."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


_CODES = {code.value[0]: code for code in grpc.StatusCode}
_END = object()


def to_proto(report: IterationReport) -> pb.IterationReport:
    """The wire form of one report (a streamed batch's or a ReportIterations call's)."""
    return pb.IterationReport(rank=report.rank, iteration=report.iteration, time=report.time, energy=report.energy,
                              plan_name=report.plan_name, busy_time=report.busy_time,
                              busy_energy=report.busy_energy, measure_only=report.measure_only,
                              clock_mhz=report.clock_mhz, planned_instructions=report.planned_instructions,
                              at_planned_clock=report.at_planned_clock)


class ReportStream:
    """One open ``StreamReports`` call (see the module docstring); not thread-safe: one sender uses it.

    Args:
        method: The stub's ``StreamReports`` multi-callable of the server to talk to.
        metadata: Call metadata (the bearer token).
        timeout: Seconds :meth:`send` waits for an acknowledgement before it gives the stream up.
    """

    def __init__(self, method: Any, metadata: Sequence[tuple[str, str]], timeout: float) -> None:
        self._timeout = timeout
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._acks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._seq = 0
        self._call = method(self._outgoing(), metadata=metadata, wait_for_ready=False)
        self._reader = threading.Thread(target=self._read, name="perseus-report-acks", daemon=True)
        self._reader.start()

    def _outgoing(self) -> Iterator[pb.ReportBatch]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item

    def _read(self) -> None:
        try:
            for ack in self._call:
                self._acks.put(ack)
            self._acks.put(StreamFailed(grpc.StatusCode.UNAVAILABLE, "the server ended the report stream"))
        except grpc.RpcError as exc:
            self._acks.put(StreamFailed(exc.code(), exc.details() or ""))

    def send(self, job_id: str, run_id: str, reports: Sequence[IterationReport]) -> ReportAck:
        """Send one batch and wait until it is committed.

        Raises :class:`StreamRefused` when the server refused the batch (the stream stays usable) and
        :class:`StreamFailed` when the stream broke or the ack did not come within the timeout (the
        stream is closed; whether the batch was stored is unknown, so send it again on a new stream).
        """
        self._seq += 1
        self._requests.put(pb.ReportBatch(seq=self._seq, job_id=job_id, run_id=run_id,
                                          reports=[to_proto(r) for r in reports]))
        try:
            ack = self._acks.get(timeout=self._timeout)
        except queue.Empty:
            self.close()
            raise StreamFailed(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"no acknowledgement within {self._timeout:g} s") from None
        if isinstance(ack, StreamFailed):
            self.close()
            raise ack
        if ack.seq != self._seq:  # acks come in order, one per batch: anything else is a broken server
            self.close()
            raise StreamFailed(grpc.StatusCode.INTERNAL, f"acknowledgement {ack.seq} for batch {self._seq}")
        if ack.code:
            raise StreamRefused(_CODES.get(ack.code, grpc.StatusCode.UNKNOWN), ack.error)
        return ReportAck(ack.version, ack.stored, ack.duplicates)

    def close(self) -> None:
        """End the stream (idempotent); the reader thread ends with it."""
        self._requests.put(_END)
        self._call.cancel()
        self._reader.join(timeout=5)
