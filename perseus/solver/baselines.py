"""Reference plans the paper compares with, built on the same DAG and evaluated exactly."""

from __future__ import annotations

from perseus.pipeline.costs import OptionTable
from perseus.pipeline.dag import PipelineDAG
from perseus.pipeline.evaluate import build_plan, evaluate_frequencies
from perseus.plan.model import FrequencyPlan
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
    """Every instruction at ``frequency`` (nearest profiled one), or at its highest profiled one if ``None``."""
    dag = PipelineDAG.build(schedule, num_stages, num_microbatches, num_chunks)
    table = OptionTable.build(profile, dag)
    freqs: list[int] = []
    for node in range(dag.num_nodes):
        available = table.all_measurements[int(table.node_class[node])]
        wanted = max(available) if frequency is None else frequency
        freqs.append(min(available, key=lambda f: abs(f - wanted)))
    iteration_time, energy = evaluate_frequencies(profile, dag, freqs)
    label = name or ("max-frequency" if frequency is None else f"uniform-{frequency}")
    return build_plan(dag, freqs, iteration_time, energy, label)


def max_frequency_plan(
    profile: PipelineProfile, schedule: str, num_stages: int, num_microbatches: int, num_chunks: int = 1
) -> FrequencyPlan:
    """The baseline Perseus improves on: every instruction at its highest profiled frequency."""
    return uniform_frequency_plan(profile, schedule, num_stages, num_microbatches, None, num_chunks)
