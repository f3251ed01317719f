"""Plans are decoded from their compact rows on demand: what a rank is served after the decoded-plan
cache evicted the plan, and after a restart, equals the plan stored in the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from server_helpers import profile_csv, profile_slice, wait_until

from perseus.plan import FrequencyPlan
from perseus.plan.store import decode_plan
from perseus.server.core import SchedulerCore
from perseus.server.db import make_engine, upgrade
from perseus.server.types import JobSpec

JOB = "lazy"
STAGES, MICROBATCHES = 3, 4
ONE_PLAN = 2 * STAGES * MICROBATCHES
"""Instructions of one plan (a forward and a backward per microbatch and stage): a cache of one plan."""


def _stored_plans(db: Path) -> dict[int, FrequencyPlan]:
    """Every plan row of the job, decoded straight from the database file."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, plan_json FROM scheduler_plans WHERE job_id = ?", (JOB,)).fetchall()
    return {plan_id: decode_plan(text) for plan_id, text in rows}


def _core(db: Path) -> SchedulerCore:
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    return SchedulerCore(engine, decoded_instructions=ONE_PLAN)


def _assert_served_as_stored(core: SchedulerCore, stored: dict[int, FrequencyPlan], ranks: range) -> set[int]:
    served = set()
    for rank in ranks:
        view = core.schedule_for(JOB, rank)
        assert view.mode == "plan"
        plan = stored[view.plan_id]
        assert (view.plan_name, view.expected_iteration_time, view.expected_energy) == (
            plan.name, plan.iteration_time, plan.energy)
        assert view.instructions == plan.stages[view.stage]
        served.add(view.plan_id)
    return served


def test_plans_served_after_eviction_and_restart_equal_the_stored_rows(tmp_path: Path) -> None:
    db = tmp_path / "perseus.db"
    profile = profile_slice(STAGES, freq_step=3)
    core = _core(db)
    try:
        core.register_job(JobSpec(JOB, "m", "p", "1f1b", STAGES, MICROBATCHES, dp_degree=2),
                          profile_csv=profile_csv(profile))
        for rank in range(2 * STAGES):
            core.register_rank(JOB, rank, rank % STAGES, rank // STAGES, "A100", profile.frequencies())
        wait_until(lambda: core.frontier(JOB)[0] == "serving", 120, "the frontier is ready")
        stored = _stored_plans(db)
        assert len(core.frontier(JOB)[1]) >= 3
        # Pipeline 1 straggles: pipeline 0 runs a slower plan, so two plans alternate in a one-plan cache.
        core.report_straggler(JOB, 1, 1.3)
        loads = core._plan_cache.loads
        for _ in range(3):
            served = _assert_served_as_stored(core, stored, range(2 * STAGES))
        assert len(served) == 2
        assert len(core._plan_cache) == 1
        assert core._plan_cache.loads - loads >= 6, "each switch between the two plans decodes a row again"
        # The frontier export (GetFrontier with plans) decodes rows without caching them.
        _, frontier, _ = core.frontier(JOB)
        exported = [FrequencyPlan.from_json(text) for text in core.plan_jsons(JOB, frontier)]
        assert exported == [stored[p.id] for p in frontier]
        assert len(core._plan_cache) == 1
    finally:
        core.close()

    restarted = _core(db)
    try:
        assert len(restarted._plan_cache) == 0  # a restart reads the summaries only
        assert _assert_served_as_stored(restarted, stored, range(2 * STAGES)) == served
        # The closed loop's per-stage prediction decodes the plan it is asked for by name.
        name = stored[min(served)].name
        job = restarted._jobs[JOB]
        assert restarted._plan_named(job, name) == next(p for p in stored.values() if p.name == name)
        # A re-profile deletes the frontier rows: their decoded plans are forgotten (ids may be reused).
        restarted.reprofile_job(JOB)
        assert len(restarted._plan_cache) == 0
    finally:
        restarted.close()
