"""Training-side client of the batch size optimizer.

::

    bso = BatchSizeOptimizer(monitor, "127.0.0.1:50051", job=JobSpec("resnet50-nightly", 256, (64, 128, 256, 512), 0.65, 40))
    loader = make_loader(batch_size=bso.get_batch_size())
    bso.on_train_begin()
    for epoch in range(job.max_epochs):
        train_one_epoch(loader)
        bso.on_evaluate(validate())      # raises TrainFailError if the server stopped this run
        if bso.training_finished:        # converged: the run is done
            break

Each epoch's time and energy come from ``monitor`` windows (an :class:`perseus.device.EnergyMonitor`).
If the process exits or gets SIGTERM/SIGINT before the trial ended, the trial is reported failed; if
it dies harder (SIGKILL, power loss) the server's lease on the trial expires instead.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
import time
import types
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import grpc

from perseus.bso.convert import spec_to_proto
from perseus.bso.spec import JobSpec
from perseus.errors import InputError, PerseusError
from perseus.v1 import bso_pb2, bso_pb2_grpc

_WINDOW = "perseus-bso-epoch"


class TrainFailError(PerseusError):
    """The server stopped this run before it converged (cost over beta x best, or max epochs)."""


class _Window(Protocol):
    @property
    def time(self) -> float: ...

    @property
    def total_energy(self) -> float: ...


class EpochMonitor(Protocol):
    """What the client needs from a monitor: named measurement windows (seconds, joules)."""

    def begin_window(self, name: str, sync: bool = True) -> None: ...

    def end_window(self, name: str, sync: bool = True) -> _Window: ...


def _max_power_of(monitor: Any) -> float:
    """Sum of the maximum power limits (W) of the monitor's GPUs, or 0 if it does not expose them."""
    gpus = getattr(monitor, "gpus", None)
    if not gpus:
        return 0.0
    return float(sum(gpu.power_limit_range()[1] for gpu in gpus))


class BatchSizeOptimizer:
    """Asks the server for this run's batch size and reports every epoch to it.

    Args:
        monitor: Measures each epoch (``begin_window``/``end_window``).
        server: ``host:port`` of the Perseus server, or an open gRPC channel.
        job: The recurring job; ``max_power`` 0 is filled in from the monitor's GPUs.
        timeout: Seconds per RPC.
        handle_signals: Install SIGTERM/SIGINT handlers (main thread only) that fail the trial first.
    """

    def __init__(
        self,
        monitor: EpochMonitor,
        server: str | grpc.Channel,
        job: JobSpec,
        *,
        timeout: float = 10.0,
        handle_signals: bool = True,
    ) -> None:
        if job.max_power <= 0:
            job = replace(job, max_power=_max_power_of(monitor))
            if job.max_power <= 0:
                raise InputError("JobSpec.max_power", "the monitor exposes no GPUs; give max_power in watts")
        self.job = job.normalized()
        self.monitor = monitor
        self.timeout = timeout
        self.retry_delay = 0.5  # seconds before the first retry of an idempotent call; doubles each time
        self._own_channel = isinstance(server, str)
        self._channel = grpc.insecure_channel(server) if isinstance(server, str) else server
        self._stub = bso_pb2_grpc.BatchSizeOptimizerStub(self._channel)
        self._lock = threading.Lock()
        self._trial: bso_pb2.TrialAssignment | None = None
        self._epoch = 0
        self._in_window = False
        self._ended = False
        self.training_finished = False
        self.last_cost = 0.0
        self._previous_handlers: dict[int, Any] = {}
        self._handle_signals = handle_signals

    # -- trial lifecycle -------------------------------------------------------------------------

    @property
    def trial_number(self) -> int | None:
        return self._trial.trial_number if self._trial else None

    def get_batch_size(self) -> int:
        """Register the job (idempotent) and open this run's trial; returns its batch size."""
        with self._lock:
            if self._trial is None:
                self._call(self._stub.RegisterJob, bso_pb2.RegisterJobRequest(spec=spec_to_proto(self.job)))
                request = bso_pb2.GetBatchSizeRequest(job_id=self.job.job_id)
                # Not retried: a retry after a lost answer would open a second trial.
                self._trial = self._call(self._stub.GetBatchSize, request, retries=0)
                atexit.register(self._fail_unfinished, "process exited before the trial ended")
                self._install_signal_handlers()
            return self._trial.batch_size

    def on_train_begin(self) -> None:
        """Start measuring the first epoch."""
        self.get_batch_size()
        self._begin_epoch()

    def on_evaluate(self, metric: float) -> None:
        """Report the epoch that just ended with its validation ``metric``.

        Sets :attr:`training_finished` when the run converged.

        Raises:
            TrainFailError: the server stopped the run without convergence (the trial is ended).
        """
        if self._trial is None or not self._in_window:
            raise PerseusError("BatchSizeOptimizer.on_evaluate called before on_train_begin")
        if self.training_finished:
            return
        window = self.monitor.end_window(_WINDOW)
        self._in_window = False
        self._epoch += 1
        request = bso_pb2.ReportEpochRequest(
            job_id=self.job.job_id, trial_number=self._trial.trial_number, epoch=self._epoch,
            time=float(window.time), energy=float(window.total_energy), metric=float(metric),
        )  # fmt: skip
        answer = self._call(self._stub.ReportEpoch, request)
        self.last_cost = answer.cost
        if answer.decision == bso_pb2.DECISION_CONTINUE:
            self._begin_epoch()
            return
        self._ended = True
        if answer.decision == bso_pb2.DECISION_CONVERGED:
            self.training_finished = True
            return
        raise TrainFailError(
            f"batch size optimizer stopped trial {self._trial.trial_number} of job {self.job.job_id!r} "
            f"(batch size {self._trial.batch_size}) after {self._epoch} epochs: {answer.message}"
        )

    def end(self, failed: bool = False, reason: str = "") -> None:
        """End the trial explicitly (e.g. training stopped for another reason)."""
        if self._trial is None or self._ended:
            return
        if self._in_window:
            self.monitor.end_window(_WINDOW)
            self._in_window = False
        self._ended = True
        request = bso_pb2.EndTrialRequest(
            job_id=self.job.job_id, trial_number=self._trial.trial_number, failed=failed, reason=reason
        )
        self._call(self._stub.EndTrial, request)

    def close(self) -> None:
        """End an unfinished trial as failed, restore signal handlers and close an owned channel."""
        self._fail_unfinished("client closed before the trial ended")
        atexit.unregister(self._fail_unfinished)
        for signum, handler in self._previous_handlers.items():
            if threading.current_thread() is threading.main_thread():
                signal.signal(signum, handler)
        self._previous_handlers.clear()
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> BatchSizeOptimizer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None) -> None:
        if exc is not None and not isinstance(exc, TrainFailError):
            self._fail_unfinished(f"training raised {type(exc).__name__}: {exc}"[:255])
        self.close()

    # -- internals --------------------------------------------------------------------------------

    def _begin_epoch(self) -> None:
        if not self._in_window:
            self.monitor.begin_window(_WINDOW)
            self._in_window = True

    def _call(self, method: Callable[..., Any], request: Any, retries: int = 3) -> Any:
        """One RPC; idempotent calls (all but GetBatchSize) are retried while the server is unreachable."""
        for attempt in range(retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                transient = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if transient and attempt < retries:
                    time.sleep(self.retry_delay * 2**attempt)
                    continue
                details = exc.details() if hasattr(exc, "details") else str(exc)
                raise PerseusError(f"batch size optimizer server: {getattr(code, 'name', code)}: {details}") from None
        raise AssertionError("unreachable")

    def _fail_unfinished(self, reason: str) -> None:
        if self._trial is None or self._ended:
            return
        # If the server is unreachable, its lease expiry marks the trial failed instead.
        with contextlib.suppress(PerseusError):
            self.end(failed=True, reason=reason)

    def _install_signal_handlers(self) -> None:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            self._previous_handlers[signum] = previous
            signal.signal(signum, self._make_handler(signum, previous))

    def _make_handler(self, signum: int, previous: Any) -> Callable[[int, types.FrameType | None], None]:
        def handler(received: int, frame: types.FrameType | None) -> None:
            self._fail_unfinished(f"received signal {signal.Signals(received).name}")
            if callable(previous):
                previous(received, frame)
            elif previous == signal.SIG_IGN:
                return
            else:  # default action: restore it and re-deliver so the exit status is the usual one
                signal.signal(received, signal.SIG_DFL)
                signal.raise_signal(received)

        return handler
