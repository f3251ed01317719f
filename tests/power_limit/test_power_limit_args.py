"""Bad arguments fail at construction with a message naming the argument."""

from __future__ import annotations

from pathlib import Path

import pytest
from pl_replay import ReplayLog, make_monitor

from perseus.dataloader import EnergyAwareDataLoader
from perseus.errors import InputError
from perseus.power_limit import (
    GlobalPowerLimitOptimizer,
    MaxSlowdownConstraint,
    ZeusCost,
    max_slowdown_from_env,
    power_limit_candidates,
)


def monitor():
    return make_monitor(ReplayLog.read("A40_resnet18_gpu0.csv"))  # 100-300 W


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"profile_steps": 0}, r"GlobalPowerLimitOptimizer\.profile_steps: must be an integer >= 1, got 0"),
        ({"warmup_steps": -1}, r"warmup_steps: must be an integer >= 0, got -1"),
        ({"warmup_steps": 2.5}, r"warmup_steps: must be an integer"),
        ({"pl_step": 0}, r"pl_step: must be a positive number of watts, got 0"),
        ({"pl_step": float("nan")}, r"pl_step: must be a positive number"),
        ({"pl_step": 250}, r"pl_step: 250 W is larger than the GPU's power-limit range 100-300 W \(200 W\)"),
        ({"selector": "energy"}, r"selector: must be an OptimumSelector, got str"),
    ],
)
def test_optimizer_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        GlobalPowerLimitOptimizer(monitor(), **kwargs)


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="profile_steps"):
        GlobalPowerLimitOptimizer(monitor(), profile_steps=0)


def test_monitor_without_gpus() -> None:
    class NoGPUs:
        def __init__(self) -> None:
            self.gpus: list = []

        def begin_window(self, name: str, sync: bool = True) -> None: ...
        def end_window(self, name: str, sync: bool = True): ...

    with pytest.raises(InputError, match="monitor: has no GPUs"):
        GlobalPowerLimitOptimizer(NoGPUs())


@pytest.mark.parametrize("eta", [-0.1, 1.5, float("nan"), "0.5"])
def test_zeus_cost_eta_outside_unit_interval(eta: object) -> None:
    with pytest.raises(InputError, match=r"ZeusCost\.eta: must be a number in \[0, 1\]"):
        ZeusCost(eta)  # type: ignore[arg-type]


@pytest.mark.parametrize("factor", [0.99, 0, -1, float("inf")])
def test_slowdown_factor_below_one(factor: float) -> None:
    with pytest.raises(InputError, match=r"MaxSlowdownConstraint\.factor: must be a number >= 1"):
        MaxSlowdownConstraint(factor)


def test_max_slowdown_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERSEUS_MAX_SLOWDOWN", raising=False)
    assert max_slowdown_from_env(1.3).factor == 1.3
    monkeypatch.setenv("PERSEUS_MAX_SLOWDOWN", "1.05")
    assert max_slowdown_from_env().factor == 1.05
    for bad in ("fast", "0.5"):
        monkeypatch.setenv("PERSEUS_MAX_SLOWDOWN", bad)
        with pytest.raises(InputError, match=f"PERSEUS_MAX_SLOWDOWN: must be a number >= 1, got '{bad}'"):
            max_slowdown_from_env()


def test_candidates() -> None:
    assert power_limit_candidates(100, 300, 25) == [300, 275, 250, 225, 200, 175, 150, 125, 100]
    assert power_limit_candidates(100, 250, 40) == [250, 210, 170, 130]  # never below the minimum
    assert power_limit_candidates(150, 150, 25) == [150]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epochs": 0}, r"EnergyAwareDataLoader\.max_epochs: must be an integer >= 1, got 0"),
        ({"max_epochs": 3, "eta": 1.5}, r"EnergyAwareDataLoader\.eta: must be a number in \[0, 1\], got 1.5"),
        ({"max_epochs": 3, "cost_threshold": 10.0}, r"cost_threshold: needs target_metric"),
        ({"max_epochs": 3, "target_metric": 1, "cost_threshold": -1}, r"cost_threshold: must be a positive"),
        ({"max_epochs": 3, "target_metric": float("inf")}, r"target_metric: must be a finite number"),
        ({"max_epochs": 3, "profile_steps": 0}, r"GlobalPowerLimitOptimizer\.profile_steps"),
    ],
)
def test_dataloader_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        EnergyAwareDataLoader([1, 2], monitor=monitor(), **kwargs)


def test_corrupt_saved_profile_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pl.json"
    cases = {
        "{not json": "not valid JSON",
        '{"version": 1, "num_gpus": 1, "measurements": []}': "'measurements' must be a non-empty list",
        '{"version": 1, "num_gpus": 1, "measurements": [{"power_limit": 300, "time": -1, "energy": 5}]}': r"measurements\[0\]\.time must be a positive number, got -1",
        '{"version": 7}': "unsupported version 7",
    }
    for text, match in cases.items():
        path.write_text(text)
        with pytest.raises(InputError, match=f"{path}.*{match}"):
            GlobalPowerLimitOptimizer(monitor(), profile_path=path)


def test_gpus_without_a_common_power_limit_range() -> None:
    from pl_replay import LogGPU

    from perseus.errors import DeviceError

    mon = monitor()
    mon.gpus = [LogGPU(0, (100.0, 150.0)), LogGPU(1, (200.0, 300.0))]
    with pytest.raises(DeviceError, match="power-limit ranges do not overlap"):
        GlobalPowerLimitOptimizer(mon)
