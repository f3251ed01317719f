"""``ZeusMonitor``: Zeus's measurement-window API over :class:`perseus.device.EnergyMonitor`.

Same constructor keywords and window calls as Zeus (``gpu_indices``, ``log_file``,
``begin_window(key, sync_execution, restart)``, ``end_window(key, sync_execution,
cancel)``), returning Zeus's :class:`Measurement`. GPUs come from
:func:`perseus.device.get_gpus`: NVML when an NVIDIA GPU is visible, else a simulated one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from perseus.device import GPU, EnergyMonitor, get_gpus
from perseus.errors import InputError

SyncFramework = Literal["torch", "jax", "cupy"]


@dataclass(frozen=True)
class Measurement:
    """Time and energy of one measurement window, as Zeus reports it.

    Attributes:
        time: Wall seconds the window lasted.
        gpu_energy: Joules per GPU index (the index as the training framework sees it).
        cpu_energy: Joules per CPU package; always None (Perseus does not read RAPL).
        dram_energy: Joules per CPU package's DRAM; always None.
        soc_energy: System-on-chip energy; always None.
    """

    time: float
    gpu_energy: dict[int, float]
    cpu_energy: dict[int, float] | None = None
    dram_energy: dict[int, float] | None = None
    soc_energy: None = None

    @property
    def total_energy(self) -> float:
        """Joules over all monitored GPUs."""
        return sum(self.gpu_energy.values())


class ZeusMonitor:
    """Measure the time and GPU energy of named, possibly overlapping windows.

    Args:
        gpu_indices: GPUs to measure (``CUDA_VISIBLE_DEVICES`` order); None means every visible GPU.
        cpu_indices: Must be None or empty: Perseus measures GPUs only.
        approx_instant_energy: When a window is too short for the GPU's energy counter to move,
            estimate its energy as the instant power times the window's time instead of 0.
        log_file: CSV file getting one row per finished window (Perseus's columns, see README).
        sync_execution_with: Framework whose queued GPU work a window waits for; only ``"torch"``.
    """

    def __init__(
        self,
        gpu_indices: list[int] | None = None,
        cpu_indices: list[int] | None = None,
        approx_instant_energy: bool = False,
        log_file: str | Path | None = None,
        sync_execution_with: SyncFramework = "torch",
    ) -> None:
        if cpu_indices:
            raise InputError(
                "ZeusMonitor.cpu_indices", f"Perseus measures GPUs only; pass None or [], got {cpu_indices!r}"
            )
        if sync_execution_with != "torch":
            raise InputError(
                "ZeusMonitor.sync_execution_with",
                f"Perseus synchronises through torch only, got {sync_execution_with!r}",
            )
        self.approx_instant_energy = approx_instant_energy
        self.energy_monitor = EnergyMonitor(get_gpus(indices=gpu_indices), log_file=log_file)
        self.gpu_indices: list[int] = [gpu.index for gpu in self.energy_monitor.gpus]
        self.cpu_indices: list[int] = []

    @property
    def gpus(self) -> list[GPU]:
        """The monitored GPUs (Perseus device objects)."""
        return self.energy_monitor.gpus

    def begin_window(self, key: str, sync_execution: bool = True, restart: bool = False) -> None:
        """Open window ``key``; ``restart=True`` discards an open window of that name first."""
        if key in self.energy_monitor.open_windows:
            if not restart:
                raise InputError(
                    f"measurement window {key!r}", "is already open (pass restart=True to reopen it)"
                )
            self.energy_monitor.end_window(key, sync=False, cancel=True)
        self.energy_monitor.begin_window(key, sync=sync_execution)

    def end_window(self, key: str, sync_execution: bool = True, cancel: bool = False) -> Measurement:
        """Close window ``key`` and return what it measured; ``cancel=True`` returns zeros, unlogged."""
        if key not in self.energy_monitor.open_windows:
            raise InputError(f"measurement window {key!r}", "does not exist (never begun, or already ended)")
        window = self.energy_monitor.end_window(key, sync=sync_execution, cancel=cancel)
        energy = dict(window.energy)
        if self.approx_instant_energy and not cancel:
            for gpu in self.gpus:
                if energy[gpu.index] == 0.0:
                    energy[gpu.index] = gpu.power() * window.time
        return Measurement(time=window.time, gpu_energy=energy)
