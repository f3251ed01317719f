"""A simulated GPU whose time and energy follow a real instruction profile.

Workers on a CPU-only machine call :meth:`on_instruction_begin` / :meth:`on_instruction_end`
around each forward/backward. The simulated GPU then makes the instruction take the
profiled time at the clock that is currently applied (waiting out the difference if the
real CPU work was faster) and advances its energy counter by the profiled energy; all
other wall time draws the profile's blocking power. So a lower clock really makes the
worker slower and the measured energy really changes, as on the profiled GPU.

If the clock changes while an instruction runs (the frequency controller applies changes
asynchronously), the instruction progresses piecewise: a fraction ``dt / T(f)`` of it is
done in ``dt`` seconds at clock ``f``, costing the same fraction of ``E(f)``.

With several model chunks per GPU (interleaved, zero-bubble, DualPipeV), an instruction of one
chunk runs only that chunk's layers: the worker passes the chunk's share of the stage's layers
and the instruction costs that share of the profiled stage. A profile without the backward split
gets one (:data:`SIM_BACKWARD_INPUT_SHARE`), so zero-bubble schedules run on any shipped profile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from perseus.device.base import GPU
from perseus.errors import DeviceError
from perseus.profile import InstructionProfile, PipelineProfile, split_backward

# Relative progress below which an instruction counts as finished (float round-off).
_DONE_EPS = 1e-9

SIM_BACKWARD_INPUT_SHARE = 0.5
"""Input-gradient share of a backward for profiles measured fused: B and W each do one matrix
product per weight matrix of the same size; ``benchmarks/backward_split.py`` measures it."""


@dataclass
class _Running:
    """The instruction in flight: how much of it is done and what that cost."""

    profile: InstructionProfile
    share: float
    """Fraction of the profiled stage this instruction runs (its chunk's share of the layers)."""
    start: float
    seg_start: float
    """Start of the current constant-clock segment (progress is counted up to here)."""
    frequency: int
    progress: float = 0.0
    energy: float = 0.0
    waiting: bool = False
    """True once the real work returned and the GPU only waits out the modelled time."""


class SimulatedGPU(GPU):
    """A GPU modelled on ``profile``'s stage ``stage``.

    ``time_scale`` shrinks (or stretches) every instruction's time and energy, e.g. 0.1 makes
    a 50 ms forward take 5 ms. ``clock``/``sleep`` can be replaced by a fake clock in tests.
    ``lock_latency`` makes every clock change take that long, like NVML's 10-20 ms.
    """

    def __init__(
        self,
        profile: PipelineProfile,
        stage: int = 0,
        index: int = 0,
        time_scale: float = 1.0,
        power_limit_range: tuple[float, float] = (100.0, 400.0),
        clock: Callable[[], float] = time.monotonic,
        *,
        sleep: Callable[[float], None] = time.sleep,
        name: str | None = None,
        lock_latency: float = 0.0,
    ) -> None:
        stages = {s for s, _ in profile.instructions}
        if stage not in stages:
            raise DeviceError(
                f"{profile.source}: simulated GPU {index} asked to model stage {stage}, "
                f"but the profile has stages 0-{max(stages)}"
            )
        if time_scale <= 0:
            raise DeviceError(f"simulated GPU {index}: time_scale must be positive, got {time_scale}")
        self.profile = profile if profile.has_split_backward() else split_backward(profile, SIM_BACKWARD_INPUT_SHARE)
        self.stage = stage
        self.index = index
        self.name = name or f"Simulated GPU (profile {profile.source}, stage {stage})"
        self.time_scale = time_scale
        self.lock_latency = lock_latency
        self.supports_energy_counter = True
        self.can_control = True
        self.min_measurement_window = 0.0  # the model's counter is exact
        self._power_range = (float(power_limit_range[0]), float(power_limit_range[1]))
        self._clock = clock
        self._sleep = sleep
        freqs = {m.frequency for p in profile if p.stage == stage for m in p.measurements}
        self._frequencies = sorted(freqs, reverse=True)
        self._locked: int | None = None
        self._power_limit: float | None = None
        # Reentrant: a SIGTERM handler restoring clocks may run on a thread that holds it.
        self._mutex = threading.RLock()
        self._origin = clock()
        self._busy_time = 0.0
        self._busy_energy = 0.0
        self._running: _Running | None = None

    # --- queries -------------------------------------------------------------------
    def supported_frequencies(self) -> list[int]:
        return list(self._frequencies)

    def power_limit_range(self) -> tuple[float, float]:
        return self._power_range

    def current_frequency(self) -> int | None:
        with self._mutex:
            if self._running is not None:
                return self._running.frequency
            return self._locked if self._locked is not None else self._frequencies[0]

    def energy(self) -> float:
        with self._mutex:
            now = self._clock()
            busy_time, busy_energy = self._busy_time, self._busy_energy
            cur = self._running
            if cur is not None:
                frac, seg_end = self._progress(cur, now)
                busy_time += seg_end - cur.start
                busy_energy += cur.energy + frac * self._cost(cur)[1]
            idle = max(0.0, (now - self._origin) - busy_time)
            return busy_energy + self.profile.blocking_power * idle

    def power(self) -> float:
        with self._mutex:
            cur = self._running
            if cur is None or (cur.waiting and self._progress(cur, self._clock())[0] + cur.progress >= 1):
                return self.profile.blocking_power
            t, e = self._cost(cur)
            return e / t

    @property
    def busy_time(self) -> float:
        """Seconds spent in finished instructions (modelled, including waits)."""
        with self._mutex:
            return self._busy_time

    # --- instruction hooks ---------------------------------------------------------
    def on_instruction_begin(self, stage: int, kind: str, share: float = 1.0) -> None:
        if not 0.0 < share <= 1.0:
            raise DeviceError(f"simulated GPU {self.index}: instruction share must be in (0, 1], got {share}")
        try:
            profile = self.profile[(stage, kind)]
        except KeyError:
            raise DeviceError(
                f"{self.profile.source}: no profile for stage {stage} {kind!r} on simulated GPU {self.index}"
            ) from None
        with self._mutex:
            if self._running is not None:
                running = self._running.profile
                raise DeviceError(
                    f"simulated GPU {self.index}: stage {stage} {kind} began while stage "
                    f"{running.stage} {running.instruction} is still running; call on_instruction_end first"
                )
            now = self._clock()
            self._running = _Running(profile, share, now, now, self._effective_frequency(profile))

    def on_instruction_end(self) -> None:
        with self._mutex:
            cur = self._running
            if cur is None:
                raise DeviceError(f"simulated GPU {self.index}: on_instruction_end without on_instruction_begin")
            self._advance(cur, self._clock())
            cur.waiting = True
        # Wait out the modelled time; a clock change during the wait changes what is left.
        while True:
            with self._mutex:
                self._advance(cur, self._clock())
                if cur.progress >= 1.0 - _DONE_EPS:
                    self._busy_time += cur.seg_start - cur.start
                    self._busy_energy += cur.energy
                    self._running = None
                    return
                wait = (1.0 - cur.progress) * self._cost(cur)[0]
            self._sleep(wait)

    # --- backend primitives --------------------------------------------------------
    def _apply_locked_clock(self, mhz: int) -> None:
        if self.lock_latency > 0:
            self._sleep(self.lock_latency)
        with self._mutex:
            self._retune(lambda: setattr(self, "_locked", mhz))

    def _apply_unlocked_clock(self) -> None:
        if self.lock_latency > 0:
            self._sleep(self.lock_latency)
        with self._mutex:
            self._retune(lambda: setattr(self, "_locked", None))

    def _read_power_limit(self) -> float | None:
        return self._power_limit

    def _apply_power_limit(self, watts: float | None) -> None:
        with self._mutex:
            self._retune(lambda: setattr(self, "_power_limit", watts))

    # --- model ---------------------------------------------------------------------
    def _cost(self, cur: _Running) -> tuple[float, float]:
        m = cur.profile.at(cur.frequency)
        scale = self.time_scale * cur.share
        return m.time * scale, m.energy * scale

    def _progress(self, cur: _Running, now: float) -> tuple[float, float]:
        """Fraction of the instruction done since ``cur.seg_start``, and when that segment ends."""
        t = self._cost(cur)[0]
        frac = max(0.0, now - cur.seg_start) / t
        if cur.waiting:  # past completion the GPU is idle, not busy
            frac = min(frac, max(0.0, 1.0 - cur.progress))
        return frac, cur.seg_start + frac * t

    def _advance(self, cur: _Running, now: float) -> None:
        frac, seg_end = self._progress(cur, now)
        cur.progress += frac
        cur.energy += frac * self._cost(cur)[1]
        cur.seg_start = seg_end

    def _retune(self, change: Callable[[], None]) -> None:
        """Apply a clock/limit change, splitting the running instruction at this moment."""
        cur = self._running
        if cur is not None:
            self._advance(cur, self._clock())
        change()
        if cur is not None:
            cur.frequency = self._effective_frequency(cur.profile)

    def _effective_frequency(self, profile: InstructionProfile) -> int:
        """Clock an instruction runs at: the locked (or max) clock, lowered to fit the power limit."""
        wanted = self._locked if self._locked is not None else self._frequencies[0]
        freqs = profile.frequencies  # highest first
        nearest = min(freqs, key=lambda f: (abs(f - wanted), -f))
        if self._power_limit is None:
            return nearest
        for f in freqs:
            m = profile.at(f)
            if f <= nearest and m.energy / m.time <= self._power_limit:
                return f
        return freqs[-1]
