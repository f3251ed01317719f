"""The fake NVML must stay faithful to nvidia-ml-py, or the NVML tests prove nothing."""

from __future__ import annotations

import inspect

import fake_nvml
import pynvml
import pytest

FAKED = sorted(name for name in dir(fake_nvml) if name.startswith("nvml"))


def test_fakes_a_useful_set_of_functions() -> None:
    for needed in (
        "nvmlInit",
        "nvmlDeviceSetGpuLockedClocks",
        "nvmlDeviceResetGpuLockedClocks",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceSetPowerManagementLimit",
    ):
        assert needed in FAKED


@pytest.mark.parametrize("name", FAKED)
def test_function_exists_in_pynvml_with_the_same_parameters(name: str) -> None:
    real = getattr(pynvml, name, None)
    assert real is not None, f"pynvml has no {name}"
    assert list(inspect.signature(getattr(fake_nvml, name)).parameters) == list(
        inspect.signature(real).parameters
    )


def test_errors_are_pynvml_classes() -> None:
    fake_nvml.configure(library_found=False)
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        fake_nvml.nvmlInit()
    fake_nvml.configure([fake_nvml.FakeDevice(permission=False, energy_counter=False)])
    fake_nvml.nvmlInit()
    handle = fake_nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        fake_nvml.nvmlDeviceSetGpuLockedClocks(handle, 1005, 1005)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake_nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    fake_nvml.configure()


def test_a_clock_ceiling_keeps_the_clock_below_a_lock_that_succeeds() -> None:
    """A power cap or thermal limit (HARDWARE.md): the lock call succeeds, the clock never gets there."""
    (device,) = fake_nvml.configure([fake_nvml.FakeDevice(clock_ceiling=1300, clock_ramp=0.0)])
    try:
        fake_nvml.nvmlInit()
        handle = fake_nvml.nvmlDeviceGetHandleByIndex(0)
        assert 1410 in fake_nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, 1215)
        assert fake_nvml.nvmlDeviceGetClockInfo(handle, fake_nvml.NVML_CLOCK_GRAPHICS) == 1290  # no boost past it
        fake_nvml.nvmlDeviceSetGpuLockedClocks(handle, 1410, 1410)
        assert fake_nvml.nvmlDeviceGetClockInfo(handle, fake_nvml.NVML_CLOCK_GRAPHICS) == 1290
        fake_nvml.nvmlDeviceSetGpuLockedClocks(handle, 1005, 1005)
        assert fake_nvml.nvmlDeviceGetClockInfo(handle, fake_nvml.NVML_CLOCK_GRAPHICS) == 1005  # below it: held
        device.busy = False
        assert fake_nvml.nvmlDeviceGetClockInfo(handle, fake_nvml.NVML_CLOCK_GRAPHICS) == device.idle_clock
    finally:
        fake_nvml.configure()
