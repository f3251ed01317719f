"""Apply GPU clock changes off the compute thread.

Setting a clock through NVML takes 10-20 ms, longer than many instructions' slack, so
the training loop only records the wish (:meth:`FrequencyController.set_frequency`, a
few microseconds) and a background thread applies it. Requests that arrive while a
change is in flight are coalesced: only the newest is applied, and a request equal to
the last one is dropped at once.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from perseus.device import safety
from perseus.device.base import GPU
from perseus.errors import DeviceError


class _Unlock:
    """Request to unlock clocks (let the driver choose)."""

    def __repr__(self) -> str:
        return "UNLOCK"


UNLOCK = _Unlock()
_NOTHING = object()


@dataclass
class ControllerStats:
    """Counters for benchmarks and diagnostics."""

    requests: int = 0
    """Calls to set_frequency/reset."""
    coalesced: int = 0
    """Requests dropped because they equalled the latest request."""
    applied: int = 0
    """Changes actually applied to the GPU."""
    refused: int = 0
    """Clock locks not applied because the GPU cannot be controlled (measure-only, or an error)."""
    last_lag: float = 0.0
    """Seconds from the applied request's arrival to the end of its application."""


class FrequencyController:
    """Non-blocking clock control for one GPU. Also a context manager (closing unlocks)."""

    def __init__(self, gpu: GPU) -> None:
        safety.install()  # from the caller's (main) thread, so signals restore clocks
        self.gpu = gpu
        self.applied_frequency: int | None = None
        """Last clock actually applied (MHz); ``None`` when unlocked or never set."""
        self.error: DeviceError | None = None
        """The first error applying a change; later locks are refused (unlocking is still tried)."""
        self.stats = ControllerStats()
        self._cond = threading.Condition()
        self._pending: object = _NOTHING
        self._pending_since = 0.0
        self._latest: object = UNLOCK  # the newest request, applied or not
        self._requested = 0
        self._done = 0
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, name=f"perseus-frequency-gpu{gpu.index}", daemon=True
        )
        self._thread.start()

    def set_frequency(self, mhz: int) -> None:
        """Ask for graphics clock ``mhz``; returns immediately."""
        self._request(int(mhz))

    def reset(self) -> None:
        """Ask to unlock clocks; returns immediately."""
        self._request(UNLOCK)

    def _request(self, target: object) -> None:
        with self._cond:
            self.stats.requests += 1
            if target == self._latest or self._closing:
                self.stats.coalesced += 1
                return
            self._latest = target
            if self._pending is _NOTHING:
                self._pending_since = time.perf_counter()
            self._pending = target
            self._requested += 1
            self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every request so far is applied (or failed); for tests and shutdown."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._done < self._requested:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise DeviceError(
                        f"GPU {self.gpu.index}: clock change not applied within {timeout:g} s"
                    )
                self._cond.wait(left)

    def close(self, timeout: float = 5.0) -> None:
        """Unlock the clock (if Perseus locked it) and stop the background thread."""
        with self._cond:
            if self._closing:
                return
        self.reset()
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join(timeout)

    def __enter__(self) -> FrequencyController:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is _NOTHING and not self._closing:
                    self._cond.wait()
                if self._pending is _NOTHING:
                    return  # closing and nothing left
                target, since = self._pending, self._pending_since
                self._pending = _NOTHING
                upto = self._requested
            self._apply(target, since)
            with self._cond:
                self._done = max(self._done, upto)
                self._cond.notify_all()

    @property
    def can_apply(self) -> bool:
        """Whether clock requests still reach the GPU (no error so far and not measure-only)."""
        return self.error is None and self.gpu.can_control

    def _apply(self, target: object, since: float) -> None:
        gpu = self.gpu
        if target is not UNLOCK and not self.can_apply:
            # Never silent: the first refusal says why; reports carry the read-back clock.
            with self._cond:
                self.stats.refused += 1
                first = self.stats.refused == 1
            if first and self.error is None:
                print(f"perseus: GPU {gpu.index}: clock requests are not applied: {gpu.control_problem}",
                      file=sys.stderr)
            return
        try:
            if target is UNLOCK:
                # Also after an error: a clock Perseus locked must not stay locked.
                gpu.unlock_frequency()
                applied = None
            else:
                assert isinstance(target, int)
                gpu.lock_frequency(target)
                applied = gpu.nearest_frequency(target)
        except DeviceError as exc:
            # Never raise on the compute thread's behalf: report once, then measure only.
            self.error = exc
            print(f"perseus: {exc}; continuing without clock control", file=sys.stderr)
            return
        with self._cond:
            self.applied_frequency = applied
            self.stats.applied += 1
            self.stats.last_lag = time.perf_counter() - since
