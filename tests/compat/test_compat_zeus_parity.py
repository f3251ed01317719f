"""perseus.compat.zeus against the real Zeus package (zeus==0.16.0, from requirements.lock).

Zeus itself cannot run here (it needs an NVIDIA or AMD GPU), but its classes import: the
signatures and defaults of every compat class must equal Zeus's, its selectors must choose
what Zeus's choose, and each side must read the other's power-limit profile files.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zeus.monitor
import zeus.optimizer.batch_size.client
import zeus.optimizer.batch_size.common
import zeus.optimizer.power_limit as zeus_pl

import perseus.compat.zeus as compat
from perseus.device import restore_all
from perseus.power_limit import PowerLimitMeasurement, SavedProfile, save_saved_profile


def parameters(function: Callable[..., Any]) -> list[tuple[str, object]]:
    """(name, default) of every parameter but ``self``; annotations may differ in spelling."""
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values() if p.name != "self"]


SAME_SIGNATURE = [
    (zeus.monitor.ZeusMonitor.__init__, compat.ZeusMonitor.__init__),
    (zeus.monitor.ZeusMonitor.begin_window, compat.ZeusMonitor.begin_window),
    (zeus.monitor.ZeusMonitor.end_window, compat.ZeusMonitor.end_window),
    (zeus_pl.GlobalPowerLimitOptimizer.__init__, compat.GlobalPowerLimitOptimizer.__init__),
    (zeus_pl.HFGlobalPowerLimitOptimizer.__init__, compat.HFGlobalPowerLimitOptimizer.__init__),
    (zeus_pl.HFGlobalPowerLimitOptimizer.on_step_begin, compat.HFGlobalPowerLimitOptimizer.on_step_begin),
    (zeus_pl.HFGlobalPowerLimitOptimizer.on_epoch_end, compat.HFGlobalPowerLimitOptimizer.on_epoch_end),
    (zeus_pl.ZeusCost.__init__, compat.ZeusCost.__init__),
    (zeus_pl.MaxSlowdownConstraint.__init__, compat.MaxSlowdownConstraint.__init__),
    (zeus_pl.OptimumSelector.select, compat.OptimumSelector.select),
    (zeus.optimizer.batch_size.client.BatchSizeOptimizer.__init__, compat.BatchSizeOptimizer.__init__),
]


@pytest.mark.parametrize(("theirs", "ours"), SAME_SIGNATURE, ids=lambda f: f.__qualname__)
def test_signatures_and_defaults_equal_zeus(theirs: Callable[..., Any], ours: Callable[..., Any]) -> None:
    assert parameters(ours) == parameters(theirs)


@pytest.mark.parametrize("hook", ["on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_step_begin", "on_step_end", "on_evaluate"])  # fmt: skip
def test_optimizer_has_zeus_callback_hooks(hook: str) -> None:
    assert parameters(getattr(compat.GlobalPowerLimitOptimizer, hook)) == parameters(
        getattr(zeus_pl.GlobalPowerLimitOptimizer, hook)
    )


def test_hf_callback_is_a_transformers_callback() -> None:
    from transformers import TrainerCallback

    assert issubclass(compat.HFGlobalPowerLimitOptimizer, TrainerCallback)


def test_measurement_fields_equal_zeus() -> None:
    ours = [f.name for f in dataclasses.fields(compat.Measurement)]
    theirs = [f.name for f in dataclasses.fields(zeus.monitor.Measurement)]
    assert ours == theirs


def test_job_spec_fields_and_defaults_equal_zeus() -> None:
    theirs = zeus.optimizer.batch_size.common.JobSpec.__fields__
    ours = {f.name: f for f in dataclasses.fields(compat.JobSpec) if f.init}
    assert set(ours) == set(theirs)
    for name, field in theirs.items():
        if field.required:
            assert ours[name].default is dataclasses.MISSING, name
        else:
            assert ours[name].default == field.default, name


def random_measurements(
    rng: random.Random,
) -> tuple[list[zeus_pl.PowerLimitMeasurement], list[PowerLimitMeasurement]]:
    limits = sorted(rng.sample(range(100, 401, 5), rng.randint(1, 12)), reverse=True)
    rows = [(pl, rng.uniform(1, 20), rng.uniform(100, 9000)) for pl in limits]
    theirs = [zeus_pl.PowerLimitMeasurement(power_limit=pl, time=t, energy=e) for pl, t, e in rows]
    ours = [PowerLimitMeasurement(power_limit=pl, time=t, energy=e) for pl, t, e in rows]
    return theirs, ours


def test_selectors_choose_what_zeus_chooses() -> None:
    rng = random.Random(17)
    for _ in range(300):
        theirs, ours = random_measurements(rng)
        eta, world_size, factor = rng.random(), rng.randint(1, 16), rng.uniform(1.0, 1.5)
        pairs = [
            (zeus_pl.Time(), compat.Time()),
            (zeus_pl.Energy(), compat.Energy()),
            (zeus_pl.ZeusCost(eta, world_size), compat.ZeusCost(eta, world_size)),
            (zeus_pl.MaxSlowdownConstraint(factor), compat.MaxSlowdownConstraint(factor)),
        ]
        for zeus_selector, our_selector in pairs:
            assert our_selector.select(ours) == zeus_selector.select(theirs), (our_selector, ours)


@pytest.fixture
def sim_monitor(monkeypatch: pytest.MonkeyPatch) -> Iterator[compat.ZeusMonitor]:
    monkeypatch.setenv("PERSEUS_DEVICE", "sim")
    yield compat.ZeusMonitor(gpu_indices=[0])
    restore_all()


def test_a_profile_zeus_wrote_is_loaded(tmp_path: Path, sim_monitor: compat.ZeusMonitor) -> None:
    rng = random.Random(3)
    rows = [(pl, rng.uniform(5, 9), rng.uniform(900, 2000)) for pl in range(400, 99, -50)]
    measurements = [zeus_pl.PowerLimitMeasurement(power_limit=pl, time=t, energy=e) for pl, t, e in rows]
    path = tmp_path / "zeus.json"
    path.write_text(zeus_pl._PowerLimitMeasurementList(measurements=measurements).json(indent=4))
    plo = compat.GlobalPowerLimitOptimizer(sim_monitor, pl_step=50, profile_path=path)
    expected = zeus_pl.ZeusCost(eta_knob=0.5, world_size=1).select(measurements)
    assert plo.optimal_power_limit == expected
    assert plo.current_power_limit == expected, "a loaded optimum applies at once, as in Zeus"
    assert [(m.power_limit, m.time, m.energy) for m in plo.measurements] == rows


def test_zeus_reads_a_profile_perseus_wrote(tmp_path: Path) -> None:
    ours = (PowerLimitMeasurement(300.0, 9.5, 2000.0), PowerLimitMeasurement(250.0, 10.0, 1800.0))
    path = tmp_path / "perseus.json"
    save_saved_profile(SavedProfile(measurements=ours, num_gpus=4, power_limit_range=(250.0, 300.0)), path)
    theirs = zeus_pl._PowerLimitMeasurementList.parse_file(path).measurements
    assert [(m.power_limit, m.time, m.energy) for m in theirs] == [(300, 9.5, 2000.0), (250, 10.0, 1800.0)]
