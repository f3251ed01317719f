"""Per-instruction time/energy options of a pipeline DAG, laid out as arrays for the solver.

Instructions of the same (stage, kind, chunk) share one *class* of options. A profile
either has one stage per virtual stage (``num_stages * num_chunks`` stages, in model order)
or one per GPU; in the latter case, with several chunks per GPU, each chunk is charged an
equal share of its stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from perseus.errors import InputError
from perseus.pipeline.dag import FloatArray, IntArray, PipelineDAG
from perseus.pipeline.instruction import SPLIT_BACKWARD_SCHEDULES, virtual_stage
from perseus.profile.model import InstructionProfile, Measurement, PipelineProfile
from perseus.profile.pareto import pareto_options


def instruction_measurements(
    profile: PipelineProfile, dag: PipelineDAG, stage: int, kind: str, chunk: int
) -> list[Measurement]:
    """Measurements of one (stage, kind, chunk) of ``dag``, scaled for interleaving if needed."""
    total = dag.num_stages * dag.num_chunks
    if profile.num_stages == total:
        return list(_instruction(profile, virtual_stage(dag.schedule, dag.num_stages, stage, chunk), kind).measurements)
    if profile.num_stages == dag.num_stages:
        share = 1.0 / dag.num_chunks
        source = _instruction(profile, stage, kind)
        return [Measurement(m.frequency, m.time * share, m.energy * share) for m in source.measurements]
    raise InputError(
        profile.source,
        f"profile has {profile.num_stages} stages; a {dag.schedule} pipeline of {dag.num_stages} stages"
        + (f" x {dag.num_chunks} chunks needs {dag.num_stages} or {total}" if dag.num_chunks > 1 else f" needs {total}"),
    )


def check_profile_kinds(profile: PipelineProfile, schedule: str) -> None:
    """Raise InputError, saying how to fix it, if ``schedule`` splits backwards and ``profile`` does not."""
    if schedule in SPLIT_BACKWARD_SCHEDULES and not profile.has_split_backward():
        stage = next(s for s in range(profile.num_stages) if (s, "backward_input") not in profile.instructions)
        _missing(profile, stage, "backward_input")


def _instruction(profile: PipelineProfile, stage: int, kind: str) -> InstructionProfile:
    try:
        return profile[(stage, kind)]
    except KeyError:
        _missing(profile, stage, kind)


def _missing(profile: PipelineProfile, stage: int, kind: str) -> NoReturn:
    raise InputError(
        profile.source,
        f"stage {stage} has no {kind} measurements; zero-bubble schedules need the backward split into "
        "backward_input and backward_weight (profile with --train_schedule zb, or derive them with "
        "`perseus optimize --backward-input-share`)",
    )


@dataclass(frozen=True, eq=False)
class OptionTable:
    """Pareto-optimal frequency options of every node, fastest first, padded to a rectangle.

    ``time[c, k]``, ``cost[c, k]`` (effective energy) and ``energy[c, k]`` describe option
    ``k`` of class ``c``; ``count[c]`` options are real, the rest repeat the last one.
    """

    dag: PipelineDAG
    blocking_power: float
    node_class: IntArray
    frequency: npt.NDArray[np.int64]
    time: FloatArray
    energy: FloatArray
    cost: FloatArray
    count: IntArray
    all_measurements: tuple[dict[int, Measurement], ...]
    """Every profiled measurement per class by frequency (Pareto or not), for exact evaluation."""

    @classmethod
    def build(cls, profile: PipelineProfile, dag: PipelineDAG) -> OptionTable:
        classes: dict[tuple[int, str, int], int] = {}
        node_class = np.empty(dag.num_nodes, dtype=np.int64)
        for node, inst in enumerate(dag.nodes):
            key = (inst.stage, inst.kind, inst.chunk)
            node_class[node] = classes.setdefault(key, len(classes))
        per_class = [instruction_measurements(profile, dag, *key) for key in classes]
        options = [pareto_options(ms, profile.blocking_power) for ms in per_class]
        width = max(len(o) for o in options)
        shape = (len(options), width)
        frequency = np.zeros(shape, dtype=np.int64)
        time, energy = np.zeros(shape), np.zeros(shape)
        for c, opts in enumerate(options):
            padded = opts + [opts[-1]] * (width - len(opts))
            frequency[c] = [m.frequency for m in padded]
            time[c] = [m.time for m in padded]
            energy[c] = [m.energy for m in padded]
        return cls(
            dag=dag,
            blocking_power=profile.blocking_power,
            node_class=node_class,
            frequency=frequency,
            time=time,
            energy=energy,
            cost=energy - profile.blocking_power * time,
            count=np.array([len(o) for o in options], dtype=np.int64),
            all_measurements=tuple({m.frequency: m for m in ms} for ms in per_class),
        )

    @property
    def node_count(self) -> IntArray:
        """Number of options of every node."""
        return self.count[self.node_class]

    def durations(self, choice: IntArray) -> FloatArray:
        return self.time[self.node_class, choice]

    def frequencies(self, choice: IntArray) -> npt.NDArray[np.int64]:
        return self.frequency[self.node_class, choice]

    def iteration_energy(self, choice: IntArray, iteration_time: float) -> float:
        """``sum(energy) + P_block * (S * T - sum(time))``: instructions plus every stage's blocked time."""
        busy = float(self.time[self.node_class, choice].sum())
        spent = float(self.energy[self.node_class, choice].sum())
        return spent + self.blocking_power * (self.dag.num_stages * iteration_time - busy)
