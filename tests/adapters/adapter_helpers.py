"""Plans and gloo process launching shared by the framework adapter tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from merak_integration.adapters.plan_hooks import PlanHooks
from perseus.pipeline.schedules import stage_orders
from perseus.plan import FrequencyPlan, PlannedInstruction

REPO = Path(__file__).resolve().parents[2]
# Clocks the simulated A100 supports, both below its default 1410 MHz; forwards and backwards
# get different ones so a frequency applied to the wrong kind of instruction shows.
FORWARD_MHZ, BACKWARD_MHZ = 1200, 1305


def write_plan(
    path: Path, schedule: str, num_stages: int, num_microbatches: int, num_chunks: int = 1
) -> FrequencyPlan:
    """A plan in Perseus's instruction order: forwards at FORWARD_MHZ, backwards at BACKWARD_MHZ."""
    orders = stage_orders(schedule, num_stages, num_microbatches, num_chunks)
    stages = tuple(
        tuple(
            PlannedInstruction(
                i.kind, i.microbatch, FORWARD_MHZ if i.kind == "forward" else BACKWARD_MHZ, i.chunk
            )
            for i in order
        )
        for order in orders
    )
    plan = FrequencyPlan(
        schedule=schedule,
        num_stages=num_stages,
        num_microbatches=num_microbatches,
        iteration_time=1.0,
        energy=1.0,
        stages=stages,
        num_chunks=num_chunks,
        name=f"test-{schedule}",
    )
    path.write_text(plan.to_json())
    return plan


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(script: Path, world_size: int, args: list[str], timeout: float = 400) -> None:
    """Start ``world_size`` gloo ranks of ``script`` on simulated GPUs; fail with their output if one fails."""
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "PERSEUS_DEVICE": "sim",
            "PERSEUS_SIM_TIME_SCALE": "0.05",
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (proc, out) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"rank {rank} of {script.name} exited {proc.returncode}:\n{out[-4000:]}"


def write_result(path: str, rank: int, losses: list, hooks: PlanHooks) -> None:
    """What a worker rank measured, for :func:`check_ranks` (called by the worker scripts)."""
    iterations = [
        {
            "time": it.time,
            "energy": it.energy,
            "instructions": [[m.name, m.frequency, m.applied] for m in it.instructions],
        }
        for it in hooks.iterations
    ]
    Path(path).write_text(json.dumps({"rank": rank, "losses": losses, "iterations": iterations}))


def check_ranks(plan: FrequencyPlan, out_pattern: str, world_size: int, steps: int) -> list[dict]:
    """Every rank ran its instructions in the plan's order at the plan's clocks and reported each step."""
    results = []
    for rank in range(world_size):
        result = json.loads(Path(out_pattern % rank).read_text())
        planned = [(p.name, p.frequency) for p in plan.stage_schedule(rank).instructions]
        assert len(result["iterations"]) == steps
        for iteration in result["iterations"]:
            assert iteration["time"] > 0 and iteration["energy"] > 0
            assert [(name, mhz) for name, mhz, _ in iteration["instructions"]] == planned
        # The controller applies clocks off the compute thread, so an instruction may end before
        # its clock lands; after the first iteration every clock the GPU ran at is a planned one.
        applied = {a for it in result["iterations"][1:] for _, _, a in it["instructions"]}
        assert applied and applied <= {FORWARD_MHZ, BACKWARD_MHZ}, applied
        reports = [json.loads(line) for line in Path(out_pattern % rank + ".jsonl").read_text().splitlines()]
        assert [r["stage"] for r in reports] == [rank] * steps and reports[0]["plan"] == plan.name
        results.append(result)
    return results
