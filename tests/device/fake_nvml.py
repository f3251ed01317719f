"""A fake NVML module with nvidia-ml-py's function names, signatures, units and error classes.

Error classes and constants are the real ones from ``pynvml`` (importing pynvml does not
load the driver library), so code that catches ``pynvml.NVMLError_NoPermission`` behaves
the same. Every state-changing call is appended to a journal file when one is configured,
so a test can check what a (killed) subprocess restored.

It behaves like the hardware in /work/shared/HARDWARE.md, not like an exact instrument:

- the energy counter advances in steps (``counter_period``), so reads close together are equal;
- after ``nvmlDeviceSetGpuLockedClocks`` returns, the clock reads the old value for ``clock_ramp``
  seconds; an idle GPU (``busy=False``) reads its idle clock whatever is locked;
- under a power cap or thermal limit (``clock_ceiling``) a busy GPU never runs above that clock,
  though the lock call succeeds and the clock is listed as supported;
- clocks and power limits can be ``NotSupported`` separately (VMs, containers);
- every handle lookup returns a new handle object (compare devices, never handles).

With ``FAKE_NVML_STATE=<file>`` in the environment (or :func:`share_state`), the devices live in
that JSON file, so a launcher, its workers and ``perseus devices --reset`` in separate processes
see one set of GPUs; ``PERSEUS_NVML_MODULE=fake_nvml`` makes Perseus load this module.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
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
    NVML_ERROR_UNKNOWN,
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
    "NVML_ERROR_UNKNOWN",
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
    """Constant draw; the energy counter advances at this rate, in steps."""
    energy_counter: bool = True
    counter_period: float = 0.02
    """The energy counter only moves every this many seconds (real counters step)."""
    clock_ramp: float = 0.01
    """Seconds after a lock call returns until the clock reads the new value."""
    idle_clock: int = 210
    busy: bool = True
    """Whether work is running; an idle GPU reads ``idle_clock``."""
    clock_ceiling: int | None = None
    """A power cap or thermal limit: the clock never exceeds this, whatever is locked (None: no limit)."""
    clock_supported: bool = True
    """``False``: setting clocks is NotSupported (power limits may still work)."""
    power_limit_supported: bool = True
    mig_mode: int | None = None
    """None: MIG not supported; else NVML_DEVICE_MIG_ENABLE/DISABLE."""
    mig_instance: bool = False
    parent: FakeDevice | None = None
    permission: bool = True
    lock_delay: float = 0.0
    lock_error: int | None = None
    """An NVML error code every clock lock raises (after permission checks), e.g. NVML_ERROR_UNKNOWN."""
    lock_gate: threading.Event | None = None
    """When set, a clock lock blocks until the event is set (an NVML call that is in flight)."""
    # state
    index: int = 0
    locked: tuple[int, int] | None = None
    locked_at: float = 0.0
    ramp_from: int | None = None
    limit_mw: int | None = None
    created: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class FakeHandle:
    """What handle lookups return: a new object per call, like pynvml's ``c_nvmlDevice_t``."""

    device: FakeDevice = field(compare=False)


class _State:
    devices: list[FakeDevice] = []  # noqa: RUF012
    library_found = True
    initialized = False
    journal: Path | None = None
    shared: Path | None = None


STATE = _State()
_UNSHARED = ("parent", "lock_gate")


def configure(devices: list[FakeDevice] | None = None, *, library_found: bool = True, journal: Path | str | None = None) -> list[FakeDevice]:
    """Reset the fake: these devices (default one A100), library present or not, journal file."""
    STATE.devices = devices if devices is not None else [FakeDevice()]
    for i, d in enumerate(STATE.devices):
        if not d.mig_instance:
            d.index = i
    STATE.library_found = library_found
    STATE.initialized = False
    STATE.journal = Path(journal) if journal else None
    STATE.shared = None
    return STATE.devices


def share_state(path: Path | str, devices: list[FakeDevice] | None = None) -> None:
    """Write ``devices`` to ``path`` and use that file from now on (other processes: FAKE_NVML_STATE)."""
    devices = configure(devices, journal=STATE.journal)
    STATE.shared = Path(path)
    _save(devices)


def shared_devices(path: Path | str) -> list[FakeDevice]:
    """The devices in a shared state file, as another process left them."""
    return _decode(json.loads(Path(path).read_text()))


def _decode(rows: list[dict[str, object]]) -> list[FakeDevice]:
    names = {f.name for f in fields(FakeDevice)}
    devices = []
    for row in rows:
        device = FakeDevice(**{k: v for k, v in row.items() if k in names})  # type: ignore[arg-type]
        device.locked = tuple(device.locked) if device.locked else None  # type: ignore[assignment]
        device.power_constraints_mw = tuple(device.power_constraints_mw)  # type: ignore[assignment]
        devices.append(device)
    return devices


def _save(devices: list[FakeDevice]) -> None:
    assert STATE.shared is not None
    rows = [{k: v for k, v in asdict(d).items() if k not in _UNSHARED} for d in devices]
    tmp = STATE.shared.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, STATE.shared)


@contextmanager
def _shared() -> Iterator[None]:
    """Around a call in shared mode: load the devices under a file lock, save what changed."""
    if STATE.shared is None:
        yield
        return
    with open(str(STATE.shared) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        STATE.devices = _decode(json.loads(STATE.shared.read_text()))
        yield
        _save(STATE.devices)


if os.environ.get("FAKE_NVML_STATE"):
    STATE.shared = Path(os.environ["FAKE_NVML_STATE"])
    if os.environ.get("FAKE_NVML_JOURNAL"):
        STATE.journal = Path(os.environ["FAKE_NVML_JOURNAL"])


def _log(line: str) -> None:
    if STATE.journal is not None:
        with STATE.journal.open("a") as f:
            f.write(line + "\n")


def _check(handle: object) -> FakeDevice:
    if not STATE.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    if not isinstance(handle, FakeHandle):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if STATE.shared is not None:  # the handle's device may be a stale copy: look it up by UUID
        return next(d for d in STATE.devices if d.uuid == handle.device.uuid)
    return handle.device


def _whole(handle: object) -> FakeDevice:
    device = _check(handle)
    if device.mig_instance:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return device


def _control(device: FakeDevice, supported: bool) -> None:
    if not device.permission:
        raise NVMLError(NVML_ERROR_NO_PERMISSION)
    if not supported:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)


def _clock(device: FakeDevice) -> int:
    """The graphics clock right now: idle, ramping to a new lock, locked, or the boost clock."""
    if not device.busy:
        return device.idle_clock
    top = max(device.graphics_clocks)
    if device.clock_ceiling is not None:
        top = max((c for c in device.graphics_clocks if c <= device.clock_ceiling), default=min(device.graphics_clocks))
    if device.locked is None:
        return top
    if time.monotonic() - device.locked_at < device.clock_ramp:
        return min(device.ramp_from, top) if device.ramp_from is not None else top
    return min(device.locked[1], top)


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
    with _shared():
        return sum(1 for d in STATE.devices if not d.mig_instance)


def nvmlDeviceGetHandleByIndex(index):
    if not STATE.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    with _shared():
        whole = [d for d in STATE.devices if not d.mig_instance]
        if not 0 <= index < len(whole):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return FakeHandle(whole[index])


def nvmlDeviceGetHandleByUUID(uuid):
    if not STATE.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    with _shared():
        for d in STATE.devices:
            if d.uuid == uuid:
                return FakeHandle(d)
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetIndex(handle):
    with _shared():
        return _whole(handle).index


def nvmlDeviceGetName(handle):
    with _shared():
        return _check(handle).name


def nvmlDeviceGetUUID(handle):
    with _shared():
        return _check(handle).uuid


def nvmlDeviceGetSupportedMemoryClocks(handle):
    with _shared():
        return list(_whole(handle).memory_clocks)


def nvmlDeviceGetSupportedGraphicsClocks(handle, memoryClockMHz):
    with _shared():
        device = _whole(handle)
        if memoryClockMHz not in device.memory_clocks:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return list(device.graphics_clocks)


def nvmlDeviceGetClockInfo(handle, type):
    with _shared():
        return _clock(_whole(handle))


def nvmlDeviceSetGpuLockedClocks(handle, minGpuClockMHz, maxGpuClockMHz):
    with _shared():
        device = _whole(handle)
        _control(device, device.clock_supported)
    if device.lock_error is not None:
        raise NVMLError(device.lock_error)
    if device.lock_gate is not None:
        device.lock_gate.wait()
    if device.lock_delay:
        time.sleep(device.lock_delay)
    with _shared():
        device = _whole(handle)
        device.ramp_from = _clock(device) if device.busy else None
        device.locked = (minGpuClockMHz, maxGpuClockMHz)
        device.locked_at = time.monotonic()
        _log(f"SetGpuLockedClocks {device.index} {minGpuClockMHz} {maxGpuClockMHz}")


def nvmlDeviceResetGpuLockedClocks(handle):
    with _shared():
        device = _whole(handle)
        _control(device, device.clock_supported)
        device.locked = None
        _log(f"ResetGpuLockedClocks {device.index}")


def nvmlDeviceGetPowerManagementLimitConstraints(handle):
    with _shared():
        return list(_whole(handle).power_constraints_mw)


def nvmlDeviceGetPowerManagementDefaultLimit(handle):
    with _shared():
        return _whole(handle).default_limit_mw


def nvmlDeviceGetPowerManagementLimit(handle):
    with _shared():
        device = _whole(handle)
        return device.limit_mw if device.limit_mw is not None else device.default_limit_mw


def nvmlDeviceSetPowerManagementLimit(handle, limit):
    with _shared():
        device = _whole(handle)
        _control(device, device.power_limit_supported)
        low, high = device.power_constraints_mw
        if not low <= limit <= high:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        device.limit_mw = limit
        _log(f"SetPowerManagementLimit {device.index} {limit}")


def nvmlDeviceGetPowerUsage(handle):
    with _shared():
        return _whole(handle).power_mw


def nvmlDeviceGetTotalEnergyConsumption(handle):
    with _shared():
        device = _whole(handle)
    if not device.energy_counter:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    elapsed = time.monotonic() - device.created
    if device.counter_period > 0:
        elapsed -= elapsed % device.counter_period  # the counter has not moved since its last update
    return int(elapsed * device.power_mw)


def nvmlDeviceGetMigMode(device):
    with _shared():
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
    return FakeHandle(d.parent)
