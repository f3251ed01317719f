"""Zeus's ``GlobalPowerLimitOptimizer`` and optimum selectors over :mod:`perseus.power_limit`.

Zeus drives its optimizer from ``on_step_begin`` and ``on_epoch_end`` only: a step ends
when the next one begins. This wrapper feeds Perseus's optimizer (which counts steps at
``on_step_end``) the end of the previous step whenever a step begins, so warmup and
profiling windows cover exactly the steps Zeus's would. Selectors take Zeus's
``select(measurements)``; ``ZeusCost`` takes ``world_size`` as Zeus's does.

A Zeus script has no per-instruction hooks, so on a simulated GPU (no NVIDIA GPU present)
each training step is modelled as one forward pass of the simulated stage: the step then
takes the profiled time and energy at the power limit in force, and profiling has
something to measure. Real GPUs are never touched by this (their kernels set the pace).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path

from perseus import power_limit
from perseus.compat.zeus.monitor import ZeusMonitor
from perseus.device import SimulatedGPU
from perseus.errors import InputError
from perseus.power_limit import PowerLimitMeasurement


class OptimumSelector(abc.ABC):
    """Chooses the power limit (W) to train at from one measurement per profiled limit."""

    @abc.abstractmethod
    def select(self, measurements: list[PowerLimitMeasurement]) -> float:
        """Return the power limit of one of ``measurements`` (profiling order, highest limit first)."""


class Time(OptimumSelector):
    """The power limit with the shortest time."""

    def select(self, measurements: list[PowerLimitMeasurement]) -> float:
        return power_limit.Time().select(measurements, num_gpus=1)


class Energy(OptimumSelector):
    """The power limit with the least energy."""

    def select(self, measurements: list[PowerLimitMeasurement]) -> float:
        return power_limit.Energy().select(measurements, num_gpus=1)


class ZeusCost(OptimumSelector):
    """The power limit with the least ``eta * energy + (1 - eta) * max_power * time``.

    ``max_power`` is the highest profiled limit times ``world_size`` (the job's GPU count).
    """

    def __init__(self, eta_knob: float, world_size: int = 1) -> None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise InputError("ZeusCost.world_size", f"must be an integer >= 1, got {world_size!r}")
        self._cost = power_limit.ZeusCost(eta_knob)
        self.eta_knob = self._cost.eta
        self.world_size = world_size

    def select(self, measurements: list[PowerLimitMeasurement]) -> float:
        return self._cost.select(measurements, num_gpus=self.world_size)


class MaxSlowdownConstraint(OptimumSelector):
    """The lowest power limit whose time is at most ``factor`` times the time at the highest limit."""

    def __init__(self, factor: float) -> None:
        self._constraint = power_limit.MaxSlowdownConstraint(factor)
        self.factor = self._constraint.factor

    def select(self, measurements: list[PowerLimitMeasurement]) -> float:
        return self._constraint.select(measurements, num_gpus=1)


class _ZeusStyleSelector(power_limit.OptimumSelector):
    """Lets Perseus's optimizer call any selector with Zeus's one-argument ``select``."""

    def __init__(self, selector: OptimumSelector) -> None:
        self.selector = selector

    def select(self, measurements: Sequence[PowerLimitMeasurement], num_gpus: int) -> float:
        return float(self.selector.select(list(measurements)))

    def __repr__(self) -> str:
        return type(self.selector).__name__


class GlobalPowerLimitOptimizer:
    """Profile power limits from the highest down during training, then train at the selected one.

    Call :meth:`on_step_begin` at the start of every training step and :meth:`on_epoch_end`
    after every epoch (the other hooks exist and do nothing, as in Zeus).

    Args:
        monitor: Its GPUs get the power limit; it measures the profiling windows.
        optimum_selector: Picks the limit; default ``ZeusCost(0.5, world_size=len(monitor.gpu_indices))``.
        wait_steps: Steps left alone at the very start (e.g. cuDNN autotuning).
        warmup_steps: Steps run at each new limit before measuring.
        profile_steps: Steps measured per limit.
        pl_step: Watts between consecutive profiled limits.
        profile_path: Existing file: load the measurements and skip profiling. Missing file:
            profile, then save there. None: keep the measurements in memory only.
    """

    def __init__(
        self,
        monitor: ZeusMonitor,
        optimum_selector: OptimumSelector | None = None,
        wait_steps: int = 1,
        warmup_steps: int = 10,
        profile_steps: int = 40,
        pl_step: int = 25,
        profile_path: str | Path | None = None,
    ) -> None:
        if optimum_selector is None:
            optimum_selector = ZeusCost(eta_knob=0.5, world_size=len(monitor.gpu_indices))
        self.monitor = monitor
        self.optimum_selector = optimum_selector
        self.optimizer = power_limit.GlobalPowerLimitOptimizer(
            monitor.energy_monitor,
            _ZeusStyleSelector(optimum_selector),
            warmup_steps=warmup_steps,
            profile_steps=profile_steps,
            pl_step=pl_step,
            profile_path=profile_path,
            wait_steps=wait_steps,
        )
        self._simulated = [gpu for gpu in monitor.gpus if isinstance(gpu, SimulatedGPU)]
        self._step_open = False
        self.optimizer.on_epoch_begin()  # a loaded profile's optimum applies at once, as in Zeus

    @property
    def measurements(self) -> list[PowerLimitMeasurement]:
        """One measurement per profiled power limit so far (all of them once profiling is done)."""
        return self.optimizer.measurements

    @property
    def optimal_power_limit(self) -> float | None:
        """The selected power limit (W) once profiling is over (or was loaded), else None."""
        return self.optimizer.optimal_power_limit

    @property
    def current_power_limit(self) -> float | None:
        """The power limit (W) Perseus last applied; None while the GPUs run at their default."""
        return self.optimizer.current_power_limit

    def on_step_begin(self) -> None:
        """A training step starts (and so the previous one has ended)."""
        self._end_open_step()
        self.optimizer.on_step_begin()
        self._step_open = True
        for gpu in self._simulated:
            gpu.on_instruction_begin(gpu.stage, "forward")

    def on_epoch_end(self) -> None:
        """An epoch ended: a warmup or profiling window it cut short is discarded and redone."""
        self._end_open_step()
        self.optimizer.on_epoch_end()

    def on_train_begin(self) -> None:
        """Does nothing (Zeus's callback interface)."""

    def on_train_end(self) -> None:
        """Does nothing (Zeus's callback interface)."""

    def on_epoch_begin(self) -> None:
        """Does nothing (Zeus's callback interface)."""

    def on_step_end(self) -> None:
        """Does nothing: Zeus counts a step as ended when the next one begins."""

    def on_evaluate(self, metric: float) -> None:
        """Does nothing (Zeus's callback interface)."""

    def _end_open_step(self) -> None:
        if self._step_open:
            for gpu in self._simulated:
                gpu.on_instruction_end()
            self.optimizer.on_step_end()
            self._step_open = False
