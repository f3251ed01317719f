"""The server-driven sweep's windows (``profiler.measure_at``) on a fake NVML GPU whose clock ramps
after a lock and drops when the GPU idles: the clock is confirmed before measuring, instructions
that did not hold it are left out, and a window in which a kind never held it is not complete.

One process, a one-rank gloo group (the warm-up decides with a real all-reduce), a real
FrequencyController locking the fake GPU from its thread.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch.distributed as dist
from workers_helpers import ROOT

from merak_integration.devicehooks import LocalPerseus
from merak_integration.hooks import HookChain
from merak_integration.profiler import measure_at
from perseus.device import FrequencyController, nvml_gpus

sys.path.insert(0, str(ROOT / "tests" / "device"))
import fake_nvml

NAMES = ("forward:0", "forward:1", "backward:0", "backward:1")


class _Trainer:
    """What ``measure_at`` needs of a trainer: iterations of four 10 ms instructions through the hooks."""

    def __init__(self, during: Callable[[int], None] = lambda n: None) -> None:
        self.during, self.count = during, 0

    def iteration(self, hooks: HookChain) -> None:
        hooks.on_step_begin()
        for name in NAMES:
            self.during(self.count)
            self.count += 1
            hooks.on_instruction_begin(name)
            time.sleep(0.01)
            hooks.on_instruction_end(name)
        hooks.on_step_end()


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_nvml.FakeDevice]:
    monkeypatch.setenv("PERSEUS_STATE_DIR", str(tmp_path / "state"))
    fake_nvml.configure()
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        yield fake_nvml.STATE.devices[0]
    finally:
        dist.destroy_process_group()
        fake_nvml.configure()


def _measure(device: fake_nvml.FakeDevice, trainer: _Trainer, warmup: int = 0, measure: int = 3) -> tuple:
    (gpu,) = nvml_gpus(fake_nvml, can_admin=True, environ={})
    with FrequencyController(gpu) as controller:
        local = LocalPerseus(gpu, controller, fixed_frequency=1005)
        window = measure_at(trainer, HookChain([local]), local, 1005, warmup, measure)
    return window, local


def test_the_clock_is_confirmed_before_the_window_even_without_warm_up_steps(device: fake_nvml.FakeDevice) -> None:
    device.clock_ramp = 0.15  # several 40 ms iterations still run at the old clock after the lock
    window, local = _measure(device, _Trainer())
    warm = local.iterations[:-3]
    assert len(warm) > 1  # one warm-up step was asked for; the ramp needed more
    assert not all(m.at_planned_clock for m in warm[0].instructions)  # 1410 MHz read back at first
    assert all(m.at_planned_clock for m in warm[-1].instructions)
    assert window is not None and window.complete
    assert (window.held, window.total, window.seen) == (12, 12, ())
    assert set(window.means) == {"forward", "backward"}


def test_instructions_that_lose_the_clock_are_left_out_and_a_kind_that_never_holds_it_is_incomplete(
    device: fake_nvml.FakeDevice,
) -> None:
    # The GPU idles (reads its 210 MHz idle clock) during every "backward:1": the warm-up never
    # confirms the clock, and the window keeps the instructions that held it.
    def idle_in_backward_1(n: int) -> None:
        device.busy = NAMES[n % 4] != "backward:1"

    # Backward is measured from three 10 ms instructions here: with the default 20 ms counter step their
    # deltas are all 0 or not depending on the phase (a flat counter is rejected, a flaky outcome).
    # This test is about held clocks, so the counter steps every 1 ms here.
    device.counter_period = 0.001

    window, _ = _measure(device, _Trainer(idle_in_backward_1), warmup=1)
    assert window is not None and window.complete
    assert (window.held, window.total, window.seen) == (9, 12, (device.idle_clock,))
    assert set(window.means) == {"forward", "backward"}  # backward from backward:0 alone

    device.busy = False  # never at the clock: nothing to measure, and no clock to label it with
    window, _ = _measure(device, _Trainer())
    assert window is not None and not window.complete
    assert window.held == 0 and window.means == {} and window.seen == (device.idle_clock,)
