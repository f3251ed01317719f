"""The profiling sweep: which frequency each stage measures next, and when it is done.

Each stage sweeps the job's frequency list from highest to lowest. Every report gives the
per-instruction-kind time and energy at one frequency; an instruction kind stops early once
its energy rose ``early_stop_rises`` times in a row (lower clocks only cost more from there).
A stage is done when every kind stopped or ran out of frequencies. A clock a rank of a stage
could not hold under load (a power cap, a thermal limit, a driver that snaps to a neighbour) is
dropped from that stage's sweep; with fewer than :data:`MIN_SWEEP_CLOCKS` left the job cannot be
profiled. A rank whose energy counter did not advance at a clock it held drops nothing: the job's
profiling fails (the counter is the GPU's; every clock would read 0 J). Pure functions: the server rebuilds the state from stored reports (and the dropped clocks
kept with the settings) after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from perseus.errors import InputError
from perseus.profile import INSTRUCTION_KINDS, SPLIT_KINDS

#: stage -> frequency -> kind -> rank -> (time, energy)
Measured = dict[int, dict[int, dict[str, dict[int, tuple[float, float]]]]]

MIN_SWEEP_CLOCKS = 2
"""Clocks a stage must keep in its sweep: a frontier trades time for energy between at least two."""
MAX_READ_BACK = 16
"""Read-back clocks a rank may name when it could not hold one (what the log shows of them)."""


@dataclass(frozen=True)
class ProfilingSettings:
    """How the server drives a job's sweep."""

    warmup_iterations: int = 2
    measure_iterations: int = 3
    early_stop_rises: int = 3
    frequencies: tuple[int, ...] = ()
    """Frequencies to sweep, highest first; empty until the first rank registers."""
    dropped: tuple[tuple[int, int], ...] = ()
    """(stage, frequency) pairs a rank could not hold: left out of that stage's sweep and profile."""

    def __post_init__(self) -> None:
        for name in ("warmup_iterations", "measure_iterations", "early_stop_rises"):
            value = getattr(self, name)
            if not 0 <= value <= 10_000:
                raise InputError(f"profiling.{name}", f"must be in [0, 10000], got {value}")
        if self.measure_iterations < 1:
            raise InputError("profiling.measure_iterations", "must be >= 1")
        if self.early_stop_rises < 1:
            raise InputError("profiling.early_stop_rises", "must be >= 1")
        check_frequencies(self.frequencies, "profiling.frequencies")
        if len(self.dropped) > 1 << 20:  # stages x frequencies: far above any real job
            raise InputError("profiling.dropped", f"at most {1 << 20} entries, got {len(self.dropped)}")

    def stage_frequencies(self, stage: int) -> tuple[int, ...]:
        """The stage's sweep: the job's frequencies less those dropped for it, highest first."""
        gone = {f for st, f in self.dropped if st == stage}
        return tuple(f for f in self.frequencies if f not in gone)

    def dropped_note(self) -> str:
        """One line for ``perseus jobs``: which clocks each stage dropped (empty: none)."""
        by_stage: dict[int, list[int]] = {}
        for stage, freq in sorted(self.dropped):
            by_stage.setdefault(stage, []).append(freq)
        if not by_stage:
            return ""
        parts = [f"stage {st}: {', '.join(map(str, sorted(fs, reverse=True)))} MHz" for st, fs in by_stage.items()]
        return "dropped clocks a rank could not hold under load (" + "; ".join(parts) + ")"

    def to_json(self) -> str:
        return json.dumps(
            {
                "warmup_iterations": self.warmup_iterations,
                "measure_iterations": self.measure_iterations,
                "early_stop_rises": self.early_stop_rises,
                "frequencies": list(self.frequencies),
                "dropped": [list(d) for d in self.dropped],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ProfilingSettings:
        data = json.loads(text or "{}")
        return cls(
            warmup_iterations=int(data.get("warmup_iterations", 2)),
            measure_iterations=int(data.get("measure_iterations", 3)),
            early_stop_rises=int(data.get("early_stop_rises", 3)),
            frequencies=tuple(int(f) for f in data.get("frequencies", ())),
            dropped=tuple((int(st), int(f)) for st, f in data.get("dropped", ())),
        )


def check_frequencies(frequencies: Sequence[int], where: str) -> tuple[int, ...]:
    """Validate a frequency list and return it sorted highest first without duplicates."""
    if len(frequencies) > 4096:
        raise InputError(where, f"at most 4096 frequencies, got {len(frequencies)}")
    for f in frequencies:
        if not 0 < f <= 100_000:
            raise InputError(where, f"frequencies must be in (0, 100000] MHz, got {f}")
    return tuple(sorted(set(frequencies), reverse=True))


def averaged(per_rank: Mapping[int, tuple[float, float]]) -> tuple[float, float]:
    """Mean (time, energy) over the ranks that reported."""
    n = len(per_rank)
    return (sum(t for t, _ in per_rank.values()) / n, sum(e for _, e in per_rank.values()) / n)


def next_frequency(
    frequencies: Sequence[int],
    measured: Mapping[int, Mapping[str, Mapping[int, tuple[float, float]]]],
    early_stop_rises: int,
) -> int | None:
    """The next frequency a stage should measure, or None when its sweep is done.

    Ranks of a zero-bubble schedule report the backward split; their sweep waits on its parts.
    """
    position = {f: i for i, f in enumerate(frequencies)}
    pending: list[int] = []
    split = any(kind in per_kind for per_kind in measured.values() for kind in SPLIT_KINDS)
    for kind in ("forward", *SPLIT_KINDS) if split else INSTRUCTION_KINDS:
        previous: float | None = None
        rises = 0
        for f in frequencies:
            reports = measured.get(f, {}).get(kind)
            if not reports:
                pending.append(f)
                break
            energy = averaged(reports)[1]
            rises = rises + 1 if previous is not None and energy > previous else 0
            if rises >= early_stop_rises:
                break
            previous = energy
    return min(pending, key=position.__getitem__) if pending else None


def nearest(frequencies: Sequence[int], target: int) -> int:
    """The entry of ``frequencies`` closest to ``target`` (the higher one on a tie)."""
    return min(frequencies, key=lambda f: (abs(f - target), -f))
