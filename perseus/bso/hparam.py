"""Hyperparameter-aware energy profiler: batch size x learning rate x dropout x power limit.

Which configuration trains most cheaply changes as training progresses (a large learning rate helps
early and hurts late; dropout pays off only near convergence). The profiler measures every
configuration of a small grid for a short window, ranks them by *cost per accuracy gained* and
profiles again whenever validation accuracy crosses the next of the given thresholds.

Units are SI throughout: seconds, joules and **watts** (power limits, ``max_power`` and average power
alike; the device layer converts to NVML's milliwatts). Cost is ``eta * J + (1 - eta) * max_power * s``
(:func:`perseus.bso.search.zeus_cost`), so it is in joules and comparable across power limits.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from perseus.bso.search import zeus_cost
from perseus.errors import InputError

if TYPE_CHECKING:
    from perseus.device import GPU, EnergyMonitor


@dataclass(frozen=True, order=True)
class HParamConfig:
    """One point of the grid; ``power_limit`` in watts (per GPU)."""

    batch_size: int
    learning_rate: float
    dropout: float
    power_limit: float


@dataclass(frozen=True)
class SearchSpace:
    """The grid: every combination of the four lists is profiled."""

    batch_sizes: tuple[int, ...]
    learning_rates: tuple[float, ...]
    dropouts: tuple[float, ...]
    power_limits: tuple[float, ...]  # watts

    def validate(self, power_limit_range: tuple[float, float] | None = None) -> None:
        """Raise :class:`InputError` naming the first bad list or value."""
        checks: list[tuple[str, Sequence[float], Callable[[float], bool], str]] = [
            ("batch_sizes", self.batch_sizes, lambda v: float(v).is_integer() and v > 0, "positive integers"),
            ("learning_rates", self.learning_rates, lambda v: math.isfinite(v) and v > 0, "positive numbers"),
            ("dropouts", self.dropouts, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
            ("power_limits", self.power_limits, lambda v: math.isfinite(v) and v > 0, "positive watts"),
        ]
        for name, values, ok, what in checks:
            if not values:
                raise InputError(f"SearchSpace.{name}", "must not be empty")
            bad = [v for v in values if not ok(v)]
            if bad:
                raise InputError(f"SearchSpace.{name}", f"values must be {what}, got {bad[0]!r}")
        if power_limit_range is not None:
            low, high = power_limit_range
            outside = [w for w in self.power_limits if not low <= w <= high]
            if outside:
                raise InputError(
                    "SearchSpace.power_limits",
                    f"{outside[0]:g} W is outside the GPU's range {low:g}-{high:g} W (give watts, not milliwatts)",
                )

    def configs(self) -> list[HParamConfig]:
        return [
            HParamConfig(int(b), float(lr), float(d), float(p))
            for b, lr, d, p in itertools.product(self.batch_sizes, self.learning_rates, self.dropouts, self.power_limits)
        ]


@dataclass(frozen=True)
class ProfileWindow:
    """What one short profiling window of a configuration measured."""

    config: HParamConfig
    time: float  # seconds
    energy: float  # joules, all GPUs
    accuracy_gain: float  # validation accuracy after minus before the window

    @property
    def average_power(self) -> float:
        """Watts, all GPUs together."""
        return self.energy / self.time if self.time > 0 else 0.0


@dataclass(frozen=True)
class RankedConfig:
    window: ProfileWindow
    cost: float  # joules (eta-weighted energy + max-power-priced time)
    cost_per_accuracy: float  # joules per unit of accuracy gained; inf when nothing was gained

    @property
    def config(self) -> HParamConfig:
        return self.window.config


def rank(windows: Sequence[ProfileWindow], eta: float, max_power: float) -> list[RankedConfig]:
    """Cheapest cost per accuracy first; configurations that gained nothing go last."""
    ranked = []
    for w in windows:
        cost = zeus_cost(w.energy, w.time, eta, max_power)
        per_acc = cost / w.accuracy_gain if w.accuracy_gain > 0 else math.inf
        ranked.append(RankedConfig(w, cost, per_acc))
    return sorted(ranked, key=lambda r: (r.cost_per_accuracy, r.cost, r.config))


@dataclass
class HyperparameterProfiler:
    """Profiles the grid, and again each time validation accuracy crosses a threshold.

    Args:
        space: The grid to profile.
        measure: Trains one configuration for a short window and reports what it cost and gained.
        thresholds: Validation accuracies at which to re-profile (e.g. ``(0.3, 0.5, 0.7)``).
        eta: Energy/time trade-off of the cost (0..1).
        max_power: Watts used to price time: sum of the GPUs' maximum power limits.
    """

    space: SearchSpace
    measure: Callable[[HParamConfig], ProfileWindow]
    thresholds: Sequence[float]
    eta: float = 0.5
    max_power: float = 0.0
    rankings: list[tuple[float | None, list[RankedConfig]]] = field(default_factory=list)
    _next_threshold: int = 0

    def __post_init__(self) -> None:
        self.space.validate()
        self.thresholds = tuple(sorted(self.thresholds))
        if not 0.0 <= self.eta <= 1.0:
            raise InputError("HyperparameterProfiler.eta", f"must be in [0, 1], got {self.eta}")
        if not (math.isfinite(self.max_power) and self.max_power > 0):
            raise InputError("HyperparameterProfiler.max_power", f"must be positive watts, got {self.max_power}")

    @property
    def best(self) -> HParamConfig:
        """The top configuration of the latest profile."""
        if not self.rankings:
            raise InputError("HyperparameterProfiler", "nothing profiled yet; call observe() or profile() first")
        return self.rankings[-1][1][0].config

    def profile(self, accuracy: float | None = None) -> list[RankedConfig]:
        """Measure every configuration now and rank them."""
        ranking = rank([self.measure(c) for c in self.space.configs()], self.eta, self.max_power)
        self.rankings.append((accuracy, ranking))
        return ranking

    def observe(self, accuracy: float) -> list[RankedConfig] | None:
        """Report the current validation accuracy; profiles (and returns the ranking) on the first call
        and whenever ``accuracy`` reached a threshold not reached before, else returns None."""
        crossed = bisect.bisect_right(self.thresholds, accuracy)
        if self.rankings and crossed <= self._next_threshold:
            return None
        self._next_threshold = max(self._next_threshold, crossed)
        return self.profile(accuracy)


def device_measure(
    monitor: EnergyMonitor,
    gpus: Sequence[GPU],
    train_window: Callable[[HParamConfig], float],
) -> Callable[[HParamConfig], ProfileWindow]:
    """A ``measure`` function on real (or simulated) GPUs.

    Sets ``config.power_limit`` watts on every GPU, runs ``train_window(config)`` (which trains for the
    profiling window with the config's batch size, learning rate and dropout and returns the validation
    accuracy gained) inside a monitor window, and restores the power limits even if training raises.
    """
    for gpu in gpus:
        gpu_range = gpu.power_limit_range()
        if gpu_range[0] > 1000 or gpu_range[1] > 100_000:
            raise InputError(f"GPU {gpu.index}", f"power_limit_range {gpu_range} does not look like watts")

    def measure(config: HParamConfig) -> ProfileWindow:
        for gpu in gpus:
            low, high = gpu.power_limit_range()
            if not low <= config.power_limit <= high:
                raise InputError(
                    "SearchSpace.power_limits",
                    f"{config.power_limit:g} W is outside GPU {gpu.index}'s range {low:g}-{high:g} W",
                )
        name = f"perseus-hparam-{config.batch_size}-{config.learning_rate:g}-{config.dropout:g}-{config.power_limit:g}"
        try:
            for gpu in gpus:
                gpu.set_power_limit(config.power_limit)
            monitor.begin_window(name)
            try:
                gain = float(train_window(config))
            finally:
                window = monitor.end_window(name)
        finally:
            for gpu in gpus:
                gpu.reset_power_limit()
        return ProfileWindow(config, window.time, window.total_energy, gain)

    return measure
