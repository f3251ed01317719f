"""Optimum selectors: which profiled power limit to run the rest of training at.

A selector sees one :class:`PowerLimitMeasurement` per profiled power limit (time and
energy of the same number of training steps, summed over every GPU of the job) and
returns the power limit to apply. They are pure functions of the measurements, so every
data-parallel rank that holds the same aggregated measurements picks the same limit.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from perseus.errors import InputError

MAX_SLOWDOWN_ENV = "PERSEUS_MAX_SLOWDOWN"


@dataclass(frozen=True)
class PowerLimitMeasurement:
    """Time (s) and energy (J, all GPUs of the job) of the profiled steps at one power limit (W)."""

    power_limit: float
    time: float
    energy: float


def zeus_cost(energy: float, time: float, eta: float, max_power: float) -> float:
    """Zeus's energy-time cost ``eta * energy + (1 - eta) * max_power * time``.

    ``max_power`` (W) converts time into joules: the energy the job would draw running
    every GPU at its maximum power limit, so both terms share one unit.
    """
    return eta * energy + (1.0 - eta) * max_power * time


class OptimumSelector(abc.ABC):
    """Chooses the power limit to apply once profiling is over."""

    @abc.abstractmethod
    def select(self, measurements: Sequence[PowerLimitMeasurement], num_gpus: int) -> float:
        """Return one of ``measurements``' power limits.

        ``measurements`` is in profiling order (highest power limit first) and not empty;
        ``num_gpus`` is the number of GPUs whose energy the measurements add up.
        """


class Time(OptimumSelector):
    """The power limit with the shortest time (ties go to the higher limit, profiled first)."""

    def select(self, measurements: Sequence[PowerLimitMeasurement], num_gpus: int) -> float:
        return min(measurements, key=lambda m: m.time).power_limit

    def __repr__(self) -> str:
        return "Time()"


class Energy(OptimumSelector):
    """The power limit with the least energy (ties go to the higher limit, profiled first)."""

    def select(self, measurements: Sequence[PowerLimitMeasurement], num_gpus: int) -> float:
        return min(measurements, key=lambda m: m.energy).power_limit

    def __repr__(self) -> str:
        return "Energy()"


class ZeusCost(OptimumSelector):
    """The power limit with the least :func:`zeus_cost`; ``eta`` in [0, 1] weighs energy against time.

    ``eta = 1`` is pure energy, ``eta = 0`` pure time. ``max_power`` is the highest profiled
    power limit times the number of GPUs of the job.
    """

    def __init__(self, eta: float) -> None:
        if not (isinstance(eta, (int, float)) and math.isfinite(eta) and 0.0 <= eta <= 1.0):
            raise InputError("ZeusCost.eta", f"must be a number in [0, 1], got {eta!r}")
        self.eta = float(eta)

    def select(self, measurements: Sequence[PowerLimitMeasurement], num_gpus: int) -> float:
        max_power = max(m.power_limit for m in measurements) * num_gpus
        return min(measurements, key=lambda m: zeus_cost(m.energy, m.time, self.eta, max_power)).power_limit

    def __repr__(self) -> str:
        return f"ZeusCost(eta={self.eta})"


class MaxSlowdownConstraint(OptimumSelector):
    """The lowest power limit whose time is within ``factor`` times the time at the highest limit."""

    def __init__(self, factor: float) -> None:
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 1.0):
            raise InputError("MaxSlowdownConstraint.factor", f"must be a number >= 1, got {factor!r}")
        self.factor = float(factor)

    def select(self, measurements: Sequence[PowerLimitMeasurement], num_gpus: int) -> float:
        fastest = max(measurements, key=lambda m: m.power_limit)
        budget = fastest.time * self.factor
        return min(m.power_limit for m in measurements if m.time <= budget)

    def __repr__(self) -> str:
        return f"MaxSlowdownConstraint(factor={self.factor})"


def max_slowdown_from_env(default: float = 1.1) -> MaxSlowdownConstraint:
    """``MaxSlowdownConstraint`` with the factor from ``PERSEUS_MAX_SLOWDOWN`` (else ``default``)."""
    raw = os.environ.get(MAX_SLOWDOWN_ENV)
    if raw is None or not raw.strip():
        return MaxSlowdownConstraint(default)
    try:
        factor = float(raw)
    except ValueError:
        raise InputError(MAX_SLOWDOWN_ENV, f"must be a number >= 1, got {raw!r}") from None
    if not (math.isfinite(factor) and factor >= 1.0):
        raise InputError(MAX_SLOWDOWN_ENV, f"must be a number >= 1, got {raw!r}")
    return MaxSlowdownConstraint(factor)
