"""Replay real Zeus power-limit profiling logs through the optimizer (test helpers).

``ReplayLog`` parses a log with nothing but the csv module. ``LogGPU`` is a fake NVML
device behind the real :class:`perseus.device.base.GPU` interface (so power-limit changes
go through the real safety registry) that records every power limit applied.
``ReplayMonitor`` answers each measurement window with the log row of the power limit
the window is named after, and checks that the window really ran at that limit.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from perseus.device import GPU, Window
from perseus.power_limit.optimizer import WINDOW_PREFIX

DATA_DIR = Path(__file__).parent / "data"


@dataclass
class ReplayLog:
    path: Path
    power_limits: list[int]
    times: list[float]
    gpu_energies: list[list[float]]  # per row, per GPU column

    @classmethod
    def read(cls, name: str) -> ReplayLog:
        path = DATA_DIR / name
        with path.open() as f:
            rows = list(csv.DictReader(f))
        energy_cols = [c for c in rows[0] if c.endswith("_energy")]
        return cls(
            path=path,
            power_limits=[int(r["window_name"].rsplit("_", 1)[1]) for r in rows],
            times=[float(r["elapsed_time"]) for r in rows],
            gpu_energies=[[float(r[c]) for c in energy_cols] for r in rows],
        )

    @property
    def num_gpus(self) -> int:
        return len(self.gpu_energies[0])

    def energies(self, columns: Sequence[int] | None = None) -> list[float]:
        cols = range(self.num_gpus) if columns is None else columns
        return [sum(row[c] for c in cols) for row in self.gpu_energies]


class LogGPU(GPU):
    """Fake NVML GPU: a power-limit range and a record of applied limits (None = default)."""

    def __init__(self, index: int, power_range: tuple[float, float], can_control: bool = True) -> None:
        self.index = index
        self.name = f"log GPU {index}"
        self.can_control = can_control
        self._range = power_range
        self.limit: float | None = None
        self.applied: list[float | None] = []

    def supported_frequencies(self) -> list[int]:
        return [1410]

    def power_limit_range(self) -> tuple[float, float]:
        return self._range

    def energy(self) -> float:
        return 0.0

    def power(self) -> float:
        return 0.0

    def _apply_locked_clock(self, mhz: int) -> None:
        raise AssertionError("the power-limit optimizer must not lock clocks")

    def _apply_unlocked_clock(self) -> None:
        raise AssertionError("the power-limit optimizer must not unlock clocks")

    def _read_power_limit(self) -> float | None:
        return self.limit

    def _apply_power_limit(self, watts: float | None) -> None:
        self.limit = watts
        self.applied.append(watts)


@dataclass
class ReplayMonitor:
    """Measurement windows answered from a log; other windows (epochs) cost 1 s and 1 J per GPU."""

    log: ReplayLog
    gpus: list[LogGPU]
    columns: Sequence[int]  # which GPU columns of the log these GPUs are
    time_override: dict[int, float] = field(default_factory=dict)  # power limit -> time
    open: set[str] = field(default_factory=set)
    completed: list[str] = field(default_factory=list)

    def begin_window(self, name: str, sync: bool = True) -> None:
        assert name not in self.open, f"window {name} begun twice"
        if name.startswith(WINDOW_PREFIX):
            limit = float(name[len(WINDOW_PREFIX) :])
            assert all(g.limit == limit for g in self.gpus), (
                f"window {name} begun at {[g.limit for g in self.gpus]}"
            )
        self.open.add(name)

    def end_window(self, name: str, sync: bool = True) -> Window:
        assert name in self.open, f"window {name} ended without begin"
        self.open.discard(name)
        self.completed.append(name)
        if not name.startswith(WINDOW_PREFIX):
            return Window(name, 1.0, {g.index: 1.0 for g in self.gpus})
        limit = int(float(name[len(WINDOW_PREFIX) :]))
        row = self.log.power_limits.index(limit)
        time = self.time_override.get(limit, self.log.times[row])
        return Window(
            name,
            time,
            {g.index: self.log.gpu_energies[row][c] for g, c in zip(self.gpus, self.columns, strict=True)},
        )


def make_monitor(log: ReplayLog, columns: Sequence[int] | None = None) -> ReplayMonitor:
    cols = list(range(log.num_gpus)) if columns is None else list(columns)
    power_range = (float(min(log.power_limits)), float(max(log.power_limits)))
    return ReplayMonitor(log, [LogGPU(i, power_range) for i in range(len(cols))], cols)
