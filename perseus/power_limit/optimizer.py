"""Global power-limit optimizer: profile power limits during real training, then run at the best one.

The single-GPU and data-parallel (DDP, FSDP) counterpart of Perseus's per-instruction
frequency plans. Every GPU of the job gets the same power limit, chosen in three phases
driven by the training loop's hooks::

    Ready(limit) --step begin--> Warmup(limit) --warmup_steps--> Profiling(limit)
        --profile_steps--> Warmup(next lower limit) ... --last limit--> Done(optimal)

Limits go from the GPU's maximum down by ``pl_step`` watts to its minimum. Warmup steps
let clocks and temperature settle after a change; the next ``profile_steps`` steps are
one measurement window (time and energy). An epoch that ends mid-profile (evaluation,
checkpointing and data-loader restarts would pollute the window) drops that window, runs
the rest of the epoch at the maximum limit, and re-profiles the same limit next epoch.
When every limit is measured, the selector picks one; the measurements are saved to
``profile_path`` and a later run with the same path applies the optimum at once.

Data parallel: build one optimizer per local rank over that rank's GPU(s). Energy is
summed and time maxed over ranks (:mod:`perseus.power_limit.distributed`), so every rank
applies the same limit. All ranks must call the hooks the same number of times (a
``DistributedSampler`` makes epochs equally long).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from perseus.errors import DeviceError, InputError
from perseus.power_limit import distributed
from perseus.power_limit.selectors import OptimumSelector, PowerLimitMeasurement, Time
from perseus.power_limit.store import SavedProfile, load_saved_profile, measurements_match, save_saved_profile

if TYPE_CHECKING:
    from perseus.device.base import GPU

logger = logging.getLogger(__name__)

WINDOW_PREFIX = "__perseus_power_limit_"


class MeasuredWindow(Protocol):
    """What the optimizer reads from a finished measurement window (``perseus.device.Window``)."""

    @property
    def time(self) -> float: ...

    @property
    def total_energy(self) -> float: ...


class WindowMonitor(Protocol):
    """The part of :class:`perseus.device.EnergyMonitor` the optimizer uses."""

    def begin_window(self, name: str, sync: bool = True) -> None: ...

    def end_window(self, name: str, sync: bool = True) -> MeasuredWindow: ...


@dataclass
class Ready:
    """Waiting for the next step to start profiling ``next_power_limit``, after ``wait`` more steps."""

    next_power_limit: float
    wait: int = 0


@dataclass
class Warmup:
    """Running ``power_limit`` for ``steps`` steps so far, before measuring."""

    power_limit: float
    steps: int = 0


@dataclass
class Profiling:
    """Measuring ``power_limit``; ``steps`` steps of the window are done."""

    power_limit: float
    steps: int = 0


@dataclass
class Done:
    """Profiling is over (or was loaded); training runs at ``optimal_power_limit``."""

    optimal_power_limit: float


State = Ready | Warmup | Profiling | Done


def power_limit_candidates(min_watts: float, max_watts: float, pl_step: float) -> list[float]:
    """Power limits from ``max_watts`` down by ``pl_step`` while at least ``min_watts``."""
    limits: list[float] = []
    k = 0
    while (limit := round(max_watts - k * pl_step, 3)) >= min_watts - 1e-6:
        limits.append(limit)
        k += 1
    return limits


class GlobalPowerLimitOptimizer:
    """Profiles power limits during training and applies the one ``selector`` chooses.

    Call :meth:`on_epoch_begin`, :meth:`on_step_begin`, :meth:`on_step_end` and
    :meth:`on_epoch_end` from the training loop (same hooks as Zeus's optimizer).

    Args:
        monitor: energy monitor over this process's GPUs (``perseus.device.EnergyMonitor``).
        selector: picks the optimum from the measurements (default :class:`Time`).
        warmup_steps: steps run at a new power limit before measuring (>= 0).
        profile_steps: steps measured per power limit (>= 1).
        pl_step: watts between consecutive profiled power limits (> 0, at most the GPU's range).
        profile_path: JSON file the measurements are saved to and reused from; None keeps
            them in memory only.
        wait_steps: steps at the start of training left alone before the first warmup (>= 0),
            e.g. when the first iterations autotune kernels and are unlike the rest.
        gpus: the GPUs whose power limit is set; default ``monitor.gpus``.
    """

    def __init__(
        self,
        monitor: WindowMonitor,
        selector: OptimumSelector | None = None,
        warmup_steps: int = 10,
        profile_steps: int = 40,
        pl_step: float = 25.0,
        profile_path: str | Path | None = None,
        *,
        wait_steps: int = 0,
        gpus: Sequence[GPU] | None = None,
    ) -> None:
        name = type(self).__name__
        _check_int(f"{name}.wait_steps", wait_steps, minimum=0)
        _check_int(f"{name}.warmup_steps", warmup_steps, minimum=0)
        _check_int(f"{name}.profile_steps", profile_steps, minimum=1)
        if (
            isinstance(pl_step, bool)
            or not isinstance(pl_step, (int, float))
            or not (math.isfinite(pl_step) and pl_step > 0)
        ):
            raise InputError(f"{name}.pl_step", f"must be a positive number of watts, got {pl_step!r}")
        if selector is not None and not isinstance(selector, OptimumSelector):
            raise InputError(f"{name}.selector", f"must be an OptimumSelector, got {type(selector).__name__}")
        if gpus is None:
            gpus = getattr(monitor, "gpus", None)
        if not gpus:
            raise InputError(f"{name}.monitor", "has no GPUs to set power limits on")

        self.monitor = monitor
        self.selector: OptimumSelector = selector if selector is not None else Time()
        self.warmup_steps = int(warmup_steps)
        self.profile_steps = int(profile_steps)
        self.pl_step = float(pl_step)
        self.profile_path = Path(profile_path) if profile_path is not None else None
        self.gpus: list[GPU] = list(gpus)

        # What the ranks must agree on before training starts: the common power-limit range,
        # whether every GPU can be controlled, whether every rank sees the saved profile.
        local_min = max(gpu.power_limit_range()[0] for gpu in self.gpus)
        local_max = min(gpu.power_limit_range()[1] for gpu in self.gpus)
        can_control = all(gpu.can_control for gpu in self.gpus)
        has_profile = self.profile_path is not None and self.profile_path.is_file()
        neg_max, min_watts, cannot_control, no_profile = distributed.all_reduce(
            [-local_max, local_min, float(not can_control), float(not has_profile)], "max"
        )
        (total_gpus,) = distributed.all_reduce([float(len(self.gpus))], "sum")
        self.num_gpus = round(total_gpus)
        self.min_power_limit, self.max_power_limit = min_watts, -neg_max
        self.can_control = cannot_control == 0.0

        if self.min_power_limit > self.max_power_limit:
            raise DeviceError(
                f"the GPUs' power-limit ranges do not overlap (common range would be "
                f"{self.min_power_limit:g}-{self.max_power_limit:g} W); use one GPU model per job"
            )
        span = self.max_power_limit - self.min_power_limit
        if span > 0 and self.pl_step > span + 1e-6:
            raise InputError(
                f"{name}.pl_step",
                f"{self.pl_step:g} W is larger than the GPU's power-limit range "
                f"{self.min_power_limit:g}-{self.max_power_limit:g} W ({span:g} W)",
            )
        self.power_limits = power_limit_candidates(self.min_power_limit, self.max_power_limit, self.pl_step)
        self.measurements: list[PowerLimitMeasurement] = []
        self.current_power_limit: float | None = None

        self.state: State = Ready(self.power_limits[0], wait=int(wait_steps))
        if not self.can_control:
            logger.warning(
                "power limits cannot be changed on this machine; training runs at the current limit"
            )
            self.state = Done(self.max_power_limit)  # nominal: nothing is ever applied
        elif no_profile == 0.0 and self.profile_path is not None:
            saved = load_saved_profile(self.profile_path)
            if measurements_match(saved.measurements, self.power_limits):
                self.measurements = list(saved.measurements)
                optimal = self.selector.select(self.measurements, saved.num_gpus or self.num_gpus)
                logger.info(
                    "loaded power-limit profile %s; optimal power limit %g W", self.profile_path, optimal
                )
                self.state = Done(optimal)
            else:
                logger.warning(
                    "power-limit profile %s covers other power limits than %s W; profiling again",
                    self.profile_path,
                    ", ".join(f"{p:g}" for p in self.power_limits),
                )

    # ---- training-loop hooks -------------------------------------------------------------

    def on_epoch_begin(self) -> None:
        """Apply the optimum when profiling is over (or was loaded from a saved profile)."""
        if isinstance(self.state, Done):
            self._apply(self.state.optimal_power_limit)

    def on_step_begin(self) -> None:
        """Start profiling the next power limit when ready."""
        state = self.state
        if isinstance(state, Ready) and state.wait > 0:
            state.wait -= 1
        elif isinstance(state, Ready):
            self._start(state.next_power_limit)
        elif isinstance(state, Done):
            self._apply(state.optimal_power_limit)

    def on_step_end(self) -> None:
        """Count warmup and profiling steps; close the window and move on when enough are done."""
        state = self.state
        if isinstance(state, Warmup):
            state.steps += 1
            if state.steps >= self.warmup_steps:
                self._begin_profiling(state.power_limit)
        elif isinstance(state, Profiling):
            state.steps += 1
            if state.steps >= self.profile_steps:
                window = self.monitor.end_window(self._window(state.power_limit))
                self.measurements.append(
                    PowerLimitMeasurement(state.power_limit, float(window.time), float(window.total_energy))
                )
                index = self.power_limits.index(state.power_limit)
                if index + 1 < len(self.power_limits):
                    self._start(self.power_limits[index + 1])
                else:
                    self._finish()

    def on_epoch_end(self) -> None:
        """Drop a window the epoch boundary cut short; re-profile that limit next epoch."""
        state = self.state
        if isinstance(state, (Warmup, Profiling)):
            if isinstance(state, Profiling):
                self.monitor.end_window(self._window(state.power_limit))
            logger.info("epoch ended while profiling %g W; profiling it again next epoch", state.power_limit)
            self.state = Ready(state.power_limit)
            self._apply(self.max_power_limit)

    # ---- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Give every GPU back its default power limit (also done at exit by the device layer)."""
        if self.current_power_limit is not None:
            for gpu in self.gpus:
                gpu.reset_power_limit()
            self.current_power_limit = None

    def __enter__(self) -> GlobalPowerLimitOptimizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def optimal_power_limit(self) -> float | None:
        """The chosen power limit (W) once profiling is over, else None."""
        return self.state.optimal_power_limit if isinstance(self.state, Done) else None

    # ---- internals -----------------------------------------------------------------------

    def _window(self, power_limit: float) -> str:
        return f"{WINDOW_PREFIX}{power_limit:g}"

    def _apply(self, watts: float) -> None:
        if not self.can_control or self.current_power_limit == watts:
            return
        for gpu in self.gpus:
            gpu.set_power_limit(watts)
        self.current_power_limit = watts

    def _start(self, power_limit: float) -> None:
        self._apply(power_limit)
        self.state = Warmup(power_limit)
        if self.warmup_steps == 0:
            self._begin_profiling(power_limit)

    def _begin_profiling(self, power_limit: float) -> None:
        self.monitor.begin_window(self._window(power_limit))
        self.state = Profiling(power_limit)

    def _finish(self) -> None:
        # Every rank reaches this on the same step; aggregate so they all choose alike.
        local = self.measurements
        energies = distributed.all_reduce([m.energy for m in local], "sum")
        times = distributed.all_reduce([m.time for m in local], "max")
        self.measurements = [
            PowerLimitMeasurement(m.power_limit, t, e) for m, t, e in zip(local, times, energies, strict=True)
        ]
        optimal = self.selector.select(self.measurements, self.num_gpus)
        if self.profile_path is not None and distributed.is_local_writer():
            save_saved_profile(
                SavedProfile(
                    measurements=tuple(self.measurements),
                    num_gpus=self.num_gpus,
                    power_limit_range=(self.min_power_limit, self.max_power_limit),
                    pl_step=self.pl_step,
                    warmup_steps=self.warmup_steps,
                    profile_steps=self.profile_steps,
                ),
                self.profile_path,
            )
        logger.info(
            "power-limit profiling done (%s); optimal power limit %g W",
            ", ".join(f"{m.power_limit:g} W: {m.time:.3g} s {m.energy:.4g} J" for m in self.measurements),
            optimal,
        )
        self.state = Done(optimal)
        self._apply(optimal)


def _check_int(where: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(where, f"must be an integer >= {minimum}, got {value!r}")
