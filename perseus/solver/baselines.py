"""Reference plans the paper compares with, built on the same DAG and evaluated exactly."""

from __future__ import annotations

import numpy as np

from perseus.pipeline.costs import OptionTable
from perseus.pipeline.dag import PipelineDAG
from perseus.pipeline.evaluate import evaluate_frequencies
from perseus.plan.model import FrequencyPlan, PlannedInstruction
from perseus.profile.model import PipelineProfile


def uniform_frequency_plan(
    profile: PipelineProfile,
    schedule: str,
    num_stages: int,
    num_microbatches: int,
    frequency: int | None = None,
    num_chunks: int = 1,
    name: str = "",
) -> FrequencyPlan:
    """Every instruction at ``frequency`` (default: each instruction's highest profiled one)."""
    dag = PipelineDAG.build(schedule, num_stages, num_microbatches, num_chunks)
    table = OptionTable.build(profile, dag)
    freqs: list[int] = []
    for node, inst in enumerate(dag.nodes):
        available = table.all_measurements[int(table.node_class[node])]
        freqs.append(max(available) if frequency is None else frequency)
        if freqs[-1] not in available:
            nearest = min(available, key=lambda f: abs(f - freqs[-1]))
            freqs[-1] = nearest
        del inst
    iteration_time, energy = evaluate_frequencies(profile, dag, freqs)
    freq = np.asarray(freqs)
    stages = tuple(
        tuple(
            PlannedInstruction(dag.nodes[n].kind, dag.nodes[n].microbatch, int(freq[n]), dag.nodes[n].chunk)
            for n in nodes
        )
        for nodes in dag.stage_nodes
    )
    return FrequencyPlan(
        schedule=dag.schedule,
        num_stages=num_stages,
        num_microbatches=num_microbatches,
        iteration_time=iteration_time,
        energy=energy,
        stages=stages,
        num_chunks=dag.num_chunks,
        name=name or ("max-frequency" if frequency is None else f"uniform-{frequency}"),
    )


def max_frequency_plan(
    profile: PipelineProfile, schedule: str, num_stages: int, num_microbatches: int, num_chunks: int = 1
) -> FrequencyPlan:
    """The baseline Perseus improves on: every instruction at its highest profiled frequency."""
    return uniform_frequency_plan(profile, schedule, num_stages, num_microbatches, None, num_chunks)
