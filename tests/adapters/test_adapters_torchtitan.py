"""The torchtitan adapter on torchtitan's own pipeline-parallel setup, 2 gloo ranks on CPU.

``torchtitan_worker.py`` builds the pipeline with torchtitan's ``pipeline_llm`` (module
split, stages on its pipeline mesh, the schedule its config names) and adds the one call
``attach_perseus(schedule, PlanHooks.from_plan(...))``. Each rank must then run its
instructions in the plan's order, at the plan's clocks, and report every iteration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapter_helpers import BACKWARD_MHZ, FORWARD_MHZ, run_ranks, write_plan

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
    out = tmp_path / "rank{}.json"
    for_rank = str(out).replace("{}", "%d")
    run_ranks(
        WORKER, 2, [torchtitan_schedule, str(tmp_path / "plan.json"), for_rank, str(STEPS), str(MICROBATCHES)]
    )
    for rank in range(2):
        result = json.loads(Path(for_rank % rank).read_text())
        planned = [(p.name, p.frequency) for p in plan.stage_schedule(rank).instructions]
        assert len(result["iterations"]) == STEPS
        for iteration in result["iterations"]:
            assert iteration["time"] > 0 and iteration["energy"] > 0
            assert [(name, mhz) for name, mhz, _ in iteration["instructions"]] == planned
        # The controller applies clocks off the compute thread, so an instruction may end before
        # its clock lands; after the first iteration every clock the GPU ran at is a planned one.
        applied = {a for it in result["iterations"][1:] for _, _, a in it["instructions"]}
        assert applied <= {FORWARD_MHZ, BACKWARD_MHZ} and applied, applied
        assert {mhz for _, mhz in planned} == {FORWARD_MHZ, BACKWARD_MHZ}
        reports = [json.loads(line) for line in Path(for_rank % rank + ".jsonl").read_text().splitlines()]
        assert [r["stage"] for r in reports] == [rank] * STEPS and reports[0]["plan"] == plan.name
    last = json.loads(Path(for_rank % 1).read_text())["losses"]
    assert len(last) == STEPS and all(loss > 0 for loss in last)
