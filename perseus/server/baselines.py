"""The baselines the Perseus paper compares with, as servable plans.

* ``max-frequency``: every instruction at its highest profiled frequency.
* ``global-power-limit``: one power limit for every GPU (Zeus-style); derived as the
  least-energy uniform clock within the slowdown bound, converted to watts.
* ``per-stage-power-limit``: one power limit per stage, each stage slowed until its
  compute time meets the slowest stage's (times the slowdown bound).

Power limits are derived from the profile's average power (energy / time) at the chosen
clock, so a GPU capped at that many watts runs at about that clock. Each baseline carries
an equivalent clock plan so the server can report its expected time and energy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from perseus.errors import InputError
from perseus.pipeline.evaluate import evaluate_plan
from perseus.pipeline.schedules import stage_orders
from perseus.plan import FrequencyPlan, PlannedInstruction
from perseus.profile import ALL_KINDS, INSTRUCTION_KINDS, PipelineProfile


@dataclass(frozen=True)
class BaselinePlan:
    plan: FrequencyPlan
    power_limits: tuple[float, ...] | None
    """Watts per stage; None for clock plans."""


def stage_power(profile: PipelineProfile, stage: int, frequency: int) -> float:
    """Average power (W) of a stage's forward+backward pair at ``frequency``."""
    ms = [profile[(stage, kind)].at(frequency) for kind in INSTRUCTION_KINDS]
    return sum(m.energy for m in ms) / sum(m.time for m in ms)


def stage_compute_time(profile: PipelineProfile, stage: int, frequency: int) -> float:
    return sum(profile[(stage, kind)].at(frequency).time for kind in INSTRUCTION_KINDS)


def stage_frequencies(profile: PipelineProfile, stage: int) -> list[int]:
    """Frequencies profiled for every instruction kind of ``stage``, highest first."""
    common = set.intersection(*(set(profile[(stage, k)].frequencies) for k in INSTRUCTION_KINDS))
    return sorted(common, reverse=True)


def clock_plan(
    profile: PipelineProfile,
    schedule: str,
    num_stages: int,
    num_microbatches: int,
    num_chunks: int,
    frequency_of: Sequence[dict[str, int]],
    name: str,
) -> FrequencyPlan:
    """A plan running each stage's instruction kinds at fixed clocks, evaluated exactly."""
    orders = stage_orders(schedule, num_stages, num_microbatches, num_chunks)
    stages = tuple(
        tuple(PlannedInstruction(i.kind, i.microbatch, frequency_of[s][i.kind], i.chunk) for i in order)
        for s, order in enumerate(orders)
    )
    chunks = 1 + max(i.chunk for order in orders for i in order)
    draft = FrequencyPlan(schedule, num_stages, num_microbatches, 0.0, 0.0, stages, chunks, name)
    time, energy = evaluate_plan(profile, draft)
    return FrequencyPlan(schedule, num_stages, num_microbatches, time, energy, stages, chunks, name)


def _uniform(profile: PipelineProfile, per_stage: Sequence[int]) -> list[dict[str, int]]:
    return [dict.fromkeys(ALL_KINDS, f) for f in per_stage]


def build_baseline(
    profile: PipelineProfile,
    schedule: str,
    num_stages: int,
    num_microbatches: int,
    num_chunks: int,
    kind: str,
    max_slowdown: float = 1.0,
    power_limits: Sequence[float] = (),
) -> BaselinePlan:
    """The plan (and power limits) of baseline ``kind`` for this job."""
    S = num_stages
    args = (profile, schedule, S, num_microbatches, num_chunks)
    if kind == "max-frequency":
        freqs = [{k: profile[(s, k)].max_frequency for k in ALL_KINDS if (s, k) in profile.instructions} for s in range(S)]
        return BaselinePlan(clock_plan(*args, freqs, "baseline:max-frequency"), None)
    if kind not in ("global-power-limit", "per-stage-power-limit"):
        raise InputError("target.baseline.kind", f"unknown baseline {kind!r}")
    name = f"baseline:{kind}"
    if power_limits:
        # Explicit watts: one for every stage, or one per stage.
        watts = list(power_limits) * S if len(power_limits) == 1 else list(power_limits)
        if len(watts) != S:
            raise InputError("target.baseline.power_limits", f"give 1 or {S} values, got {len(power_limits)}")
        per_stage = [_clock_under(profile, s, w) for s, w in enumerate(watts)]
        return BaselinePlan(clock_plan(*args, _uniform(profile, per_stage), name), tuple(watts))
    if kind == "global-power-limit":
        common = set.intersection(*(set(stage_frequencies(profile, s)) for s in range(S)))
        if not common:
            raise InputError("profile", "no frequency was profiled on every stage; give explicit power limits")
        candidates = [(clock_plan(*args, _uniform(profile, [f] * S), name), f) for f in sorted(common, reverse=True)]
        bound = candidates[0][0].iteration_time * max_slowdown * (1 + 1e-12)
        plan, freq = min((pf for pf in candidates if pf[0].iteration_time <= bound), key=lambda pf: pf[0].energy)
        limit = max(stage_power(profile, s, freq) for s in range(S))
        return BaselinePlan(plan, (float(math.ceil(limit)),) * S)
    # Per-stage: balance stage compute times to the slowest stage at max clocks.
    fmax = [stage_frequencies(profile, s)[0] for s in range(S)]
    bound = max(stage_compute_time(profile, s, fmax[s]) for s in range(S)) * max_slowdown * (1 + 1e-12)
    per_stage = []
    for s in range(S):
        ok = [f for f in stage_frequencies(profile, s) if stage_compute_time(profile, s, f) <= bound]
        per_stage.append(min(ok) if ok else fmax[s])
    plan = clock_plan(*args, _uniform(profile, per_stage), name)
    watts_per_stage = tuple(float(math.ceil(stage_power(profile, s, f))) for s, f in enumerate(per_stage))
    return BaselinePlan(plan, watts_per_stage)


def _clock_under(profile: PipelineProfile, stage: int, watts: float) -> int:
    """The highest clock whose average power fits under ``watts`` (the lowest clock if none does)."""
    freqs = stage_frequencies(profile, stage)
    for f in freqs:
        if stage_power(profile, stage, f) <= watts:
            return f
    return freqs[-1]
