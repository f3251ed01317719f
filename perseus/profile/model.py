"""Instruction profiles: time and energy of every pipeline instruction at every GPU frequency.

A profile is what the profiler measures and what the planner consumes. It is immutable and
holds no I/O; :mod:`perseus.profile.io` reads and writes it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

#: The instruction kinds every stage of every profile has: a forward and a fused backward.
INSTRUCTION_KINDS: tuple[str, ...] = ("forward", "backward")
#: A backward split as zero-bubble schedules run it: the input gradient (sent upstream at once)
#: and the weight gradient (deferred to fill bubbles). Optional in a profile, always both.
SPLIT_KINDS: tuple[str, ...] = ("backward_input", "backward_weight")
#: Every instruction kind a plan, a DAG or a profile row may name.
ALL_KINDS: tuple[str, ...] = INSTRUCTION_KINDS + SPLIT_KINDS


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
    """Profiles of every (stage, instruction) of a pipeline, plus the GPU's blocking power.

    A stage measured only split (``backward_input`` and ``backward_weight``, as a zero-bubble
    run profiles it) also gets a fused ``backward``: at every frequency both parts share, the
    sum of their time and energy, which is what running them back to back costs.
    """

    instructions: Mapping[tuple[int, str], InstructionProfile]
    blocking_power: float
    """Watts a GPU draws while blocked on point-to-point communication."""
    source: str = "<memory>"
    """Where the profile came from (a path), for error messages and plan metadata."""

    def __post_init__(self) -> None:
        fused: dict[tuple[int, str], InstructionProfile] = {}
        for stage, kind in self.instructions:
            split = [self.instructions.get((stage, k)) for k in SPLIT_KINDS]
            if kind == "forward" and (stage, "backward") not in self.instructions and split[0] and split[1]:
                fused[(stage, "backward")] = fused_backward(split[0], split[1])
        if fused:
            object.__setattr__(self, "instructions", {**self.instructions, **fused})

    @property
    def num_stages(self) -> int:
        return 1 + max(stage for stage, _ in self.instructions)

    def has_split_backward(self) -> bool:
        """Whether every stage has ``backward_input`` and ``backward_weight`` measurements."""
        return all((stage, kind) in self.instructions for stage in range(self.num_stages) for kind in SPLIT_KINDS)

    def __getitem__(self, key: tuple[int, str]) -> InstructionProfile:
        return self.instructions[key]

    def __iter__(self) -> Iterator[InstructionProfile]:
        return iter(self.instructions[k] for k in sorted(self.instructions))

    def frequencies(self) -> tuple[int, ...]:
        """Every frequency that appears anywhere in the profile, highest first."""
        return tuple(sorted({m.frequency for p in self for m in p.measurements}, reverse=True))


def fused_backward(backward_input: InstructionProfile, backward_weight: InstructionProfile) -> InstructionProfile:
    """The fused backward of one stage: input and weight gradient back to back, per common frequency."""
    weight = {m.frequency: m for m in backward_weight.measurements}
    return InstructionProfile(
        backward_input.stage,
        "backward",
        tuple(
            Measurement(m.frequency, m.time + weight[m.frequency].time, m.energy + weight[m.frequency].energy)
            for m in backward_input.measurements
            if m.frequency in weight
        ),
    )


def split_backward(profile: PipelineProfile, input_share: float) -> PipelineProfile:
    """``profile`` with every fused backward split into ``backward_input`` and ``backward_weight``.

    The input-gradient part takes ``input_share`` of the backward's time and energy at every
    frequency, the weight-gradient part the rest: both are the same kind of matrix products
    (activation gradient times weights, activations times output gradient), so they draw the
    same power and scale alike with the clock. Stages measured split keep their measurements.
    """
    if not 0.0 < input_share < 1.0:
        raise ValueError(f"backward input share must lie strictly between 0 and 1, got {input_share}")
    derived: dict[tuple[int, str], InstructionProfile] = {}
    for (stage, kind), fused in profile.instructions.items():
        if kind != "backward" or (stage, SPLIT_KINDS[0]) in profile.instructions:
            continue
        for part, share in zip(SPLIT_KINDS, (input_share, 1.0 - input_share), strict=True):
            derived[(stage, part)] = InstructionProfile(
                stage, part, tuple(Measurement(m.frequency, m.time * share, m.energy * share) for m in fused.measurements)
            )
    return PipelineProfile({**profile.instructions, **derived}, profile.blocking_power, profile.source)
