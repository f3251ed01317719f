"""Iteration reports and training runs as values, and the spill file that keeps them when the server cannot take them.

An :class:`IterationReport` is one rank's time and energy of one training iteration, with the clock
read back from its GPU and whether it ran measure-only. Workers send
them in batches under a run id (one launch of a job). Reports the server could not take before the
buffer filled or training ended are appended to a spill file, one JSON object per line, and sent
later (the next run against the same output folder, or ``perseus upload FILE``). Sending a
report twice is harmless: the server stores each (job, run, rank, iteration) once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from perseus.errors import InputError


@dataclass(frozen=True)
class IterationReport:
    """One rank's time (s) and energy (J) of one training iteration, under the plan it ran, with what
    the GPU did: every field below is read back from the GPU, never taken from what was requested."""

    rank: int
    iteration: int
    time: float
    energy: float
    plan_name: str = ""
    _: KW_ONLY  # the observed fields below are many numbers: by name only
    busy_time: float = 0.0
    """Seconds the rank spent inside its instructions (without waits for other stages or pipelines); 0: unknown."""
    busy_energy: float = 0.0
    """Joules of those instructions; 0: unknown."""
    measure_only: bool = False
    """The rank changes no GPU setting (``--measure_only``): it applied no plan."""
    clock_mhz: float = 0.0
    """Time-weighted mean graphics clock read back over the iteration's instructions; 0: none was read."""
    planned_instructions: int = 0
    """Instructions the applied plan gave a clock."""
    at_planned_clock: int = 0
    """Of those, how many read back their planned clock when they began and when they ended."""

    @property
    def planned_clock_share(self) -> float | None:
        """Share of planned instructions that ran at their planned clock; ``None`` without a plan."""
        return self.at_planned_clock / self.planned_instructions if self.planned_instructions else None


@dataclass(frozen=True)
class RunInfo:
    """One training run (attempt) of a job, as its stored iteration reports describe it."""

    run_id: str
    num_ranks: int
    """Ranks that reported at least once."""
    num_iterations: int
    """The most iterations any rank of the run reported."""
    num_reports: int
    first_report_at: float
    """Unix seconds."""
    last_report_at: float
    measure_only_reports: int = 0
    """Reports of ranks that changed no GPU setting (``--measure_only``)."""
    planned_instructions: int = 0
    """Planned instructions, summed over the run's reports."""
    at_planned_clock: int = 0
    """Of those, instructions that read back their planned clock."""
    mean_clock_mhz: float = 0.0
    """Mean read-back clock of the reports that read one; 0: none did."""

    @property
    def planned_clock_share(self) -> float | None:
        """Share of the run's planned instructions that ran at their planned clock; ``None`` without a plan."""
        return self.at_planned_clock / self.planned_instructions if self.planned_instructions else None


RunKey = tuple[str, str]
"""(job id, run id)"""


def append_spill(path: Path, job_id: str, run_id: str, reports: Iterable[IterationReport]) -> int:
    """Append ``reports`` to the spill file ``path`` (created with its folder); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"job_id": job_id, "run_id": run_id, "rank": r.rank, "iteration": r.iteration, "time": r.time,
                    "energy": r.energy, "plan_name": r.plan_name, "busy_time": r.busy_time,
                    "busy_energy": r.busy_energy, "measure_only": r.measure_only,
                    "clock_mhz": r.clock_mhz, "planned_instructions": r.planned_instructions,
                    "at_planned_clock": r.at_planned_clock})
        for r in reports
    ]
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())  # the process may be killed right after training ends
    return len(lines)


def read_spill(path: Path) -> tuple[dict[RunKey, list[IterationReport]], bool]:
    """The reports of a spill file grouped by (job, run), and whether a cut-short last line was skipped.

    A last line cut short (the process died while appending) cannot be recovered; callers say so.
    Any other unreadable line raises InputError naming it.
    """
    text = path.read_text()
    lines = text.splitlines()
    grouped: dict[RunKey, list[IterationReport]] = {}
    for number, line in enumerate(lines, 1):
        try:
            d = json.loads(line)
            report = IterationReport(int(d["rank"]), int(d["iteration"]), float(d["time"]), float(d["energy"]),
                                     str(d.get("plan_name", "")), busy_time=float(d.get("busy_time", 0.0)),
                                     busy_energy=float(d.get("busy_energy", 0.0)),
                                     measure_only=_flag(d.get("measure_only", False)),
                                     clock_mhz=float(d.get("clock_mhz", 0.0)),
                                     planned_instructions=int(d.get("planned_instructions", 0)),
                                     at_planned_clock=int(d.get("at_planned_clock", 0)))
            key = (str(d["job_id"]), str(d["run_id"]))
        except (ValueError, KeyError, TypeError):
            if number == len(lines) and not text.endswith("\n"):
                return grouped, True
            raise InputError(str(path), f"line {number} is not a Perseus iteration report") from None
        grouped.setdefault(key, []).append(report)
    return grouped, False


def _flag(value: object) -> bool:
    """A JSON boolean (``"false"`` must not read as true); ValueError otherwise."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value
