"""Hyperparameter-aware profiler on simulated GPUs (device layer, fake clock), watts throughout."""

from __future__ import annotations

from pathlib import Path

import pytest

from perseus.bso.hparam import HParamConfig, HyperparameterProfiler, SearchSpace, device_measure
from perseus.bso.search import zeus_cost
from perseus.device import EnergyMonitor, SimulatedGPU
from perseus.errors import InputError
from perseus.profile import load_profile

PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"
SPACE = SearchSpace(batch_sizes=(64, 256), learning_rates=(0.1, 0.01), dropouts=(0.0, 0.1), power_limits=(250.0, 400.0))


class Training:
    """A toy training run: the accuracy a window gains depends on the phase of training."""

    def __init__(self) -> None:
        self.now = 0.0
        self.accuracy = 0.0
        profile = load_profile(PROFILE)
        self.gpus = [SimulatedGPU(profile, index=i, clock=self.clock, sleep=self.sleep) for i in range(2)]
        self.monitor = EnergyMonitor(self.gpus, clock=self.clock)
        self.seen_limits: list[float | None] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def window(self, config: HParamConfig) -> float:
        self.seen_limits.append(self.gpus[0]._read_power_limit())
        for _ in range(4096 // config.batch_size):
            for gpu in self.gpus:
                gpu.on_instruction_begin(0, "forward")
            for gpu in self.gpus:
                gpu.on_instruction_end()
        early = self.accuracy < 0.5
        lr_factor = config.learning_rate / 0.1 if early else 0.01 / config.learning_rate
        dropout_factor = 1.0 if early else (1.5 if config.dropout > 0 else 1.0)
        return 0.02 * lr_factor * dropout_factor * (64 / config.batch_size) ** 0.2


def make(training: Training) -> HyperparameterProfiler:
    measure = device_measure(training.monitor, training.gpus, training.window)
    return HyperparameterProfiler(SPACE, measure, thresholds=(0.5, 0.3, 0.7), eta=0.5, max_power=800.0)


def test_reprofiles_at_thresholds_and_ranking_follows_the_phase() -> None:
    training = Training()
    profiler = make(training)
    first = profiler.observe(0.1)
    assert first is not None and len(first) == 16
    assert profiler.observe(0.2) is None
    early = profiler.best
    assert early.learning_rate == 0.1
    training.accuracy = 0.55
    assert profiler.observe(0.55) is not None  # crossed 0.3 and 0.5: one profile
    assert profiler.observe(0.52) is None
    late = profiler.best
    assert (late.learning_rate, late.dropout) == (0.01, 0.1)
    assert profiler.observe(0.71) is not None
    assert profiler.observe(0.99) is None
    assert [acc for acc, _ in profiler.rankings] == [0.1, 0.55, 0.71]


def test_costs_units_and_power_limits_restored() -> None:
    training = Training()
    ranking = make(training).profile()
    per_acc = [r.cost_per_accuracy for r in ranking]
    assert per_acc == sorted(per_acc)
    for r in ranking:
        w = r.window
        assert r.cost == pytest.approx(zeus_cost(w.energy, w.time, 0.5, 800.0))
        # Average power is watts over both GPUs: never above twice the per-GPU limit.
        assert 0 < w.average_power <= 2 * w.config.power_limit + 1e-6
    by_limit = {r.config.power_limit: r.window.average_power for r in ranking if r.config.batch_size == 64}
    assert by_limit[250.0] < by_limit[400.0]
    assert set(training.seen_limits) == {250.0, 400.0}
    assert all(gpu._read_power_limit() is None for gpu in training.gpus)  # restored after profiling


def test_bad_units_and_space_are_rejected() -> None:
    training = Training()
    milliwatts = SearchSpace((64,), (0.1,), (0.0,), (250_000.0,))
    measure = device_measure(training.monitor, training.gpus, training.window)
    profiler = HyperparameterProfiler(milliwatts, measure, thresholds=(0.5,), max_power=800.0)
    with pytest.raises(InputError, match="outside GPU 0's range 100-400 W"):
        profiler.profile()
    with pytest.raises(InputError, match="milliwatts"):
        milliwatts.validate(power_limit_range=(100.0, 400.0))
    with pytest.raises(InputError, match="dropouts"):
        SearchSpace((64,), (0.1,), (1.0,), (200.0,)).validate()
    with pytest.raises(InputError, match="max_power"):
        HyperparameterProfiler(SPACE, measure, thresholds=(), max_power=0.0)
    with pytest.raises(InputError, match="nothing profiled"):
        _ = HyperparameterProfiler(SPACE, measure, thresholds=(), max_power=1.0).best
