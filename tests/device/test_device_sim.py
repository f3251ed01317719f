"""SimulatedGPU: instruction time and energy follow the profile at the applied clock."""

from __future__ import annotations

import time

import pytest

from perseus.device import SimulatedGPU, safety
from perseus.errors import DeviceError


def run(gpu: SimulatedGPU, clock, kind: str = "forward", work: float = 0.0, stage: int = 0) -> float:
    start = clock()
    gpu.on_instruction_begin(stage, kind)
    clock.advance(work)
    gpu.on_instruction_end()
    return clock() - start


def test_instruction_takes_profiled_time_and_energy_at_max_clock(a100, clock) -> None:
    gpu = SimulatedGPU(a100, clock=clock, sleep=clock.sleep)
    m = a100[(0, "forward")].at(1410)
    e0 = gpu.energy()
    elapsed = run(gpu, clock, work=0.01)
    assert elapsed == pytest.approx(m.time)
    assert gpu.energy() - e0 == pytest.approx(m.energy)
    assert gpu.busy_time == pytest.approx(m.time)


def test_lower_clock_is_slower_and_uses_profiled_energy(a100, clock) -> None:
    gpu = SimulatedGPU(a100, stage=3, clock=clock, sleep=clock.sleep)
    gpu.lock_frequency(1005)
    m = a100[(3, "backward")].at(1005)
    e0 = gpu.energy()
    assert run(gpu, clock, "backward", stage=3) == pytest.approx(m.time)
    assert gpu.energy() - e0 == pytest.approx(m.energy)
    assert m.time > a100[(3, "backward")].at(1410).time


def test_unprofiled_frequency_maps_to_nearest(a100, clock) -> None:
    gpu = SimulatedGPU(a100, clock=clock, sleep=clock.sleep)
    gpu.lock_frequency(1000)  # profiled: ..., 990, 1005, ...
    assert gpu.current_frequency() == 1005
    gpu.lock_frequency(100)
    assert gpu.current_frequency() == 855
    gpu.unlock_frequency()
    assert gpu.current_frequency() == 1410


def test_idle_time_draws_blocking_power(a100, clock) -> None:
    gpu = SimulatedGPU(a100, clock=clock, sleep=clock.sleep)
    e0 = gpu.energy()
    clock.advance(2.0)
    assert gpu.energy() - e0 == pytest.approx(2.0 * a100.blocking_power)
    assert gpu.power() == pytest.approx(a100.blocking_power)


def test_slow_real_work_counts_its_real_time_and_scaled_energy(a100, clock) -> None:
    gpu = SimulatedGPU(a100, clock=clock, sleep=clock.sleep)
    m = a100[(0, "forward")].at(1410)
    e0 = gpu.energy()
    assert run(gpu, clock, work=3 * m.time) == pytest.approx(3 * m.time)
    assert clock.sleeps == []
    assert gpu.energy() - e0 == pytest.approx(3 * m.energy)


def test_clock_change_mid_instruction_splits_it(a100, clock) -> None:
    gpu = SimulatedGPU(a100, clock=clock, sleep=clock.sleep)
    fast, slow = a100[(0, "forward")].at(1410), a100[(0, "forward")].at(855)
    e0 = gpu.energy()
    start = clock()
    gpu.on_instruction_begin(0, "forward")
    clock.advance(fast.time / 2)  # half done at 1410
    gpu.lock_frequency(855)
    assert gpu.power() == pytest.approx(slow.energy / slow.time)
    gpu.on_instruction_end()  # other half at 855
    assert clock() - start == pytest.approx(fast.time / 2 + slow.time / 2)
    assert gpu.energy() - e0 == pytest.approx(fast.energy / 2 + slow.energy / 2)


def test_power_limit_lowers_clock_to_fit(a100, clock) -> None:
    gpu = SimulatedGPU(a100, clock=clock, sleep=clock.sleep)
    prof = a100[(0, "backward")]
    powers = {f: prof.at(f).energy / prof.at(f).time for f in prof.frequencies}
    limit = (max(powers.values()) + min(powers.values())) / 2
    expected = max(f for f, p in powers.items() if p <= limit)
    assert expected < 1410
    gpu.set_power_limit(limit)
    assert run(gpu, clock, "backward") == pytest.approx(prof.at(expected).time)
    gpu.reset_power_limit()
    assert run(gpu, clock, "backward") == pytest.approx(prof.at(1410).time)
    with pytest.raises(DeviceError, match="outside the supported range 100-400 W"):
        gpu.set_power_limit(50)


def test_time_scale_shrinks_time_and_energy(a100, clock) -> None:
    gpu = SimulatedGPU(a100, clock=clock, sleep=clock.sleep, time_scale=0.1)
    m = a100[(0, "forward")].at(1410)
    e0 = gpu.energy()
    assert run(gpu, clock) == pytest.approx(0.1 * m.time)
    assert gpu.energy() - e0 == pytest.approx(0.1 * m.energy)


def test_misuse_is_a_clear_error(a100, clock) -> None:
    with pytest.raises(DeviceError, match="stage 9"):
        SimulatedGPU(a100, stage=9)
    gpu = SimulatedGPU(a100, clock=clock, sleep=clock.sleep)
    with pytest.raises(DeviceError, match="without on_instruction_begin"):
        gpu.on_instruction_end()
    with pytest.raises(DeviceError, match="no profile for stage 8"):
        gpu.on_instruction_begin(8, "forward")
    gpu.on_instruction_begin(0, "forward")
    with pytest.raises(DeviceError, match="still running"):
        gpu.on_instruction_begin(0, "backward")


def test_real_clock_waits_out_the_modelled_time(a100) -> None:
    gpu = SimulatedGPU(a100, time_scale=0.2)
    m = a100[(0, "backward")].at(855)
    gpu.lock_frequency(855)
    start = time.monotonic()
    gpu.on_instruction_begin(0, "backward")
    gpu.on_instruction_end()
    elapsed = time.monotonic() - start
    assert elapsed >= 0.2 * m.time  # a lower bound only: an upper one would flake on a loaded machine
    assert gpu.busy_time == pytest.approx(0.2 * m.time, rel=1e-6)  # the model counts exactly the modelled time


def test_lock_is_registered_for_restore(a100, clock) -> None:
    gpu = SimulatedGPU(a100, clock=clock, sleep=clock.sleep)
    gpu.lock_frequency(900)
    gpu.set_power_limit(200)
    assert len(safety.pending()) == 2
    restored = safety.restore_all()
    assert len(restored) == 2
    assert gpu.current_frequency() == 1410
    assert gpu._read_power_limit() is None
    assert safety.pending() == []


@pytest.mark.timeout(10)
def test_restore_from_a_signal_handler_inside_the_gpu_does_not_deadlock(a100, clock) -> None:
    gpu = SimulatedGPU(a100, clock=clock, sleep=clock.sleep)
    gpu.lock_frequency(900)
    with gpu._mutex:  # as if SIGTERM landed while the main thread was inside energy()
        safety.restore_all()
    assert gpu.current_frequency() == 1410
