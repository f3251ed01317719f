"""Checking plans against the pipeline, and loading a stage's schedule from a plan file.

Whatever the source (server or file), a schedule is checked against the order this rank will execute its
instructions in before training starts, so a mismatch fails at once instead of silently applying
frequencies to the wrong instructions.
"""

from __future__ import annotations

from collections.abc import Sequence

from merak_integration.config import RunConfig
from perseus.errors import InputError
from perseus.plan import FrequencyPlan, PowerStateSchedule
from perseus.plan.store import load_plan


def check_plan(plan: FrequencyPlan, cfg: RunConfig, source: str) -> None:
    """The plan must be for this pipeline's schedule, stage count and microbatch count."""
    want = (cfg.schedule, cfg.pp, cfg.num_microbatches)
    got = (plan.schedule, plan.num_stages, plan.num_microbatches)
    if got != want:
        raise InputError(
            source,
            f"plan is for schedule {got[0]}, {got[1]} stages, {got[2]} microbatches; "
            f"this run is {want[0]}, {want[1]} stages, {want[2]} microbatches",
        )


def check_schedule(schedule: PowerStateSchedule, expected: Sequence[str], source: str) -> None:
    names = [p.name for p in schedule.instructions]
    if names != list(expected):
        first = next((i for i, (a, b) in enumerate(zip(names, expected, strict=False)) if a != b), min(len(names), len(expected)))
        raise InputError(
            source,
            f"stage {schedule.stage}: plan instruction #{first} does not match the pipeline's order "
            f"(plan {names[first:first + 3]}, pipeline {list(expected[first:first + 3])})",
        )


def load_plan_schedule(cfg: RunConfig, stage: int, expected: Sequence[str]) -> PowerStateSchedule:
    """This stage's schedule from ``--plan`` (a plan JSON or ``DIR:PLAN``), checked against the pipeline."""
    assert cfg.plan is not None
    plan = load_plan(cfg.plan)
    check_plan(plan, cfg, cfg.plan)
    schedule = plan.stage_schedule(stage)
    check_schedule(schedule, expected, cfg.plan)
    return schedule
