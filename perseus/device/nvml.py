"""NVIDIA GPUs through NVML (``nvidia-ml-py``, module ``pynvml``).

The NVML module is a parameter everywhere (``nvml=None`` means ``import pynvml``): that
is the one seam tests use to inject a fake NVML. Clocks are set with locked clocks
(``nvmlDeviceSetGpuLockedClocks(f, f)``), which needs root or CAP_SYS_ADMIN; without it
GPUs come up in measure-only mode (time and energy still recorded).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from perseus.device import safety, statefile
from perseus.device.base import GPU
from perseus.device.integrator import PowerIntegrator
from perseus.errors import DeviceError

MODES: tuple[str, ...] = ("auto", "control", "measure")
PERMISSION_HINT = (
    "needs root or CAP_SYS_ADMIN; run as root, grant it with "
    "`sudo setcap cap_sys_admin+ep $(readlink -f $(which python))`, "
    "or set PERSEUS_DEVICE_MODE=measure to only measure time and energy"
)
_CAP_SYS_ADMIN_BIT = 21


class NoNvidiaGPU(DeviceError):
    """NVML is unusable or sees no GPU; the message says why."""


NVML_MODULE_ENV = "PERSEUS_NVML_MODULE"
"""Names a module to use instead of ``pynvml`` (the tests' fake NVML, in worker processes)."""


def load_nvml() -> ModuleType:
    name = os.environ.get(NVML_MODULE_ENV) or "pynvml"
    try:
        return importlib.import_module(name)
    except ImportError:
        if name != "pynvml":
            raise NoNvidiaGPU(f"{NVML_MODULE_ENV}={name}: no such module") from None
        raise NoNvidiaGPU("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None


def has_admin_capability(status_path: str = "/proc/self/status") -> bool:
    """Whether this process may set GPU clocks (CAP_SYS_ADMIN, which root normally has)."""
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN_BIT & 1)
    except OSError:
        pass
    geteuid = getattr(os, "geteuid", None)
    return geteuid is None or geteuid() == 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NVMLGPU(GPU):
    """One NVIDIA GPU (or the GPU a MIG instance lives on, measure-only)."""

    def __init__(
        self,
        nvml: ModuleType,
        handle: Any,
        *,
        index: int,
        nvml_index: int | None,
        name: str,
        can_control: bool,
        control_problem: str | None = None,
        poll_interval: float = 0.01,
        uuid: str = "",
    ) -> None:
        self._nvml = nvml
        self._handle = handle
        self.uuid = uuid
        """NVML's UUID of the (whole) GPU: the identity CUDA and NVML agree on."""
        self.index = index
        self.nvml_index = nvml_index
        self.name = name
        self.can_control = can_control
        self.control_problem = control_problem
        self._poll_interval = poll_interval
        self._frequencies: list[int] | None = None
        self._power_range: tuple[float, float] | None = None
        self._integrator: PowerIntegrator | None = None
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self.supports_energy_counter = True
        except nvml.NVMLError:
            self.supports_energy_counter = False

    # --- queries -------------------------------------------------------------------
    def supported_frequencies(self) -> list[int]:
        if self._frequencies is None:
            nvml = self._nvml
            try:
                memory = max(nvml.nvmlDeviceGetSupportedMemoryClocks(self._handle))
                clocks = nvml.nvmlDeviceGetSupportedGraphicsClocks(self._handle, memory)
            except (nvml.NVMLError, ValueError):  # NotSupported (e.g. MIG) or an empty list
                clocks = []
            self._frequencies = sorted(set(clocks), reverse=True)
        return list(self._frequencies)

    def power_limit_range(self) -> tuple[float, float]:
        if self._power_range is None:
            low, high = self._call(
                "read the power limit range", self._nvml.nvmlDeviceGetPowerManagementLimitConstraints
            )
            self._power_range = (low / 1000.0, high / 1000.0)
        return self._power_range

    def energy(self) -> float:
        if self.supports_energy_counter:
            return self._call("read the energy counter", self._nvml.nvmlDeviceGetTotalEnergyConsumption) / 1000.0
        if self._integrator is None:
            self._integrator = PowerIntegrator(self.power, self._poll_interval)
        return self._integrator.energy()

    def power(self) -> float:
        return self._call("read power", self._nvml.nvmlDeviceGetPowerUsage) / 1000.0

    def current_frequency(self) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetClockInfo(self._handle, self._nvml.NVML_CLOCK_GRAPHICS))
        except self._nvml.NVMLError:
            return None

    def synchronize(self) -> None:
        # Only if the program already uses torch: importing it here would cost seconds.
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize(self.index)

    def close(self) -> None:
        if self._integrator is not None:
            self._integrator.close()
            self._integrator = None

    # --- backend primitives --------------------------------------------------------
    def _apply_locked_clock(self, mhz: int) -> None:
        self._control_call("lock the graphics clock", self._nvml.nvmlDeviceSetGpuLockedClocks, mhz, mhz)

    def _apply_unlocked_clock(self) -> None:
        self._control_call("reset the graphics clock", self._nvml.nvmlDeviceResetGpuLockedClocks)

    def _read_power_limit(self) -> float | None:
        return self._call("read the power limit", self._nvml.nvmlDeviceGetPowerManagementLimit) / 1000.0

    def _apply_power_limit(self, watts: float | None) -> None:
        if watts is None:
            milliwatts = self._call(
                "read the default power limit", self._nvml.nvmlDeviceGetPowerManagementDefaultLimit
            )
        else:
            milliwatts = round(watts * 1000)
        self._control_call("set the power limit", self._nvml.nvmlDeviceSetPowerManagementLimit, milliwatts)

    def _remember(self, what: str, original: float | None) -> None:
        if not self.uuid:
            return
        if what == "clock":
            statefile.record(self.uuid, clock=True)
        else:
            statefile.record(self.uuid, power_limit_mw=None if original is None else round(original * 1000))

    def _forget(self, what: str) -> None:
        if self.uuid:
            statefile.clear(self.uuid, what)

    # --- NVML calls with one-line errors -------------------------------------------
    def _call(self, action: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(self._handle, *args)
        except self._nvml.NVMLError as exc:
            raise DeviceError(self._describe(action, exc)) from None

    def _control_call(self, action: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(self._handle, *args)
        except self._nvml.NVMLError_NoPermission as exc:
            # Fall back to measure-only so callers (the controller) stop trying.
            self.can_control = False
            self.control_problem = self._describe(action, exc)
            raise DeviceError(self.control_problem) from None
        except self._nvml.NVMLError as exc:
            raise DeviceError(self._describe(action, exc)) from None

    def _describe(self, action: str, exc: Exception) -> str:
        nvml = self._nvml
        where = f"GPU {self.index} ({self.name})"
        if isinstance(exc, nvml.NVMLError_NoPermission):
            return f"{where}: cannot {action}: NVML says insufficient permissions; this {PERMISSION_HINT}"
        if isinstance(exc, nvml.NVMLError_NotSupported):
            return f"{where}: cannot {action}: not supported on this GPU (NVML: {exc})"
        return f"{where}: cannot {action}: NVML error: {exc}"


def nvml_gpus(
    nvml: ModuleType | None = None,
    *,
    indices: Sequence[int] | None = None,
    mode: str = "auto",
    can_admin: bool | None = None,
    environ: Mapping[str, str] | None = None,
    cuda_uuids: Mapping[int, str] | None = None,
) -> list[NVMLGPU]:
    """The NVIDIA GPUs this process sees, in ``CUDA_VISIBLE_DEVICES`` order.

    ``cuda_uuids`` (CUDA index -> UUID, from ``torch.cuda.get_device_properties(i).uuid``) pins
    those indices to the device CUDA computes on: CUDA orders GPUs fastest first unless
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, NVML in PCI order, so only the UUID names the same GPU.

    ``mode``: ``"auto"`` controls clocks if permitted and falls back to measure-only with a
    one-line warning; ``"control"`` raises :class:`DeviceError` instead; ``"measure"`` never
    controls. ``can_admin=None`` detects CAP_SYS_ADMIN. Raises :class:`NoNvidiaGPU` when NVML
    cannot be loaded or sees no GPU.
    """
    if mode not in MODES:
        raise DeviceError(f"device mode must be one of {', '.join(MODES)}, got {mode!r}")
    safety.install()  # usually the main thread: lets SIGTERM/SIGINT restore clocks
    nvml = nvml if nvml is not None else load_nvml()
    environ = os.environ if environ is None else environ
    try:
        nvml.nvmlInit()
    except nvml.NVMLError_LibraryNotFound:
        raise NoNvidiaGPU("NVML library libnvidia-ml.so.1 not found; no NVIDIA driver installed") from None
    except nvml.NVMLError_DriverNotLoaded:
        raise NoNvidiaGPU("the NVIDIA driver is not loaded") from None
    except nvml.NVMLError as exc:
        raise NoNvidiaGPU(f"NVML failed to initialise: {exc}") from None
    visible = _visible_devices(nvml, environ)
    if not visible:
        raise NoNvidiaGPU("NVML sees no GPU visible to this process (check CUDA_VISIBLE_DEVICES)")
    if indices is not None:
        bad = [i for i in indices if not 0 <= i < len(visible)]
        if bad:
            raise DeviceError(
                f"GPU index {bad[0]} is not visible: this process sees {len(visible)} GPU(s), "
                f"indices 0-{len(visible) - 1} (check CUDA_VISIBLE_DEVICES)"
            )
        chosen = list(indices)
    else:
        chosen = list(range(len(visible)))
    admin = has_admin_capability() if can_admin is None else can_admin
    gpus = []
    for index in chosen:
        handle, nvml_index, mig_instance = visible[index]
        if cuda_uuids is not None and index in cuda_uuids:
            handle, nvml_index, mig_instance = _by_uuid(nvml, cuda_uuids[index], index)
        name = _text(nvml.nvmlDeviceGetName(handle))
        problem = _control_problem(nvml, handle, index, nvml_index, mig_instance, mode, admin)
        if problem is not None and mode == "control":
            raise DeviceError(problem)
        if mig_instance:
            name += " (MIG instance; readings cover the whole GPU)"
            handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        try:
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        except nvml.NVMLError:
            uuid = ""
        gpus.append(
            NVMLGPU(
                nvml,
                handle,
                index=index,
                nvml_index=nvml_index,
                name=name,
                can_control=problem is None,
                control_problem=problem,
                uuid=uuid,
            )
        )
    return gpus


def reset_recorded(nvml: ModuleType | None = None, *, include_live_owners: bool = False) -> list[str]:
    """Undo the changes recorded in the per-GPU state files (see :mod:`perseus.device.statefile`).

    Only records whose owner process is gone, unless ``include_live_owners``. Returns one line per
    GPU saying what was restored or why it could not be.
    """
    pending = [c for c in statefile.all_changes() if include_live_owners or not c.owner_alive]
    if not pending:
        return []
    nvml = nvml if nvml is not None else load_nvml()
    nvml.nvmlInit()
    lines = []
    for changes in pending:
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(changes.uuid)
            if changes.clock:
                nvml.nvmlDeviceResetGpuLockedClocks(handle)
            if changes.power:
                limit = changes.power_limit_mw
                if limit is None:
                    limit = nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle)
                nvml.nvmlDeviceSetPowerManagementLimit(handle, limit)
        except nvml.NVMLError as exc:
            lines.append(f"could not restore {changes.describe()}: NVML: {exc}")
            continue
        statefile.forget_file(changes)
        lines.append(f"restored {changes.describe()}")
    return lines


def _control_problem(
    nvml: ModuleType,
    handle: Any,
    index: int,
    nvml_index: int | None,
    mig_instance: bool,
    mode: str,
    admin: bool,
) -> str | None:
    """Why this GPU cannot be controlled (``None`` if it can)."""
    if mode == "measure":
        return "measure-only mode (PERSEUS_DEVICE_MODE=measure)"
    if mig_instance:
        return (
            f"GPU {index} is a MIG instance; clocks can only be set for a whole GPU "
            "(run on a GPU with MIG disabled to control clocks)"
        )
    try:
        mig_enabled = nvml.nvmlDeviceGetMigMode(handle)[0] == nvml.NVML_DEVICE_MIG_ENABLE
    except nvml.NVMLError:  # NotSupported on GPUs without MIG
        mig_enabled = False
    if mig_enabled:
        target = nvml_index if nvml_index is not None else index
        return (
            f"GPU {index} has MIG mode enabled; Perseus does not lock clocks of a partitioned GPU "
            f"(disable MIG with `sudo nvidia-smi -i {target} -mig 0`)"
        )
    if not admin:
        return f"GPU {index}: setting clocks {PERMISSION_HINT}"
    return None


def _visible_devices(nvml: ModuleType, environ: Mapping[str, str]) -> list[tuple[Any, int | None, bool]]:
    """(handle, NVML index or None, is a MIG instance) per visible GPU, in CUDA order.

    Follows CUDA's rules for ``CUDA_VISIBLE_DEVICES``: indices or ``GPU-``/``MIG-`` UUIDs,
    and the list ends at the first entry that names no device (so ``-1`` hides all).
    """
    count = nvml.nvmlDeviceGetCount()
    spec = environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return [(nvml.nvmlDeviceGetHandleByIndex(i), i, False) for i in range(count)]
    devices: list[tuple[Any, int | None, bool]] = []
    for entry in (e.strip() for e in spec.split(",")):
        if entry.isdigit():
            if int(entry) >= count:
                break
            devices.append((nvml.nvmlDeviceGetHandleByIndex(int(entry)), int(entry), False))
        elif entry.startswith(("GPU-", "MIG-")):
            handle = _handle_by_uuid(nvml, entry, count)
            if handle is None:
                break
            mig = entry.startswith("MIG-")
            devices.append((handle, None if mig else _index_of(nvml, handle), mig))
        else:
            break
    return devices


def _handle_by_uuid(nvml: ModuleType, uuid: str, count: int) -> Any | None:
    """The device with this UUID, or with the one UUID it abbreviates (``GPU-8a2b``, as CUDA accepts)."""
    try:
        return nvml.nvmlDeviceGetHandleByUUID(uuid)
    except nvml.NVMLError:
        pass
    if not uuid.startswith("GPU-"):
        return None
    matches = []
    for i in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        if _text(nvml.nvmlDeviceGetUUID(handle)).startswith(uuid):
            matches.append(handle)
    return matches[0] if len(matches) == 1 else None


def _by_uuid(nvml: ModuleType, uuid: str, index: int) -> tuple[Any, int | None, bool]:
    """(handle, NVML index, is a MIG instance) of the device CUDA calls ``uuid``."""
    for candidate in (uuid, f"GPU-{uuid}", f"MIG-{uuid}"):
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(candidate)
        except nvml.NVMLError:
            continue
        mig = candidate.startswith("MIG-")
        return handle, None if mig else _index_of(nvml, handle), mig
    raise NoNvidiaGPU(f"CUDA device {index} (UUID {uuid}) is not among the GPUs NVML sees")


def cuda_uuids(indices: Sequence[int]) -> dict[int, str]:
    """UUIDs of these CUDA devices as torch reports them (empty if this process has not imported torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    return {i: str(torch.cuda.get_device_properties(i).uuid) for i in indices}


def _index_of(nvml: ModuleType, handle: Any) -> int | None:
    try:
        return int(nvml.nvmlDeviceGetIndex(handle))
    except nvml.NVMLError:
        return None
