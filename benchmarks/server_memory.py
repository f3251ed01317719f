"""Server memory with one large serving job: resident set size of ``perseus serve`` once the job's
frontier is stored, its ranks registered and their schedules served.

The server API takes no user-supplied frontier, and computing a 16 x 256 frontier takes minutes,
so this script writes one: ``--plans`` plans of a 1F1B pipeline of ``--stages`` x
``--microbatches`` (8,192 instructions at 16 x 256), each differing from the previous plan in
``CHANGES`` instructions lowered by one clock step (as neighbouring frontier plans do; seeded).
It registers the job through :class:`SchedulerCore` with a user plan, stores the plans as the
job's frontier the way the server stores a computed one (compact rows), and sets a max-slowdown
target. Then, for each code base (this tree, and ``--baseline DIR``, e.g. ``git archive`` of an
older commit), it starts ``perseus serve`` on a copy of that database, registers
``--dp`` x ``--stages`` ranks, gets every rank's schedule, reports pipeline 1 as a straggler (the
others switch to a slower plan) and gets every schedule again. Reported per server: RSS when it
started listening and after serving (VmRSS / VmHWM from /proc), and its CPU seconds (user +
system: the machine is shared, wall times are noisy).

    .venv/bin/python benchmarks/server_memory.py [--stages 16] [--microbatches 256] [--plans 3000]
        [--dp 2] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perseus.client import PerseusClient  # noqa: E402
from perseus.pipeline.dag import PipelineDAG  # noqa: E402
from perseus.plan.store import PlanStore, Slot, encode_rows  # noqa: E402
from perseus.server.core import SchedulerCore  # noqa: E402
from perseus.server.db import make_engine, upgrade  # noqa: E402
from perseus.server.targets import TargetSpec  # noqa: E402
from perseus.server.types import JobSpec  # noqa: E402

JOB = "big"
CLOCKS = tuple(range(1410, 1004, -15))
"""A100 graphics clocks (MHz) in 15 MHz steps down to about 1 GHz, where frontier plans stop."""
CHANGES = 8
"""Instructions one frontier plan lowers relative to the previous one: a few, as the solver's steps do."""
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def synthetic_frontier(stages: int, microbatches: int, plans: int, seed: int = 0) -> PlanStore:
    """``plans`` plans, fastest first (time rising, energy falling), in the job's instruction order."""
    dag = PipelineDAG.build("1f1b", stages, microbatches)
    order = [n for nodes in dag.stage_nodes for n in nodes]
    slots = tuple(Slot(i.stage, i.kind, i.microbatch, i.chunk) for i in (dag.nodes[n] for n in order))
    rng = np.random.default_rng(seed)
    steps = np.zeros(len(slots), dtype=np.int64)
    rows = np.empty((plans, len(slots)), dtype=np.int32)
    for k in range(plans):
        if k:
            picked = rng.choice(len(slots), CHANGES, replace=False)
            steps[picked] = np.minimum(steps[picked] + 1, len(CLOCKS) - 1)
        rows[k] = np.array(CLOCKS)[steps]
    return PlanStore(
        schedule="1f1b", num_stages=stages, num_microbatches=microbatches, num_chunks=1, slots=slots,
        names=tuple(f"p{k:04d}" for k in range(plans)),
        iteration_time=1.0 + 1e-4 * np.arange(plans), energy=1e5 - 1.0 * np.arange(plans), frequencies=rows,
    )


def build_database(path: Path, stages: int, microbatches: int, plans: int, dp: int) -> float:
    """Write the serving job with its frontier to ``path``; returns the plan rows' total MB."""
    store = synthetic_frontier(stages, microbatches, plans)
    rows = encode_rows(store)
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    core = SchedulerCore(engine)
    try:
        spec = JobSpec(JOB, "synthetic", "even", "1f1b", stages, microbatches, dp_degree=dp)
        core.register_job(spec, target=TargetSpec("plan"), target_plan_json=store.plan(0).to_json())
        with core._lock, core._writing(JOB) as (s, job):  # stored as a computed frontier is
            job.frontier = core._store_frontier_rows(s, job, rows)
            core._bump(s, job)
        core.set_target(JOB, TargetSpec("max_slowdown", 1.01))
    finally:
        core.close()
        engine.dispose()
    return sum(len(r) for r in rows) / 1e6


def _status(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM (MB) and CPU seconds of process ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    fields["cpu"] = (int(stat[11]) + int(stat[12])) / TICK
    return fields


def measure(code: Path, database: Path, stages: int, dp: int) -> dict[str, float]:
    """Start ``perseus serve`` from ``code`` on ``database``, serve every rank, return its memory and CPU."""
    cmd = [sys.executable, "-m", "perseus.server", "--port", "0", "--db", f"sqlite:///{database}",
           "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"serving on .*:(\d+) ", line)
        if not match:
            raise RuntimeError(f"server from {code} did not start: {line!r}")
        started = _status(proc.pid)
        client = PerseusClient(f"127.0.0.1:{match.group(1)}", retry_timeout=600)
        t0 = time.perf_counter()
        clocks = list(CLOCKS)
        ranks = [(p * stages + st, st, p) for p in range(dp) for st in range(stages)]
        for rank, stage, pipeline in ranks:
            client.register_rank(JOB, rank, stage, clocks, pipeline_id=pipeline)
        served = {client.get_schedule(JOB, rank).plan_name for rank, _, _ in ranks}
        client.report_straggler(JOB, 1, 1.05)
        served |= {client.get_schedule(JOB, rank).plan_name for rank, _, _ in ranks}
        frontier = client.get_frontier(JOB)
        serve_s = time.perf_counter() - t0
        after = _status(proc.pid)
        client.close()
        return {"start_rss": started["VmRSS"], "start_cpu": started["cpu"], "rss": after["VmRSS"],
                "hwm": after["VmHWM"], "cpu": after["cpu"], "serve_s": serve_s, "plans": len(frontier.plans),
                "served": len(served)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=16)
    parser.add_argument("--microbatches", type=int, default=256)
    parser.add_argument("--plans", type=int, default=3000, help="frontier plans (about 3,000 at 16 x 256)")
    parser.add_argument("--dp", type=int, default=2, help="pipelines (ranks = dp x stages)")
    parser.add_argument("--baseline", metavar="DIR", help="also run the server from this checkout")
    args = parser.parse_args()
    codes = [("this tree", ROOT)] + ([("baseline", Path(args.baseline).resolve())] if args.baseline else [])
    with tempfile.TemporaryDirectory(prefix="perseus-memory-") as tmp:
        database = Path(tmp) / "perseus.db"
        t0 = time.perf_counter()
        rows_mb = build_database(database, args.stages, args.microbatches, args.plans, args.dp)
        print(f"{args.stages} x {args.microbatches}, {args.plans} plans of {2 * args.stages * args.microbatches} "
              f"instructions: plan rows {rows_mb:.1f} MB, database {database.stat().st_size / 1e6:.1f} MB "
              f"(built in {time.perf_counter() - t0:.0f} s)")
        print(f"{'server':<10} {'RSS at start':>12} {'CPU to start':>12} {'RSS served':>11} {'peak RSS':>9} "
              f"{'CPU total':>9} {'plans':>6} {'served':>6}")
        for label, code in codes:
            copy = Path(tmp) / f"{label.replace(' ', '-')}.db"
            shutil.copyfile(database, copy)
            r = measure(code, copy, args.stages, args.dp)
            print(f"{label:<10} {r['start_rss']:>9.0f} MB {r['start_cpu']:>10.1f} s {r['rss']:>8.0f} MB "
                  f"{r['hwm']:>6.0f} MB {r['cpu']:>7.1f} s {r['plans']:>6.0f} {r['served']:>6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
