"""EnergyMonitor: nestable windows, per-GPU energy, sync, CSV log; same over sim and NVML."""

from __future__ import annotations

import csv
import time

import pytest

from perseus.device import EnergyMonitor, SimulatedGPU, nvml_gpus
from perseus.errors import DeviceError


class CountingSim(SimulatedGPU):
    syncs = 0

    def synchronize(self) -> None:
        self.syncs += 1


def test_nested_windows_measure_time_and_energy_per_gpu(a100, clock, tmp_path) -> None:
    gpus = [CountingSim(a100, stage=s, index=s, clock=clock, sleep=clock.sleep) for s in (0, 1)]
    log = tmp_path / "energy.csv"
    mon = EnergyMonitor(gpus, log_file=log, clock=clock)
    fwd0, fwd1 = a100[(0, "forward")].at(1410), a100[(1, "forward")].at(1410)
    mon.begin_window("iteration")
    gpus[0].on_instruction_begin(0, "forward")
    gpus[0].on_instruction_end()  # gpu1 idles meanwhile
    mon.begin_window("stage1")
    gpus[1].on_instruction_begin(1, "forward")
    gpus[1].on_instruction_end()
    inner = mon.end_window("stage1")
    outer = mon.end_window("iteration")
    pb = a100.blocking_power
    assert inner.time == pytest.approx(fwd1.time)
    assert inner.energy == pytest.approx({0: pb * fwd1.time, 1: fwd1.energy})
    assert outer.time == pytest.approx(fwd0.time + fwd1.time)
    assert outer.energy == pytest.approx({0: fwd0.energy + pb * fwd1.time, 1: pb * fwd0.time + fwd1.energy})
    assert outer.total_energy == pytest.approx(sum(outer.energy.values()))
    assert outer.average_power == pytest.approx(outer.total_energy / outer.time)
    assert gpus[0].syncs == 4 and gpus[1].syncs == 4
    mon.close()
    rows = list(csv.DictReader(log.open()))
    assert [r["window"] for r in rows] == ["stage1", "iteration"]
    assert float(rows[1]["gpu1_energy"]) == pytest.approx(outer.energy[1])
    assert float(rows[1]["time"]) == pytest.approx(outer.time)
    # Appending to an existing log keeps one header.
    with EnergyMonitor(gpus, log_file=log, clock=clock) as again:
        again.begin_window("x", sync=False)
        again.end_window("x", sync=False)
    assert log.read_text().count("window,") == 1
    assert gpus[0].syncs == 4  # sync=False did not synchronise


def test_window_misuse_is_a_clear_error(a100) -> None:
    mon = EnergyMonitor([SimulatedGPU(a100)])
    mon.begin_window("a")
    with pytest.raises(DeviceError, match="'a' is already open"):
        mon.begin_window("a")
    with pytest.raises(DeviceError, match=r"'b' was never begun \(open: a\)"):
        mon.end_window("b")
    assert mon.open_windows == ["a"]
    with pytest.raises(DeviceError, match="duplicate indices"):
        EnergyMonitor([SimulatedGPU(a100), SimulatedGPU(a100)])


def test_same_monitor_over_nvml(fake) -> None:
    fake.configure([fake.FakeDevice(power_mw=150_000), fake.FakeDevice(power_mw=250_000, energy_counter=False)])
    gpus = nvml_gpus(fake, can_admin=True, environ={})
    mon = EnergyMonitor(gpus)
    mon.begin_window("w")
    time.sleep(0.2)
    w = mon.end_window("w")
    step = fake.STATE.devices[0].counter_period  # the counter may lag by up to one step at either end
    assert 150 * (w.time - step) <= w.energy[0] <= 150 * (w.time + step)
    assert w.energy[1] == pytest.approx(250 * w.time, rel=0.25)
    for g in gpus:
        g.close()


def test_default_gpus_come_from_get_gpus(monkeypatch) -> None:
    monkeypatch.setenv("PERSEUS_DEVICE", "sim")
    mon = EnergyMonitor()
    assert len(mon.gpus) == 1 and isinstance(mon.gpus[0], SimulatedGPU)
