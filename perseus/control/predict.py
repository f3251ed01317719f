"""What a plan predicts each stage measures: its busy time and busy energy per iteration.

*Busy* is the time (and energy) a stage spends inside its instructions, without the waits for other
stages or pipelines: the part of an iteration a stage's own GPU decides, so it compares across
pipelines and with the profile whatever the others do.
"""

from __future__ import annotations

from perseus.pipeline.costs import instruction_measurements
from perseus.pipeline.dag import PipelineDAG
from perseus.plan import FrequencyPlan
from perseus.profile import PipelineProfile


def stage_busy(profile: PipelineProfile, plan: FrequencyPlan) -> tuple[tuple[float, float], ...] | None:
    """Per stage (busy seconds, busy joules) of one iteration of ``plan``; None if the profile lacks a clock."""
    dag = PipelineDAG.build(plan.schedule, plan.num_stages, plan.num_microbatches, plan.num_chunks)
    cache: dict[tuple[int, str, int], dict[int, tuple[float, float]]] = {}
    out = []
    for stage, planned in enumerate(plan.stages):
        t = e = 0.0
        for p in planned:
            key = (stage, p.instruction, p.chunk)
            if key not in cache:
                try:
                    cache[key] = {m.frequency: (m.time, m.energy) for m in instruction_measurements(profile, dag, *key)}
                except Exception:  # a profile that does not fit the plan predicts nothing
                    return None
            m = cache[key].get(p.frequency)
            if m is None:
                return None
            t, e = t + m[0], e + m[1]
        out.append((t, e))
    return tuple(out)
