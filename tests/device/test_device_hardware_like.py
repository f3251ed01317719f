"""The fake NVML behaves like HARDWARE.md says real GPUs do, and Perseus copes: stepped counters,
clock ramps, idle clocks, separately unsupported controls, fresh handles, per-GPU state files."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from perseus.device import FrequencyController, get_gpus, nvml_gpus, safety, statefile
from perseus.device.nvml import reset_recorded
from perseus.errors import DeviceError

HERE = Path(__file__).parent


def test_energy_counter_steps(fake) -> None:
    fake.STATE.devices[0].counter_period = 0.05
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    readings = set()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        readings.add(fake.nvmlDeviceGetTotalEnergyConsumption(handle))
    step = 0.05 * 200_000  # mJ per counter update at 200 W
    assert all(r % step == pytest.approx(0, abs=1) or r % step == pytest.approx(step, abs=1) for r in readings)
    assert 2 <= len(readings) <= 6  # thousands of reads, a handful of distinct values


def test_clock_ramps_after_the_lock_returns_and_idle_gpus_read_their_idle_clock(fake) -> None:
    device = fake.STATE.devices[0]
    device.clock_ramp = 0.05
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    gpu.lock_frequency(1005)
    assert gpu.current_frequency() == 1410
    assert gpu.wait_for_frequency(1005, timeout=5) == 1005
    device.busy = False
    assert gpu.current_frequency() == device.idle_clock
    assert gpu.wait_for_frequency(1005, timeout=0.01) == device.idle_clock  # gives up, says what it saw


def test_clock_and_power_limit_support_are_separate(fake) -> None:
    device = fake.STATE.devices[0]
    device.clock_supported = False
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    with pytest.raises(DeviceError, match="cannot lock the graphics clock: not supported"):
        gpu.lock_frequency(1005)
    gpu.set_power_limit(250)
    assert device.limit_mw == 250_000
    gpu.reset_power_limit()
    device.clock_supported, device.power_limit_supported = True, False
    with pytest.raises(DeviceError, match="cannot set the power limit: not supported"):
        gpu.set_power_limit(250)
    gpu.lock_frequency(1005)
    assert device.locked == (1005, 1005)


def test_handles_are_new_objects_per_lookup(fake) -> None:
    fake.nvmlInit()
    a, b = fake.nvmlDeviceGetHandleByIndex(0), fake.nvmlDeviceGetHandleByIndex(0)
    assert a is not b
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    gpu.lock_frequency(1005)
    assert safety.restore_all() and fake.STATE.devices[0].locked is None


def test_controller_unlocks_at_close_after_an_error(fake, capsys) -> None:
    device = fake.STATE.devices[0]
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    ctl = FrequencyController(gpu)
    ctl.set_frequency(1005)
    ctl.flush()
    device.lock_error = fake.NVML_ERROR_UNKNOWN  # e.g. a driver hiccup on the next change
    ctl.set_frequency(900)
    ctl.flush()
    assert ctl.error is not None and device.locked == (1005, 1005)
    ctl.set_frequency(855)  # refused, counted
    ctl.flush()
    assert ctl.stats.refused == 1
    ctl.close()
    assert device.locked is None  # before the fix the error made close() skip the unlock
    assert fake.STATE.journal.read_text().splitlines()[-1] == "ResetGpuLockedClocks 0"
    assert "continuing without clock control" in capsys.readouterr().err


def test_measure_only_refusal_is_said_once(fake, capsys) -> None:
    (gpu,) = nvml_gpus(fake, can_admin=True, mode="measure", environ={})
    with FrequencyController(gpu) as ctl:
        for f in (1200, 1100):
            ctl.set_frequency(f)
            ctl.flush()
        assert ctl.stats.refused == 2 and ctl.applied_frequency is None and not ctl.can_apply
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clock requests are not applied: measure-only mode" in err[0]
    assert not fake.STATE.journal.exists()


def test_cuda_processes_never_get_a_simulated_gpu(fake) -> None:
    fake.configure(library_found=False)
    with pytest.raises(DeviceError, match=r"training runs on CUDA but NVML is unusable: NVML library") as info:
        get_gpus(nvml=fake, cuda=True)
    assert "--device sim" in str(info.value) and "\n" not in str(info.value)
    (sim,) = get_gpus("sim", nvml=fake, cuda=True)  # on request
    assert "Simulated" in sim.name


def test_state_file_records_changes_before_they_apply_and_clears_them(fake, _state_dir) -> None:
    device = fake.STATE.devices[0]
    device.limit_mw = 300_000
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    seen: list[statefile.Changes | None] = []
    original = fake.nvmlDeviceSetGpuLockedClocks

    def spying_lock(handle, minGpuClockMHz, maxGpuClockMHz):
        seen.append(statefile.read(device.uuid))
        original(handle, minGpuClockMHz, maxGpuClockMHz)

    fake.nvmlDeviceSetGpuLockedClocks = spying_lock
    try:
        gpu.lock_frequency(1005)
    finally:
        fake.nvmlDeviceSetGpuLockedClocks = original
    assert seen[0] is not None and seen[0].clock and seen[0].pid == os.getpid()
    gpu.set_power_limit(200)
    gpu.set_power_limit(150)
    changes = statefile.read(device.uuid)
    assert changes is not None and changes.clock and changes.power and changes.power_limit_mw == 300_000
    gpu.unlock_frequency()
    changes = statefile.read(device.uuid)
    assert changes is not None and not changes.clock and changes.power
    gpu.reset_power_limit()
    assert statefile.read(device.uuid) is None and list(_state_dir.glob("*.json")) == []


KILLED = """
import os, signal, sys
sys.path.insert(0, {here!r})
import fake_nvml
from perseus.device import nvml_gpus
fake_nvml.configure(journal={journal!r})
fake_nvml.share_state({shared!r}, [fake_nvml.FakeDevice(uuid="GPU-aa"), fake_nvml.FakeDevice(uuid="GPU-bb")])
gpus = nvml_gpus(fake_nvml, can_admin=True, environ={{}})
gpus[1].lock_frequency(1005)
gpus[1].set_power_limit(250)
os.kill(os.getpid(), signal.{sig})
"""


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGABRT"])
def test_reset_undoes_exactly_what_a_killed_process_recorded(fake, tmp_path, sig, capsys) -> None:
    shared, journal = tmp_path / "gpus.json", tmp_path / "journal.txt"
    script = KILLED.format(here=str(HERE), journal=str(journal), shared=str(shared), sig=sig)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode < 0, proc.stderr
    left = fake.shared_devices(shared)
    assert left[1].locked == (1005, 1005) and left[1].limit_mw == 250_000  # nothing ran in-process
    fake.STATE.shared = shared
    lines = reset_recorded(fake)
    assert lines == [f"restored GPU-bb: locked clock, power limit (process {proc_pid(lines)})"]
    after = fake.shared_devices(shared)
    assert after[1].locked is None and after[1].limit_mw == after[1].default_limit_mw
    assert after[0].locked is None
    assert journal.read_text().splitlines()[-2:] == ["ResetGpuLockedClocks 1", "SetPowerManagementLimit 1 400000"]
    assert reset_recorded(fake) == []  # nothing left to do


def proc_pid(lines: list[str]) -> int:
    return int(lines[0].rsplit("process ", 1)[1].rstrip(")"))


def test_reset_leaves_running_owners_alone(fake, tmp_path) -> None:
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    gpu.lock_frequency(1005)
    assert reset_recorded(fake) == []  # this (live) process owns the record
    assert fake.STATE.devices[0].locked == (1005, 1005)


def test_wait_for_frequency_has_a_deadline(fake) -> None:
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    fake.STATE.devices[0].busy = False
    assert gpu.wait_for_frequency(1005, timeout=1.0, clock=lambda: now[0], sleep=sleep) == 210
    assert now[0] >= 1.0


def test_lock_gate_holds_a_lock_in_flight(fake) -> None:
    gate = threading.Event()
    fake.STATE.devices[0].lock_gate = gate
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    ctl = FrequencyController(gpu)
    ctl.set_frequency(1005)  # returns although the GPU has not applied it
    assert ctl.stats.applied == 0 and fake.STATE.devices[0].locked is None
    gate.set()
    ctl.flush()
    assert ctl.stats.applied == 1
    ctl.close()
