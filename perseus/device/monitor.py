"""Named, nestable time and energy measurement windows over a set of GPUs.

``begin_window("iteration")`` ... ``end_window("iteration")`` returns the wall time and
each GPU's energy in between. Windows may nest or overlap freely. Before reading the
counters the GPUs are synchronised (on real GPUs with torch, queued kernels finish
first), so a window covers the work issued inside it. An optional CSV log gets one row
per finished window, flushed at once so a crash keeps what was measured.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from perseus.device.base import GPU
from perseus.errors import DeviceError


@dataclass(frozen=True)
class Window:
    """One finished measurement window."""

    name: str
    time: float
    """Wall seconds."""
    energy: dict[int, float]
    """Joules per GPU index."""
    start: float = 0.0
    """Unix time the window began."""

    @property
    def total_energy(self) -> float:
        return sum(self.energy.values())

    @property
    def average_power(self) -> float:
        """Watts over all GPUs (0 for an empty window)."""
        return self.total_energy / self.time if self.time > 0 else 0.0


@dataclass(frozen=True)
class _Open:
    start_unix: float
    start: float
    energy: dict[int, float]


class EnergyMonitor:
    """Measure time and energy of named windows. ``gpus=None`` means :func:`get_gpus`'s."""

    def __init__(
        self,
        gpus: Sequence[GPU] | None = None,
        log_file: str | Path | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if gpus is None:
            from perseus.device.discovery import get_gpus

            gpus = get_gpus()
        self.gpus = list(gpus)
        self._clock = clock
        indices = [g.index for g in self.gpus]
        if len(set(indices)) != len(indices):
            raise DeviceError(f"EnergyMonitor got GPUs with duplicate indices {indices}")
        self._open: dict[str, _Open] = {}
        self._log: IO[str] | None = None
        self._writer: csv.DictWriter[str] | None = None
        if log_file is not None:
            self._open_log(Path(log_file))

    def begin_window(self, name: str, sync: bool = True) -> None:
        if name in self._open:
            raise DeviceError(f"measurement window {name!r} is already open")
        if sync:
            self._synchronize()
        energy = {g.index: g.energy() for g in self.gpus}
        self._open[name] = _Open(time.time(), self._clock(), energy)

    def end_window(self, name: str, sync: bool = True, *, cancel: bool = False) -> Window:
        """Close ``name`` and return its time and energy.

        ``cancel=True`` discards the window (an interrupted measurement): it is neither
        measured nor logged, and the returned window is empty (zero time and energy).
        """
        try:
            opened = self._open.pop(name)
        except KeyError:
            raise DeviceError(
                f"measurement window {name!r} was never begun (open: {', '.join(self._open) or 'none'})"
            ) from None
        if sync:
            self._synchronize()
        if cancel:
            return Window(name, 0.0, {g.index: 0.0 for g in self.gpus}, opened.start_unix)
        end = self._clock()
        energy = {g.index: g.energy() - opened.energy[g.index] for g in self.gpus}
        window = Window(name, end - opened.start, energy, opened.start_unix)
        self._write(window)
        return window

    @property
    def open_windows(self) -> list[str]:
        return list(self._open)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
            self._writer = None

    def __enter__(self) -> EnergyMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _synchronize(self) -> None:
        for gpu in self.gpus:
            gpu.synchronize()

    def _open_log(self, path: Path) -> None:
        fields = ["window", "start", "time", "total_energy"] + [f"gpu{g.index}_energy" for g in self.gpus]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists() or path.stat().st_size == 0
            self._log = path.open("a", newline="")
        except OSError as exc:
            raise DeviceError(f"{path}: cannot open energy log: {exc.strerror}") from None
        self._writer = csv.DictWriter(self._log, fieldnames=fields, lineterminator="\n")
        if new:
            self._writer.writeheader()
            self._log.flush()

    def _write(self, window: Window) -> None:
        if self._writer is None or self._log is None:
            return
        row: dict[str, object] = {
            "window": window.name,
            "start": f"{window.start:.6f}",
            "time": repr(window.time),
            "total_energy": repr(window.total_energy),
        }
        row.update({f"gpu{i}_energy": repr(e) for i, e in window.energy.items()})
        self._writer.writerow(row)
        self._log.flush()
