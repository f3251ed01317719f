"""Replay real power-limit logs through GlobalPowerLimitOptimizer and check what it chooses.

Expected limits are computed here from the CSV rows with a few lines of arithmetic,
independently of perseus.power_limit.selectors, and a few are pinned as literals that
were checked by hand.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from pl_replay import ReplayLog, make_monitor

from perseus.device import safety
from perseus.power_limit import (
    Done,
    Energy,
    GlobalPowerLimitOptimizer,
    MaxSlowdownConstraint,
    OptimumSelector,
    Ready,
    Time,
    ZeusCost,
)

LOGS = [
    "A40_resnet18_gpu0.csv",
    "A40_resnet50_gpu0.csv",
    "A40_resnet18_gpu0_1_2_3.csv",
    "V100_bert-base-uncased_gpu0.csv",
    "V100_resnet18_gpu0_1.csv",
    "V100_shufflenetv2_gpu0.csv",
]
WARMUP, PROFILE = 2, 3
ETAS = [0.0, 0.25, 0.5, 0.75, 1.0]
FACTORS = [1.0, 1.1, 1.2, 1.5, 2.0, 100.0]


# ---- hand computation over the log rows -------------------------------------------------------


def expected_time(log: ReplayLog) -> int:
    return log.power_limits[log.times.index(min(log.times))]


def expected_energy(log: ReplayLog) -> int:
    energies = log.energies()
    return log.power_limits[energies.index(min(energies))]


def expected_zeus(log: ReplayLog, eta: float) -> int:
    max_power = max(log.power_limits) * log.num_gpus
    costs = [eta * e + (1 - eta) * max_power * t for e, t in zip(log.energies(), log.times, strict=True)]
    return log.power_limits[costs.index(min(costs))]


def expected_slowdown(log: ReplayLog, factor: float) -> int:
    fastest = log.times[log.power_limits.index(max(log.power_limits))]
    return min(pl for pl, t in zip(log.power_limits, log.times, strict=True) if t <= fastest * factor)


def expected_applied(limits: list[int], steps_per_epoch: int, optimal: int, epochs: int) -> list[float]:
    """Power limits set, in order, when every limit needs WARMUP + PROFILE steps inside one epoch.

    An epoch too short to finish a limit sets the maximum for its rest; the limit is retried
    next epoch. Setting the limit already in force is skipped.
    """
    applied: list[float] = []

    def apply(watts: int) -> None:
        if not applied or applied[-1] != watts:
            applied.append(float(watts))

    pending = sorted(limits, reverse=True)
    for _ in range(epochs):
        position = 0
        while pending and position < steps_per_epoch:
            apply(pending[0])
            if position + WARMUP + PROFILE <= steps_per_epoch:
                position += WARMUP + PROFILE
                pending.pop(0)
                if not pending:
                    apply(optimal)
            else:
                apply(max(limits))
                position = steps_per_epoch
    return applied


def train(plo: GlobalPowerLimitOptimizer, steps_per_epoch: int, epochs: int) -> None:
    for _ in range(epochs):
        plo.on_epoch_begin()
        for _ in range(steps_per_epoch):
            plo.on_step_begin()
            plo.on_step_end()
        plo.on_epoch_end()


# ---- tests -------------------------------------------------------------------------------------


# (log, selector, limit in W) worked out by hand from the CSV rows:
# A40 ResNet-50, 0.5*E + 0.5*300*T: 200 W -> 2508.75 + 3777.80 = 6286.55, the least (225 W: 6432.2, 175 W: 6624.6).
# 300 W takes 24.01 s; 24.01 * 1.1 = 26.41 s admits 200 W (25.19 s), not 175 W (27.94 s).
# Least energy 175 W (4867.5 J); fastest 300 W. V100 BERT: 125 W (2400.31 J) beats 150 W (2401.01 J) by < 1 J.
HAND_CHECKED: list[tuple[str, OptimumSelector, Callable[[ReplayLog], int], int]] = [
    ("A40_resnet50_gpu0.csv", ZeusCost(0.5), lambda log: expected_zeus(log, 0.5), 200),
    ("A40_resnet50_gpu0.csv", MaxSlowdownConstraint(1.1), lambda log: expected_slowdown(log, 1.1), 200),
    ("A40_resnet50_gpu0.csv", Energy(), expected_energy, 175),
    ("A40_resnet50_gpu0.csv", Time(), expected_time, 300),
    ("V100_bert-base-uncased_gpu0.csv", Energy(), expected_energy, 125),
]


# Functions by name, not by their repr (which holds an address): xdist workers must collect the same ids.
@pytest.mark.parametrize(("log_name", "selector", "helper", "watts"), HAND_CHECKED,
                         ids=lambda v: v.__name__ if inspect.isfunction(v) else str(v))
def test_hand_checked_values(
    log_name: str, selector: OptimumSelector, helper: Callable[[ReplayLog], int], watts: int, tmp_path: Path
) -> None:
    """The optimizer, profiling the log for real, picks the hand-computed limit (and so do the helpers)."""
    log = ReplayLog.read(log_name)
    monitor = make_monitor(log)
    plo = GlobalPowerLimitOptimizer(monitor, selector, WARMUP, PROFILE, 25, tmp_path / "pl.json")
    train(plo, steps_per_epoch=(WARMUP + PROFILE) * len(log.power_limits) + 1, epochs=1)
    assert isinstance(plo.state, Done)
    assert plo.optimal_power_limit == watts
    assert [gpu.limit for gpu in monitor.gpus] == [watts] * log.num_gpus
    plo.close()
    assert helper(log) == watts  # the helpers the other tests trust agree with the hand computation


@pytest.mark.parametrize("log_name", LOGS)
@pytest.mark.parametrize(
    "interrupt",
    ["none", "during warmup", "during profiling", "last profiling step of every other limit"],
)
def test_profiles_every_limit_and_applies_zeus_cost_optimum(
    log_name: str, interrupt: str, tmp_path: Path
) -> None:
    log = ReplayLog.read(log_name)
    per_limit = WARMUP + PROFILE
    steps_per_epoch = {
        "none": per_limit * len(log.power_limits) + 3,
        "during warmup": per_limit * 2 + 1,
        "during profiling": per_limit * 3 + WARMUP + 1,
        "last profiling step of every other limit": per_limit * 2 - 1,
    }[interrupt]
    epochs = len(log.power_limits) + 2
    eta = 0.5
    monitor = make_monitor(log)
    plo = GlobalPowerLimitOptimizer(
        monitor,
        ZeusCost(eta),
        warmup_steps=WARMUP,
        profile_steps=PROFILE,
        pl_step=25,
        profile_path=tmp_path / "pl.json",
    )
    assert plo.power_limits == sorted(map(float, log.power_limits), reverse=True)
    assert plo.num_gpus == log.num_gpus

    train(plo, steps_per_epoch, epochs)

    optimal = expected_zeus(log, eta)
    assert isinstance(plo.state, Done)
    assert plo.optimal_power_limit == optimal
    for gpu in monitor.gpus:
        assert gpu.limit == optimal
        assert gpu.applied == expected_applied(log.power_limits, steps_per_epoch, optimal, epochs)
    # Kept measurements are exactly the log rows, highest limit first; cut windows were dropped.
    assert [m.power_limit for m in plo.measurements] == log.power_limits
    assert [m.time for m in plo.measurements] == log.times
    assert [m.energy for m in plo.measurements] == pytest.approx(log.energies())
    assert not monitor.open

    plo.close()
    assert all(gpu.limit is None for gpu in monitor.gpus)  # default limit restored
    assert not any(safety.is_registered(gpu, "power") for gpu in monitor.gpus)


@pytest.mark.parametrize("log_name", LOGS)
def test_saved_profile_reused_with_every_selector(log_name: str, tmp_path: Path) -> None:
    log = ReplayLog.read(log_name)
    path = tmp_path / "pl.json"
    first = GlobalPowerLimitOptimizer(make_monitor(log), Time(), 0, 1, 25, path)
    train(first, steps_per_epoch=len(log.power_limits), epochs=1)
    assert first.optimal_power_limit == expected_time(log)
    first.close()
    saved = json.loads(path.read_text())
    assert saved["num_gpus"] == log.num_gpus
    assert [m["power_limit"] for m in saved["measurements"]] == log.power_limits

    cases: list[tuple[OptimumSelector, int]] = [
        (Time(), expected_time(log)),
        (Energy(), expected_energy(log)),
    ]
    cases += [(ZeusCost(eta), expected_zeus(log, eta)) for eta in ETAS]
    cases += [(MaxSlowdownConstraint(f), expected_slowdown(log, f)) for f in FACTORS]
    for selector, expected in cases:
        monitor = make_monitor(log)
        plo = GlobalPowerLimitOptimizer(monitor, selector, WARMUP, PROFILE, 25, path)
        assert isinstance(plo.state, Done), selector
        assert plo.optimal_power_limit == expected, selector
        train(plo, steps_per_epoch=4, epochs=1)
        # A reused profile sets the optimum once and never profiles or opens a window.
        assert [g.applied for g in monitor.gpus] == [[float(expected)]] * len(monitor.gpus), selector
        assert monitor.completed == []
        plo.close()


def test_profile_for_other_limits_is_profiled_again(tmp_path: Path) -> None:
    log = ReplayLog.read("A40_resnet18_gpu0.csv")
    path = tmp_path / "pl.json"
    train(GlobalPowerLimitOptimizer(make_monitor(log), Energy(), 0, 1, 50, path), 5, 1)
    assert len(json.loads(path.read_text())["measurements"]) == 5  # 300, 250, 200, 150, 100
    again = GlobalPowerLimitOptimizer(make_monitor(log), Energy(), 0, 1, 25, path)
    assert isinstance(again.state, Ready)
    train(again, 9, 1)
    assert again.optimal_power_limit == expected_energy(log)
    assert len(json.loads(path.read_text())["measurements"]) == 9


def test_zero_warmup_starts_window_on_the_first_step() -> None:
    log = ReplayLog.read("V100_shufflenetv2_gpu0.csv")
    monitor = make_monitor(log)
    plo = GlobalPowerLimitOptimizer(monitor, Energy(), warmup_steps=0, profile_steps=2, pl_step=25)
    plo.on_epoch_begin()
    plo.on_step_begin()
    assert monitor.open == {"__perseus_power_limit_250"}
    train(plo, steps_per_epoch=20, epochs=1)
    assert plo.optimal_power_limit == expected_energy(log) == 100
    plo.close()


def test_measure_only_gpus_are_left_alone() -> None:
    log = ReplayLog.read("A40_resnet18_gpu0.csv")
    monitor = make_monitor(log)
    for gpu in monitor.gpus:
        gpu.can_control = False
    plo = GlobalPowerLimitOptimizer(monitor, Energy(), 1, 1, 25)
    train(plo, 30, 2)
    assert [g.applied for g in monitor.gpus] == [[]]
    assert monitor.completed == []
