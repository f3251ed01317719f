"""Job targets and how they pick a plan from the frontier.

A target is stored as JSON in the job row; the frontier kinds are resolved against the
frontier (ascending iteration time, descending energy), the others name a stored plan.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from perseus.errors import InputError

#: Targets resolved against the frontier; only these follow stragglers.
FRONTIER_KINDS: tuple[str, ...] = ("fastest", "max_slowdown", "deadline", "energy_budget")
BASELINES: tuple[str, ...] = ("max-frequency", "global-power-limit", "per-stage-power-limit")
KINDS: tuple[str, ...] = (*FRONTIER_KINDS, "plan", "baseline")


class TimedPlan(Protocol):
    @property
    def iteration_time(self) -> float: ...
    @property
    def energy(self) -> float: ...


@dataclass(frozen=True)
class TargetSpec:
    """What a job should run.

    ``value`` is the slowdown factor (max_slowdown, baseline), seconds (deadline) or joules
    (energy_budget). ``plan_json`` holds a user plan until it is stored.
    """

    kind: str = "fastest"
    value: float = 0.0
    baseline: str = ""
    power_limits: tuple[float, ...] = ()
    nearest: bool = False
    """A deadline or energy budget no plan meets runs the closest plan instead of being refused."""
    plan_json: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = "target"
        if self.kind not in KINDS:
            raise InputError(where, f"unknown target kind {self.kind!r}")
        if self.kind != "fastest" and self.kind != "plan" and not math.isfinite(self.value):
            raise InputError(f"{where}.{self.kind}", "must be a finite number")
        if self.kind == "max_slowdown" and self.value < 1.0:
            raise InputError("target.max_slowdown", f"must be >= 1.0, got {self.value}")
        if self.kind in ("deadline", "energy_budget") and self.value <= 0:
            raise InputError(f"target.{self.kind}", f"must be > 0, got {self.value}")
        if self.kind == "baseline":
            if self.baseline not in BASELINES:
                raise InputError("target.baseline.kind", f"must be one of {', '.join(BASELINES)}")
            if self.value < 1.0:
                raise InputError("target.baseline.max_slowdown", f"must be >= 1.0, got {self.value}")
            for watts in self.power_limits:
                if not (math.isfinite(watts) and 0 < watts <= 10_000):
                    raise InputError("target.baseline.power_limits", f"watts must be in (0, 10000], got {watts}")
            if self.baseline == "max-frequency" and self.power_limits:
                raise InputError("target.baseline.power_limits", "max-frequency takes no power limits")
            if self.baseline == "global-power-limit" and len(self.power_limits) > 1:
                raise InputError("target.baseline.power_limits", "global-power-limit takes one value")

    @property
    def follows_frontier(self) -> bool:
        return self.kind in FRONTIER_KINDS

    def describe(self) -> str:
        if self.kind == "fastest":
            return "fastest"
        if self.kind == "plan":
            return "plan"
        if self.kind == "baseline":
            return f"baseline {self.baseline}"
        return f"{self.kind} {self.value:g}"

    def to_json(self) -> str:
        data: dict[str, Any] = {"kind": self.kind}
        if self.value:
            data["value"] = self.value
        if self.baseline:
            data["baseline"] = self.baseline
        if self.power_limits:
            data["power_limits"] = list(self.power_limits)
        if self.nearest:
            data["nearest"] = True
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> TargetSpec:
        data = json.loads(text or "{}")
        return cls(
            kind=data.get("kind", "fastest"),
            value=float(data.get("value", 0.0)),
            baseline=data.get("baseline", ""),
            power_limits=tuple(float(w) for w in data.get("power_limits", ())),
            nearest=bool(data.get("nearest", False)),
        )


def pace_index(plans: Sequence[TimedPlan], time_limit: float) -> int:
    """Index of the least-energy plan with iteration time <= ``time_limit`` (the fastest if none)."""
    best = 0
    for i, plan in enumerate(plans):
        if plan.iteration_time <= time_limit * (1 + 1e-12):
            best = i
    return best


def select_index(plans: Sequence[TimedPlan], target: TargetSpec) -> int:
    """The frontier index a frontier-kind target picks (see :func:`choose` for the reasons)."""
    return choose(plans, target)[0]


def choose(plans: Sequence[TimedPlan], target: TargetSpec) -> tuple[int, str]:
    """(frontier index, note) for a frontier-kind target.

    A deadline below the fastest plan's time or an energy budget below the least-energy plan's
    energy is met by no plan: it raises :class:`InputError` saying what the frontier can do, or
    with ``target.nearest`` picks the closest plan and says so in the note (empty otherwise).
    """
    if not plans:
        raise ValueError("empty frontier")
    if target.kind == "fastest":
        return 0, ""
    if target.kind == "max_slowdown":
        return pace_index(plans, plans[0].iteration_time * target.value), ""
    if target.kind == "deadline":
        fastest = plans[0]
        if target.value < fastest.iteration_time * (1 - 1e-12):
            return _unreachable(target, 0, f"the fastest plan takes {fastest.iteration_time:.4g} s per iteration")
        return pace_index(plans, target.value), ""
    if target.kind == "energy_budget":
        for i, plan in enumerate(plans):
            if plan.energy <= target.value * (1 + 1e-12):
                return i, ""
        least = plans[-1]
        return _unreachable(target, len(plans) - 1, f"the least-energy plan uses {least.energy:.4g} J per iteration")
    raise ValueError(f"target {target.kind!r} does not select from the frontier")


def _unreachable(target: TargetSpec, nearest: int, limit: str) -> tuple[int, str]:
    unit = "s" if target.kind == "deadline" else "J"
    what = f"{target.kind.replace('_', ' ')} {target.value:g} {unit}"
    if not target.nearest:
        raise InputError(f"target.{target.kind}", f"no plan meets the {what}: {limit} "
                                                  "(perseus target --nearest runs the closest plan instead)")
    return nearest, f"no plan meets the {what} ({limit}); running the closest plan"
