"""Energy from polled power, for GPUs without a hardware energy counter (pre-Volta).

A daemon thread samples power every ``interval`` seconds and integrates it with the
trapezoid rule; :meth:`energy` adds the stretch since the last sample at the last power.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class PowerIntegrator:
    def __init__(
        self,
        read_power: Callable[[], float],
        interval: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_power = read_power
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._energy = 0.0
        self._last_time = clock()
        self._last_power = read_power()
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="perseus-power-integrator", daemon=True)
        self._thread.start()

    def sample(self) -> None:
        """Take one sample now (the thread calls this; tests may too)."""
        power = self._read_power()
        now = self._clock()
        with self._lock:
            self._energy += 0.5 * (power + self._last_power) * (now - self._last_time)
            self._last_time, self._last_power = now, power

    def energy(self) -> float:
        """Joules integrated since the integrator started."""
        with self._lock:
            return self._energy + self._last_power * max(0.0, self._clock() - self._last_time)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sample()
            except Exception as exc:  # a lost GPU must not kill the process; energy() stays finite
                self.error = exc
                return
