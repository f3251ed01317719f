"""EnergyAwareDataLoader: transparent power-limit profiling, target metric, cost-threshold early stop.

The replay monitor answers every epoch window with 1 s and 1 J per GPU, so one epoch of
a 1-GPU job on the A40 log (max power 300 W) costs 0.5 * 1 + 0.5 * 300 * 1 = 150.5 at eta 0.5.
"""

from __future__ import annotations

import pytest
from pl_replay import ReplayLog, make_monitor
from test_power_limit_replay import expected_zeus

from perseus.dataloader import EnergyAwareDataLoader
from perseus.power_limit import Done, Energy

EPOCH_COST = 0.5 * 1.0 + 0.5 * 300 * 1.0


def make_loader(batches: int = 20, **kwargs: object) -> EnergyAwareDataLoader[int]:
    log = ReplayLog.read("A40_resnet18_gpu0.csv")
    options: dict = {"max_epochs": 20, "eta": 0.5, "warmup_steps": 1, "profile_steps": 2, "pl_step": 25}
    options.update(kwargs)
    return EnergyAwareDataLoader(list(range(batches)), monitor=make_monitor(log), **options)


def run(loader: EnergyAwareDataLoader[int], metric_of_epoch) -> list[int]:
    seen = []
    with loader:
        for epoch in loader.epochs():
            batches = list(loader)
            assert batches == list(range(len(loader)))
            seen.append(epoch)
            loader.report_metric(metric_of_epoch(epoch))
    return seen


def test_profiles_on_the_first_epochs_then_runs_at_the_zeus_cost_optimum() -> None:
    log = ReplayLog.read("A40_resnet50_gpu0.csv")
    monitor = make_monitor(log)
    # 9 limits x 3 steps = 27 steps: profiling spans two 20-step epochs (one limit cut and redone).
    loader = EnergyAwareDataLoader(
        list(range(20)), monitor=monitor, max_epochs=4, eta=0.5, warmup_steps=1, profile_steps=2, pl_step=25
    )
    assert run(loader, lambda e: 0.0) == [0, 1, 2, 3]
    assert isinstance(loader.optimizer.state, Done)
    assert loader.optimizer.optimal_power_limit == expected_zeus(log, 0.5) == 200
    assert 200.0 in monitor.gpus[0].applied and monitor.gpus[0].limit is None  # restored by close()
    assert loader.stop_reason == "max_epochs (4) reached"
    assert not loader.reached_target and not loader.stopped_early
    assert loader.total_cost == pytest.approx(4 * EPOCH_COST)


def test_stops_when_target_reached() -> None:
    loader = make_loader(target_metric=90, cost_threshold=1e9)
    assert run(loader, lambda e: 10 * (e + 1)) == list(range(9))
    assert loader.reached_target and not loader.stopped_early


def test_lower_is_better_metric() -> None:
    loader = make_loader(target_metric=2.0)
    seen = []
    for epoch in loader.epochs():
        list(loader)
        seen.append(epoch)
        loader.report_metric(10.0 - 2 * epoch, higher_is_better=False)
    loader.close()
    assert seen == [0, 1, 2, 3, 4] and loader.reached_target


def test_early_stop_when_extrapolated_cost_exceeds_threshold() -> None:
    # After epoch 1 the metric gains 10 per epoch, 70 to go: 7 more epochs, 9 in all,
    # 9 * 150.5 = 1354.5 > 1000. After epoch 0 no trend yet: 2 * 150.5 = 301 < 1000.
    loader = make_loader(target_metric=90, cost_threshold=1000)
    assert run(loader, lambda e: 10 * (e + 1)) == [0, 1]
    assert loader.stopped_early and not loader.reached_target
    assert loader.predicted_cost() == pytest.approx(9 * EPOCH_COST)
    # The same run with room for 9 epochs reaches the target.
    loader = make_loader(target_metric=90, cost_threshold=9 * EPOCH_COST + 1)
    assert run(loader, lambda e: 10 * (e + 1)) == list(range(9)) and loader.reached_target


def test_stagnating_metric_assumes_one_more_epoch() -> None:
    # No improvement: predicted = spent + one epoch; (k + 2) * 150.5 > 1000 first at k = 5.
    loader = make_loader(target_metric=90, cost_threshold=1000)
    assert run(loader, lambda e: 10.0) == [0, 1, 2, 3, 4, 5]
    assert loader.stopped_early


def test_iterating_outside_an_epoch_is_an_error() -> None:
    loader = make_loader()
    with pytest.raises(RuntimeError, match="epochs"):
        list(loader)


def test_explicit_selector_is_used() -> None:
    log = ReplayLog.read("A40_resnet50_gpu0.csv")
    monitor = make_monitor(log)
    loader = EnergyAwareDataLoader(
        list(range(30)), monitor=monitor, max_epochs=1, selector=Energy(), warmup_steps=1, profile_steps=2
    )
    run(loader, lambda e: 0.0)
    assert loader.optimizer.optimal_power_limit == 175 and monitor.gpus[0].applied[-2:] == [175.0, None]
