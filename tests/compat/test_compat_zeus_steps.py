"""The Zeus-style optimizer measures exactly the steps Zeus's would, driven by on_step_begin alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from perseus.compat.zeus import GlobalPowerLimitOptimizer, Time, ZeusMonitor
from perseus.device import restore_all


@pytest.fixture
def monitor(monkeypatch: pytest.MonkeyPatch) -> Iterator[ZeusMonitor]:
    monkeypatch.setenv("PERSEUS_DEVICE", "sim")
    monkeypatch.setenv("PERSEUS_SIM_TIME_SCALE", "0.01")
    yield ZeusMonitor(gpu_indices=[0])
    restore_all()


def record(
    monitor: ZeusMonitor, plo: GlobalPowerLimitOptimizer, steps: int, epoch_ends: set[int]
) -> list[str]:
    """Run ``steps`` steps; log each window opened or closed and each limit change at the step it happens."""
    inner = monitor.energy_monitor
    events: list[str] = []
    step = 0
    begin, end = inner.begin_window, inner.end_window

    def logged_begin(name: str, sync: bool = True) -> None:
        events.append(f"{step}:begin")
        begin(name, sync)

    def logged_end(name: str, sync: bool = True, *, cancel: bool = False):  # type: ignore[no-untyped-def]
        events.append(f"{step}:end")
        return end(name, sync, cancel=cancel)

    inner.begin_window, inner.end_window = logged_begin, logged_end  # type: ignore[method-assign]
    last = plo.current_power_limit

    def hook(call: Callable[[], None]) -> None:
        nonlocal last
        call()
        if plo.current_power_limit != last:
            last = plo.current_power_limit
            events.append(f"{step}:{last:g}W")

    for step in range(1, steps + 1):
        hook(plo.on_step_begin)
        hook(plo.on_step_end)
        if step in epoch_ends:
            hook(plo.on_epoch_end)
            events.append(f"{step}:epoch")
    return events


def test_wait_warmup_and_profile_steps_match_zeus(monitor: ZeusMonitor) -> None:
    plo = GlobalPowerLimitOptimizer(
        monitor, optimum_selector=Time(), wait_steps=2, warmup_steps=3, profile_steps=4, pl_step=150
    )
    events = record(monitor, plo, steps=26, epoch_ends=set())
    # Steps 1-2 wait; each limit warms up for 3 steps, then its window opens as the next step
    # begins and closes as the step after its 4th measured step begins.
    assert events[:9] == [
        "3:400W", "6:begin", "10:end", "10:250W", "13:begin", "17:end", "17:100W", "20:begin", "24:end",
    ]  # fmt: skip
    optimum = plo.optimal_power_limit
    assert optimum in (400, 250, 100)
    assert events[9:] == ([] if optimum == 100 else [f"24:{optimum:g}W"])


def test_epoch_end_mid_window_redoes_that_limit(monitor: ZeusMonitor) -> None:
    plo = GlobalPowerLimitOptimizer(monitor, wait_steps=0, warmup_steps=1, profile_steps=3, pl_step=150)
    events = record(monitor, plo, steps=8, epoch_ends={3})
    # The 400 W window (steps 2-4) is cut after step 3: dropped, warmed up again from step 4.
    assert events == ["1:400W", "2:begin", "3:end", "3:epoch", "5:begin", "8:end", "8:250W"]
    assert [m.power_limit for m in plo.measurements] == [400]


def test_epoch_end_right_after_a_full_window_keeps_it(monitor: ZeusMonitor) -> None:
    plo = GlobalPowerLimitOptimizer(monitor, wait_steps=0, warmup_steps=1, profile_steps=3, pl_step=150)
    events = record(monitor, plo, steps=8, epoch_ends={4})
    # Steps 2-4 all ran at 400 W: the window is kept; 250 W starts after the epoch boundary.
    assert events == ["1:400W", "2:begin", "4:end", "4:epoch", "5:250W", "6:begin"]
    assert [m.power_limit for m in plo.measurements] == [400]
