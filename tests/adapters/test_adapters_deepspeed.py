"""The DeepSpeed adapter on DeepSpeed's real ``PipelineEngine``, 2 gloo ranks on CPU.

``deepspeed_worker.py`` builds a ``PipelineModule``, ``deepspeed.initialize`` returns the
pipeline engine (DeepSpeed's CPU accelerator), and ``attach_perseus(engine, hooks)`` is the
one added call; ``engine.train_batch`` then runs DeepSpeed's 1F1B ``TrainSchedule``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_helpers import check_ranks, run_ranks, write_plan

pytest.importorskip(
    "deepspeed.runtime.pipe.engine",
    reason="DeepSpeed is not installed; it is not in requirements.lock (PyPI has only an sdist to build); "
    "DS_BUILD_OPS=0 pip install --no-deps deepspeed==0.19.8 hjson py-cpuinfo msgpack ninja einops",
)

WORKER = Path(__file__).parent / "deepspeed_worker.py"
STEPS, MICROBATCHES = 2, 4


def test_plan_applied_and_measured(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.json", "1f1b", 2, MICROBATCHES)
    for_rank = str(tmp_path / "rank%d.json")
    run_ranks(WORKER, 2, [str(tmp_path / "plan.json"), for_rank, str(STEPS), str(MICROBATCHES)])
    results = check_ranks(plan, for_rank, 2, STEPS)
    assert len(results[0]["losses"]) == STEPS and all(loss > 0 for loss in results[0]["losses"])
