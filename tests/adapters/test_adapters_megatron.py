"""The Megatron-Core adapter on Megatron-Core's own pipeline schedules, 2 gloo ranks on CPU.

``megatron_worker.py`` initialises Megatron's ``parallel_state`` and runs
``forward_backward_pipelining_without_interleaving`` (1F1B) and
``forward_backward_pipelining_with_interleaving`` through the function
``perseus_forward_backward_func(hooks)`` returns. The only thing not as on a GPU node: the
schedules' ``device="cuda"`` bookkeeping tensors and P2P buffers are sent to the CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_helpers import check_ranks, run_ranks, write_plan

pytest.importorskip(
    "megatron.core.pipeline_parallel.schedules",
    reason="megatron-core is not installed (pip install --no-deps megatron-core==0.16.1)",
)

WORKER = Path(__file__).parent / "megatron_worker.py"
STEPS, MICROBATCHES = 2, 4


@pytest.mark.parametrize(("schedule", "chunks"), [("1f1b", 1), ("interleaved-1f1b", 2)])
def test_plan_applied_and_measured(tmp_path: Path, schedule: str, chunks: int) -> None:
    plan = write_plan(tmp_path / "plan.json", schedule, 2, MICROBATCHES, chunks)
    for_rank = str(tmp_path / "rank%d.json")
    run_ranks(WORKER, 2, [str(chunks), str(tmp_path / "plan.json"), for_rank, str(STEPS), str(MICROBATCHES)])
    results = check_ranks(plan, for_rank, 2, STEPS)
    assert [len(step) for step in results[1]["losses"]] == [MICROBATCHES] * STEPS, (
        "the last stage reports every loss"
    )
    assert all(loss > 0 for step in results[1]["losses"] for loss in step)
