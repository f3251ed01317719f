"""The one GPU interface every backend (NVML, simulated) implements.

Public methods live here and route every clock or power-limit change through
:mod:`perseus.device.safety`, so no backend can forget to restore what it changed.
Backends implement the small ``_apply_*`` / ``_read_*`` primitives.
"""

from __future__ import annotations

import abc
import bisect
import time
from collections.abc import Callable

from perseus.device import safety
from perseus.errors import DeviceError


class GPU(abc.ABC):
    """One GPU as seen by this process."""

    index: int
    """Index as seen by this process (after ``CUDA_VISIBLE_DEVICES`` mapping)."""
    name: str
    supports_energy_counter: bool = True
    """Whether :meth:`energy` reads a hardware counter (else it integrates polled power)."""
    can_control: bool = True
    """``False`` in measure-only mode: clocks and power limits are never changed."""
    control_problem: str | None = None
    """Why :attr:`can_control` is ``False``, and what to do about it."""
    min_measurement_window: float = 1.0
    """Seconds of accumulated work an energy reading must span to be trusted: real counters advance
    in steps and sample power part of the time, so shorter windows are noise (HARDWARE.md)."""

    # --- queries -------------------------------------------------------------------
    @abc.abstractmethod
    def supported_frequencies(self) -> list[int]:
        """Graphics clocks in MHz, highest first."""

    @abc.abstractmethod
    def power_limit_range(self) -> tuple[float, float]:
        """(min, max) settable power limit in watts."""

    @abc.abstractmethod
    def energy(self) -> float:
        """Cumulative joules since an arbitrary origin."""

    @abc.abstractmethod
    def power(self) -> float:
        """Instant power draw in watts."""

    def current_frequency(self) -> int | None:
        """The graphics clock the GPU runs at right now (MHz), if the backend can tell."""
        return None

    def wait_for_frequency(
        self,
        mhz: int,
        timeout: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> int | None:
        """Poll the read-back clock until it is ``mhz`` or ``timeout`` passes; return the last reading.

        A real GPU ramps to a locked clock after the NVML call returns (and stays lower under a
        power cap), so a measurement labelled with a clock must first see it applied.
        """
        deadline = clock() + timeout
        while True:
            now = self.current_frequency()
            if now == mhz or clock() >= deadline:
                return now
            sleep(0.002)

    # --- backend primitives ---------------------------------------------------------
    @abc.abstractmethod
    def _apply_locked_clock(self, mhz: int) -> None: ...

    @abc.abstractmethod
    def _apply_unlocked_clock(self) -> None: ...

    @abc.abstractmethod
    def _read_power_limit(self) -> float | None:
        """Current power limit in watts; ``None`` means the default."""

    @abc.abstractmethod
    def _apply_power_limit(self, watts: float | None) -> None:
        """Set the power limit; ``None`` restores the default."""

    # --- control (safety-tracked) ----------------------------------------------------
    def nearest_frequency(self, mhz: int) -> int:
        """The supported graphics clock closest to ``mhz`` (ties go to the higher one)."""
        freqs = sorted(self.supported_frequencies())
        if not freqs:
            raise DeviceError(f"GPU {self.index} ({self.name}) reports no supported graphics clocks")
        pos = bisect.bisect_left(freqs, mhz)
        candidates = freqs[max(0, pos - 1) : pos + 1]
        return min(candidates, key=lambda f: (abs(f - mhz), -f))

    def lock_frequency(self, mhz: int) -> None:
        """Lock the graphics clock to the supported clock nearest ``mhz``."""
        self._require_control("lock the graphics clock")
        target = self.nearest_frequency(mhz)
        description = f"GPU {self.index} graphics clock (locked by Perseus)"
        with safety.changing(self, "clock", description, self._restore_clock) as allowed:
            if allowed:
                self._remember("clock", None)
                self._apply_locked_clock(target)

    def unlock_frequency(self) -> None:
        """Let the driver pick clocks again.

        Skipped only when Perseus never locked this GPU's clock and may not control it (measure-only);
        a clock Perseus locked is unlocked even after control failed since.
        """
        if self.can_control or safety.is_registered(self, "clock"):
            safety.forget(self, "clock", self._restore_clock)

    def set_power_limit(self, watts: float) -> None:
        self._require_control("set the power limit")
        low, high = self.power_limit_range()
        if not low <= watts <= high:
            raise DeviceError(
                f"GPU {self.index}: power limit {watts:g} W is outside the supported range {low:g}-{high:g} W"
            )
        # Restore the limit found before Perseus first changed it, not blindly the default.
        original = None if safety.is_registered(self, "power") else self._read_power_limit()
        description = f"GPU {self.index} power limit (changed by Perseus)"
        with safety.changing(self, "power", description, lambda: self._restore_power_limit(original)) as allowed:
            if allowed:
                self._remember("power", original)
                self._apply_power_limit(watts)

    def reset_power_limit(self) -> None:
        """Back to the default power limit (skipped like :meth:`unlock_frequency`)."""
        if self.can_control or safety.is_registered(self, "power"):
            safety.forget(self, "power", lambda: self._restore_power_limit(None))

    def _restore_clock(self) -> None:
        self._apply_unlocked_clock()
        self._forget("clock")

    def _restore_power_limit(self, watts: float | None) -> None:
        self._apply_power_limit(watts)
        self._forget("power")

    def _remember(self, what: str, original: float | None) -> None:
        """Persist a change (``"clock"``/``"power"`` and the original) before applying it, for
        processes that restore after this one is killed; GPUs whose state dies with the process skip it."""
        return

    def _forget(self, what: str) -> None:
        """Drop the persisted record once the change is undone."""
        return

    def _require_control(self, action: str) -> None:
        if not self.can_control:
            raise DeviceError(
                f"cannot {action} on GPU {self.index}: {self.control_problem or 'GPU is in measure-only mode'}"
            )

    # --- hooks for simulated GPUs (no-ops on real GPUs) --------------------------------
    def on_instruction_begin(self, stage: int, kind: str, share: float = 1.0) -> None:
        """Called right before a pipeline instruction (``"forward"``, ``"backward_input"``, ...) runs.

        ``share`` is the fraction of the stage's layers the instruction covers (its model chunk's).
        """
        return  # no-op by default

    def on_instruction_end(self) -> None:
        """Called right after it; a simulated GPU waits out the modelled time here."""
        return  # no-op by default

    def synchronize(self) -> None:
        """Wait for queued accelerator work, so measurement windows cover it."""
        return  # no-op by default

    def close(self) -> None:
        """Release background resources (pollers); restores nothing by itself."""
        return  # no-op by default

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.index}: {self.name}>"
