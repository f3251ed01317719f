"""Instruction profiles: time and energy of every pipeline instruction at every GPU frequency.

A profile is what the profiler measures and what the planner consumes. It is immutable and
holds no I/O; :mod:`perseus.profile.io` reads and writes it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

#: The instruction kinds a pipeline stage executes per microbatch.
INSTRUCTION_KINDS: tuple[str, ...] = ("forward", "backward")


@dataclass(frozen=True, order=True)
class Measurement:
    """One instruction run at one locked GPU frequency."""

    frequency: int
    """Graphics clock in MHz."""
    time: float
    """Wall time in seconds."""
    energy: float
    """GPU energy in joules."""

    def effective_energy(self, blocking_power: float) -> float:
        """Energy above what the GPU would draw anyway while blocked for the same time.

        Iteration energy is ``sum(energy) + P_block * sum_stages(T - busy)``, which equals
        ``sum(energy - P_block * time) + P_block * S * T``: for a fixed iteration time only
        this difference matters, so the solver optimises it.
        """
        return self.energy - blocking_power * self.time


@dataclass(frozen=True)
class InstructionProfile:
    """All measurements of one (stage, instruction kind), fastest frequency first."""

    stage: int
    instruction: str
    measurements: tuple[Measurement, ...]
    _by_frequency: Mapping[int, Measurement] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.measurements, key=lambda m: -m.frequency))
        object.__setattr__(self, "measurements", ordered)
        object.__setattr__(self, "_by_frequency", {m.frequency: m for m in ordered})

    @property
    def frequencies(self) -> tuple[int, ...]:
        """Profiled frequencies, highest first."""
        return tuple(m.frequency for m in self.measurements)

    @property
    def max_frequency(self) -> int:
        return self.measurements[0].frequency

    def at(self, frequency: int) -> Measurement:
        """The measurement at ``frequency``; raises ``KeyError`` naming it if it was not profiled."""
        try:
            return self._by_frequency[frequency]
        except KeyError:
            raise KeyError(
                f"stage {self.stage} {self.instruction} has no measurement at {frequency} MHz"
            ) from None


@dataclass(frozen=True)
class PipelineProfile:
    """Profiles of every (stage, instruction) of a pipeline, plus the GPU's blocking power."""

    instructions: Mapping[tuple[int, str], InstructionProfile]
    blocking_power: float
    """Watts a GPU draws while blocked on point-to-point communication."""
    source: str = "<memory>"
    """Where the profile came from (a path), for error messages and plan metadata."""

    @property
    def num_stages(self) -> int:
        return 1 + max(stage for stage, _ in self.instructions)

    def __getitem__(self, key: tuple[int, str]) -> InstructionProfile:
        return self.instructions[key]

    def __iter__(self) -> Iterator[InstructionProfile]:
        return iter(self.instructions[k] for k in sorted(self.instructions))

    def frequencies(self) -> tuple[int, ...]:
        """Every frequency that appears anywhere in the profile, highest first."""
        return tuple(sorted({m.frequency for p in self for m in p.measurements}, reverse=True))
