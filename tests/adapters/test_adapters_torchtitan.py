"""The torchtitan adapter on torchtitan's own pipeline-parallel setup, 2 gloo ranks on CPU.

``torchtitan_worker.py`` builds the pipeline with torchtitan's ``pipeline_llm`` (module
split, stages on its pipeline mesh, the schedule its config names) and adds the one call
``attach_perseus(schedule, PlanHooks.from_plan(...))``. Each rank must then run its
instructions in the plan's order, at the plan's clocks, and report every iteration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_helpers import check_ranks, run_ranks, write_plan

pytest.importorskip(
    "torchtitan.distributed.pipeline_parallel",
    reason="torchtitan is not installed; it is not in requirements.lock (it pulls datasets, tensorboard, "
    "wandb); pip install --no-deps torchtitan==0.3.0 spmd_types==0.2.3 (see merak_integration/ADAPTERS.md)",
)

WORKER = Path(__file__).parent / "torchtitan_worker.py"
STEPS, MICROBATCHES = 3, 4


@pytest.mark.parametrize(
    ("torchtitan_schedule", "schedule", "chunks"),
    [("1F1B", "1f1b", 1), ("Interleaved1F1B", "interleaved-1f1b", 2)],
)
def test_plan_applied_and_measured(
    tmp_path: Path, torchtitan_schedule: str, schedule: str, chunks: int
) -> None:
    plan = write_plan(tmp_path / "plan.json", schedule, 2, MICROBATCHES, chunks)
    for_rank = str(tmp_path / "rank%d.json")
    run_ranks(
        WORKER, 2, [torchtitan_schedule, str(tmp_path / "plan.json"), for_rank, str(STEPS), str(MICROBATCHES)]
    )
    results = check_ranks(plan, for_rank, 2, STEPS)
    assert len(results[1]["losses"]) == STEPS and all(loss > 0 for loss in results[1]["losses"])
