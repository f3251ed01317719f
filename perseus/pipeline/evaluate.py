"""Exact evaluation of a frequency plan: iteration time and energy from profiled measurements.

Time is the longest path through the DAG using the profiled time of each instruction at its
chosen frequency. Energy is every instruction's profiled energy plus the blocking power for
the time each stage is idle within the iteration::

    E = sum(instruction energy) + P_block * sum_over_stages(T - busy time of that stage)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perseus.errors import InputError
from perseus.pipeline.costs import instruction_measurements
from perseus.pipeline.dag import PipelineDAG
from perseus.plan.model import FrequencyPlan, PlannedInstruction
from perseus.profile.model import Measurement, PipelineProfile


def evaluate_frequencies(
    profile: PipelineProfile, dag: PipelineDAG, frequencies: Sequence[int]
) -> tuple[float, float]:
    """``(iteration_time, energy)`` when node ``i`` of ``dag`` runs at ``frequencies[i]`` MHz."""
    if len(frequencies) != dag.num_nodes:
        raise InputError("plan", f"has {len(frequencies)} instructions, the pipeline has {dag.num_nodes}")
    cache: dict[tuple[int, str, int], dict[int, Measurement]] = {}
    durations = np.empty(dag.num_nodes)
    spent = 0.0
    for node, (inst, freq) in enumerate(zip(dag.nodes, frequencies, strict=True)):
        key = (inst.stage, inst.kind, inst.chunk)
        if key not in cache:
            cache[key] = {m.frequency: m for m in instruction_measurements(profile, dag, *key)}
        m = cache[key].get(int(freq))
        if m is None:
            raise InputError(
                profile.source, f"stage {inst.stage} {inst.kind} has no measurement at {freq} MHz (plan uses it)"
            )
        durations[node] = m.time
        spent += m.energy
    iteration_time = float(dag.finish_times(durations).max())
    idle = dag.num_stages * iteration_time - float(durations.sum())
    return iteration_time, spent + profile.blocking_power * idle


def plan_frequencies(plan: FrequencyPlan, dag: PipelineDAG) -> list[int]:
    """Frequencies of ``plan`` in ``dag`` node order; the plan must list each stage's order exactly."""
    if (plan.schedule, plan.num_stages, plan.num_microbatches) != (dag.schedule, dag.num_stages, dag.num_microbatches):
        raise InputError("plan", "schedule, stages or microbatches differ from the pipeline being evaluated")
    freq = [0] * dag.num_nodes
    for stage, (planned, nodes) in enumerate(zip(plan.stages, dag.stage_nodes, strict=True)):
        if len(planned) != len(nodes):
            raise InputError("plan", f"stage {stage} lists {len(planned)} instructions, the schedule has {len(nodes)}")
        for pos, (p, node) in enumerate(zip(planned, nodes, strict=True)):
            inst = dag.nodes[node]
            if (p.instruction, p.microbatch, p.chunk) != (inst.kind, inst.microbatch, inst.chunk):
                raise InputError(
                    "plan", f"stage {stage} position {pos} is {p.name}, the schedule runs {inst.name} there"
                )
            freq[node] = p.frequency
    return freq


def evaluate_plan(profile: PipelineProfile, plan: FrequencyPlan) -> tuple[float, float]:
    """Exact ``(iteration_time, energy)`` of ``plan`` under ``profile``."""
    dag = PipelineDAG.build(plan.schedule, plan.num_stages, plan.num_microbatches, plan.num_chunks)
    return evaluate_frequencies(profile, dag, plan_frequencies(plan, dag))


def build_plan(
    dag: PipelineDAG,
    frequencies: Sequence[int],
    iteration_time: float,
    energy: float,
    name: str = "",
    shared: dict[tuple[int, int], PlannedInstruction] | None = None,
) -> FrequencyPlan:
    """The plan running node ``i`` of ``dag`` at ``frequencies[i]``, listed per stage in execution order.

    The inverse of :func:`plan_frequencies`; ``iteration_time`` and ``energy`` are taken as given.
    ``shared`` lets many plans of one frontier reuse their (immutable) instruction entries.
    """
    cache = shared if shared is not None else {}

    def entry(node: int) -> PlannedInstruction:
        key = (node, int(frequencies[node]))
        if key not in cache:
            inst = dag.nodes[node]
            cache[key] = PlannedInstruction(inst.kind, inst.microbatch, key[1], inst.chunk)
        return cache[key]

    return FrequencyPlan(
        schedule=dag.schedule,
        num_stages=dag.num_stages,
        num_microbatches=dag.num_microbatches,
        iteration_time=iteration_time,
        energy=energy,
        stages=tuple(tuple(entry(n) for n in nodes) for nodes in dag.stage_nodes),
        num_chunks=dag.num_chunks,
        name=name,
    )
