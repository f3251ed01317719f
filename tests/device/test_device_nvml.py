"""NVMLGPU and discovery against the fake NVML (real pynvml error classes and signatures)."""

from __future__ import annotations

import time

import pytest

from perseus.device import NoNvidiaGPU, SimulatedGPU, get_gpus, nvml_gpus, safety
from perseus.errors import DeviceError, PerseusError


def journal(fake) -> list[str]:
    path = fake.STATE.journal
    return path.read_text().splitlines() if path.exists() else []


def test_discovers_gpu_with_units_converted(fake) -> None:
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    assert gpu.index == 0 and gpu.name == "NVIDIA A100-SXM4-40GB"
    freqs = gpu.supported_frequencies()
    assert freqs[0] == 1410 and freqs[-1] == 210 and freqs == sorted(freqs, reverse=True)
    assert gpu.power_limit_range() == (100.0, 400.0)
    assert gpu.power() == 200.0
    assert gpu.supports_energy_counter and gpu.can_control
    step = fake.STATE.devices[0].counter_period
    t0, e0 = time.monotonic(), gpu.energy()
    time.sleep(0.05)
    e1, t1 = gpu.energy(), time.monotonic()
    # The counter moves in steps: the reading may lag real time by up to one step at either end.
    assert 200.0 * (t1 - t0 - step) <= e1 - e0 <= 200.0 * (t1 - t0 + step)


def test_lock_unlock_and_power_limit_reach_nvml(fake) -> None:
    (device,) = fake.STATE.devices
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    gpu.lock_frequency(1000)  # nearest supported: 1005
    assert device.locked == (1005, 1005)
    assert gpu.current_frequency() == 1410  # still ramping: the lock call has returned, the clock lags
    assert gpu.wait_for_frequency(1005) == 1005
    gpu.set_power_limit(250.5)
    assert device.limit_mw == 250_500
    gpu.unlock_frequency()
    gpu.reset_power_limit()
    assert device.locked is None and device.limit_mw == 400_000
    assert journal(fake) == [
        "SetGpuLockedClocks 0 1005 1005",
        "SetPowerManagementLimit 0 250500",
        "ResetGpuLockedClocks 0",
        "SetPowerManagementLimit 0 400000",
    ]
    assert safety.pending() == []


def test_restore_puts_back_the_power_limit_found_before(fake) -> None:
    (device,) = fake.STATE.devices
    device.limit_mw = 300_000  # set by an administrator before Perseus ran
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    gpu.set_power_limit(150)
    gpu.set_power_limit(120)
    gpu.lock_frequency(900)
    assert len(safety.restore_all()) == 2
    assert device.limit_mw == 300_000 and device.locked is None


def test_cuda_visible_devices_maps_indices_and_uuids(fake) -> None:
    devices = fake.configure(
        [fake.FakeDevice(name=f"GPU{i}", uuid=f"GPU-{i}{i}{i}") for i in range(4)],
        journal=fake.STATE.journal,
    )
    gpus = nvml_gpus(fake, can_admin=True, environ={"CUDA_VISIBLE_DEVICES": "2,GPU-333,0"})
    assert [(g.index, g.name, g.nvml_index) for g in gpus] == [(0, "GPU2", 2), (1, "GPU3", 3), (2, "GPU0", 0)]
    gpus[1].lock_frequency(1200)
    assert devices[3].locked is not None and devices[1].locked is None
    # CUDA stops at the first entry naming no device.
    assert len(nvml_gpus(fake, can_admin=True, environ={"CUDA_VISIBLE_DEVICES": "1,7,0"})) == 1
    with pytest.raises(NoNvidiaGPU, match="CUDA_VISIBLE_DEVICES"):
        nvml_gpus(fake, environ={"CUDA_VISIBLE_DEVICES": "-1"})
    (only,) = nvml_gpus(fake, can_admin=True, indices=[1], environ={"CUDA_VISIBLE_DEVICES": "3,1"})
    assert only.name == "GPU1" and only.index == 1
    with pytest.raises(DeviceError, match="GPU index 2 is not visible"):
        nvml_gpus(fake, indices=[2], environ={"CUDA_VISIBLE_DEVICES": "3,1"})


def test_no_permission_gives_measure_only_with_advice(fake, capsys) -> None:
    (gpu,) = nvml_gpus(fake, can_admin=False, environ={})
    assert not gpu.can_control
    assert "CAP_SYS_ADMIN" in (gpu.control_problem or "")
    with pytest.raises(DeviceError, match="PERSEUS_DEVICE_MODE=measure"):
        gpu.lock_frequency(1200)
    gpu.unlock_frequency()  # no-op, no NVML call
    assert gpu.energy() >= 0
    assert journal(fake) == []
    with pytest.raises(DeviceError, match="root or CAP_SYS_ADMIN"):
        nvml_gpus(fake, can_admin=False, mode="control", environ={})
    (measured,) = nvml_gpus(fake, can_admin=True, mode="measure", environ={})
    assert not measured.can_control


def test_nvml_no_permission_at_runtime_switches_to_measure_only(fake) -> None:
    fake.STATE.devices[0].permission = False  # capability looked fine, NVML disagrees
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    with pytest.raises(DeviceError) as info:
        gpu.lock_frequency(1200)
    message = str(info.value)
    assert "\n" not in message and "insufficient permissions" in message and "CAP_SYS_ADMIN" in message
    assert not gpu.can_control
    assert safety.pending() == []  # a failed change leaves nothing to restore


def test_energy_falls_back_to_power_polling(fake) -> None:
    device = fake.STATE.devices[0]
    device.energy_counter = False
    device.power_mw = 300_000
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    assert not gpu.supports_energy_counter
    e0 = gpu.energy()
    time.sleep(0.2)
    assert gpu.energy() - e0 == pytest.approx(300.0 * 0.2, rel=0.25)
    gpu.close()


def test_mig(fake) -> None:
    parent = fake.FakeDevice(uuid="GPU-p", mig_mode=fake.NVML_DEVICE_MIG_ENABLE)
    instance = fake.FakeDevice(name="MIG 1g.5gb", uuid="MIG-1", mig_instance=True, parent=parent)
    fake.configure([parent, instance])
    (whole,) = nvml_gpus(fake, can_admin=True, environ={})
    assert not whole.can_control and "nvidia-smi -i 0 -mig 0" in (whole.control_problem or "")
    (mig,) = nvml_gpus(fake, can_admin=True, environ={"CUDA_VISIBLE_DEVICES": "MIG-1"})
    assert not mig.can_control and "MIG instance" in mig.name
    assert mig.power() == 200.0  # read from the parent GPU
    assert mig.supported_frequencies()[0] == 1410


def test_no_library_falls_back_to_sim_and_says_so(fake, capsys) -> None:
    fake.configure(library_found=False)
    with pytest.raises(NoNvidiaGPU, match=r"libnvidia-ml\.so\.1 not found"):
        nvml_gpus(fake)
    gpus = get_gpus(nvml=fake, stage=2)
    assert len(gpus) == 1 and isinstance(gpus[0], SimulatedGPU) and gpus[0].stage == 2
    err = capsys.readouterr().err
    assert "no NVIDIA GPU found" in err and "Simulated NVIDIA A100" in err
    with pytest.raises(DeviceError, match="PERSEUS_DEVICE=sim"):
        get_gpus("nvml", nvml=fake)


def test_env_overrides_backend_and_profile(fake, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PERSEUS_DEVICE", "sim")
    monkeypatch.setenv("PERSEUS_SIM_TIME_SCALE", "0.5")
    (gpu,) = get_gpus(nvml=fake)  # fake NVML has a GPU, but the env asks for sim
    assert isinstance(gpu, SimulatedGPU) and gpu.time_scale == 0.5
    monkeypatch.setenv("PERSEUS_DEVICE", "nvml")
    (real,) = get_gpus(nvml=fake, mode="measure")
    assert not isinstance(real, SimulatedGPU)
    monkeypatch.setenv("PERSEUS_DEVICE", "cuda")
    with pytest.raises(DeviceError, match="PERSEUS_DEVICE"):
        get_gpus()
    monkeypatch.setenv("PERSEUS_DEVICE", "sim")
    monkeypatch.setenv("PERSEUS_SIM_PROFILE", str(tmp_path / "missing.csv"))
    with pytest.raises(PerseusError, match=r"missing\.csv: no such file"):
        get_gpus()


def test_real_pynvml_on_this_machine_says_the_driver_library_is_missing() -> None:
    """This machine has nvidia-ml-py but no NVIDIA driver (HARDWARE.md): a one-line NoNvidiaGPU naming it."""
    with pytest.raises(NoNvidiaGPU) as info:
        nvml_gpus()
    assert str(info.value) == "NVML library libnvidia-ml.so.1 not found; no NVIDIA driver installed"


def test_abbreviated_uuids_and_cuda_order_resolve_by_uuid(fake) -> None:
    fake.configure(
        [fake.FakeDevice(name=f"GPU{i}", uuid=f"GPU-{i}{i}aa-{i}") for i in range(3)], journal=fake.STATE.journal
    )
    # CUDA accepts an unambiguous UUID prefix; an ambiguous one names no device (the list ends there).
    gpus = nvml_gpus(fake, can_admin=True, environ={"CUDA_VISIBLE_DEVICES": "GPU-22,GPU-0"})
    assert [(g.name, g.uuid) for g in gpus] == [("GPU2", "GPU-22aa-2"), ("GPU0", "GPU-00aa-0")]
    assert nvml_gpus(fake, can_admin=True, environ={"CUDA_VISIBLE_DEVICES": "GPU-1,GPU-"})[0].name == "GPU1"
    with pytest.raises(NoNvidiaGPU):
        nvml_gpus(fake, environ={"CUDA_VISIBLE_DEVICES": "GPU-"})
    # Fastest-first CUDA order: CUDA's device 0 is NVML's device 2; the UUID torch reports decides.
    (gpu,) = nvml_gpus(fake, can_admin=True, indices=[0], environ={}, cuda_uuids={0: "22aa-2"})
    assert (gpu.index, gpu.name, gpu.nvml_index) == (0, "GPU2", 2)
    with pytest.raises(NoNvidiaGPU, match=r"CUDA device 0 \(UUID ffff\) is not among the GPUs NVML sees"):
        nvml_gpus(fake, indices=[0], environ={}, cuda_uuids={0: "ffff"})
