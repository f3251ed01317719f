"""A fake NVML module with nvidia-ml-py's function names, signatures, units and error classes.

Error classes and constants are the real ones from ``pynvml`` (importing pynvml does not
load the driver library), so code that catches ``pynvml.NVMLError_NoPermission`` behaves
the same. Every state-changing call is appended to a journal file when one is configured,
so a test can check what a (killed) subprocess restored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pynvml import (
    NVML_CLOCK_GRAPHICS,
    NVML_DEVICE_MIG_DISABLE,
    NVML_DEVICE_MIG_ENABLE,
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
    NVMLError,
    NVMLError_DriverNotLoaded,
    NVMLError_LibraryNotFound,
    NVMLError_NoPermission,
    NVMLError_NotSupported,
)

__all__ = [
    "NVML_CLOCK_GRAPHICS",
    "NVML_DEVICE_MIG_DISABLE",
    "NVML_DEVICE_MIG_ENABLE",
    "NVMLError",
    "NVMLError_DriverNotLoaded",
    "NVMLError_LibraryNotFound",
    "NVMLError_NoPermission",
    "NVMLError_NotSupported",
]


@dataclass
class FakeDevice:
    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    graphics_clocks: list[int] = field(default_factory=lambda: list(range(1410, 209, -15)))
    memory_clocks: list[int] = field(default_factory=lambda: [1215])
    power_constraints_mw: tuple[int, int] = (100_000, 400_000)
    default_limit_mw: int = 400_000
    power_mw: int = 200_000
    """Constant draw; the energy counter advances at this rate."""
    energy_counter: bool = True
    mig_mode: int | None = None
    """None: MIG not supported; else NVML_DEVICE_MIG_ENABLE/DISABLE."""
    mig_instance: bool = False
    parent: FakeDevice | None = None
    permission: bool = True
    lock_delay: float = 0.0
    # state
    index: int = 0
    locked: tuple[int, int] | None = None
    limit_mw: int | None = None
    created: float = field(default_factory=time.monotonic)


class _State:
    devices: list[FakeDevice] = []  # noqa: RUF012
    library_found = True
    initialized = False
    journal: Path | None = None


STATE = _State()


def configure(devices: list[FakeDevice] | None = None, *, library_found: bool = True, journal: Path | str | None = None) -> list[FakeDevice]:
    """Reset the fake: these devices (default one A100), library present or not, journal file."""
    STATE.devices = devices if devices is not None else [FakeDevice()]
    for i, d in enumerate(STATE.devices):
        if not d.mig_instance:
            d.index = i
    STATE.library_found = library_found
    STATE.initialized = False
    STATE.journal = Path(journal) if journal else None
    return STATE.devices


def _log(line: str) -> None:
    if STATE.journal is not None:
        with STATE.journal.open("a") as f:
            f.write(line + "\n")


def _check(handle: object) -> FakeDevice:
    if not STATE.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    if not isinstance(handle, FakeDevice):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return handle


def _whole(handle: object) -> FakeDevice:
    device = _check(handle)
    if device.mig_instance:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return device


def _control(device: FakeDevice) -> None:
    if not device.permission:
        raise NVMLError(NVML_ERROR_NO_PERMISSION)


# --- functions (same names and parameter names as pynvml) ---------------------------------
def nvmlInit():
    if not STATE.library_found:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    STATE.initialized = True


def nvmlShutdown():
    STATE.initialized = False


def nvmlSystemGetDriverVersion():
    return "550.54.15"


def nvmlDeviceGetCount():
    if not STATE.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return sum(1 for d in STATE.devices if not d.mig_instance)


def nvmlDeviceGetHandleByIndex(index):
    whole = [d for d in STATE.devices if not d.mig_instance]
    if not STATE.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    if not 0 <= index < len(whole):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return whole[index]


def nvmlDeviceGetHandleByUUID(uuid):
    if not STATE.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    for d in STATE.devices:
        if d.uuid == uuid:
            return d
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetIndex(handle):
    return _whole(handle).index


def nvmlDeviceGetName(handle):
    return _check(handle).name


def nvmlDeviceGetUUID(handle):
    return _check(handle).uuid


def nvmlDeviceGetSupportedMemoryClocks(handle):
    return list(_whole(handle).memory_clocks)


def nvmlDeviceGetSupportedGraphicsClocks(handle, memoryClockMHz):
    device = _whole(handle)
    if memoryClockMHz not in device.memory_clocks:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return list(device.graphics_clocks)


def nvmlDeviceGetClockInfo(handle, type):
    device = _whole(handle)
    return device.locked[1] if device.locked else max(device.graphics_clocks)


def nvmlDeviceSetGpuLockedClocks(handle, minGpuClockMHz, maxGpuClockMHz):
    device = _whole(handle)
    _control(device)
    if device.lock_delay:
        time.sleep(device.lock_delay)
    device.locked = (minGpuClockMHz, maxGpuClockMHz)
    _log(f"SetGpuLockedClocks {device.index} {minGpuClockMHz} {maxGpuClockMHz}")


def nvmlDeviceResetGpuLockedClocks(handle):
    device = _whole(handle)
    _control(device)
    device.locked = None
    _log(f"ResetGpuLockedClocks {device.index}")


def nvmlDeviceGetPowerManagementLimitConstraints(handle):
    return list(_whole(handle).power_constraints_mw)


def nvmlDeviceGetPowerManagementDefaultLimit(handle):
    return _whole(handle).default_limit_mw


def nvmlDeviceGetPowerManagementLimit(handle):
    device = _whole(handle)
    return device.limit_mw if device.limit_mw is not None else device.default_limit_mw


def nvmlDeviceSetPowerManagementLimit(handle, limit):
    device = _whole(handle)
    _control(device)
    low, high = device.power_constraints_mw
    if not low <= limit <= high:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    device.limit_mw = limit
    _log(f"SetPowerManagementLimit {device.index} {limit}")


def nvmlDeviceGetPowerUsage(handle):
    return _whole(handle).power_mw


def nvmlDeviceGetTotalEnergyConsumption(handle):
    device = _whole(handle)
    if not device.energy_counter:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return int((time.monotonic() - device.created) * device.power_mw)


def nvmlDeviceGetMigMode(device):
    d = _whole(device)
    if d.mig_mode is None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return [d.mig_mode, d.mig_mode]


def nvmlDeviceIsMigDeviceHandle(device):
    return int(_check(device).mig_instance)


def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDevice):
    d = _check(migDevice)
    if not d.mig_instance or d.parent is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return d.parent
