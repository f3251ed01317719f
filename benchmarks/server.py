"""Control-plane load test: many simulated ranks register and fetch their schedules at once.

Starts ``perseus serve`` as a subprocess on 127.0.0.1 (a temporary SQLite database), registers
one serving job (GPT-3 175B A100 profile, 8 stages), then drives ``--ranks`` ranks through
RegisterRank, GetSchedule (``--fetches`` times each) and ReportIteration from a grpc.aio client
with at most ``--concurrency`` calls in flight. Prints RPC/s and latency percentiles per RPC.

    .venv/bin/python benchmarks/server.py [--ranks 1024] [--concurrency 64] [--fetches 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perseus.client import PerseusClient  # noqa: E402
from perseus.profile import load_profile  # noqa: E402
from perseus.v1 import scheduler_pb2 as pb  # noqa: E402
from perseus.v1 import scheduler_pb2_grpc as pb_grpc  # noqa: E402

PROFILE = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"
STAGES, MICROBATCHES = 8, 8


def start_server(db: str) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "perseus.server", "--host", "127.0.0.1", "--port", "0", "--db", db,
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"serving on 127\.0\.0\.1:(\d+) ", line)
    if not match:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, int(match.group(1))


async def drive(port: int, job_id: str, ranks: int, concurrency: int, fetches: int,
                freqs: list[int]) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {"RegisterRank": [], "GetSchedule": [], "ReportIteration": []}
    limit = asyncio.Semaphore(concurrency)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SchedulerStub(channel)

        async def timed(name: str, call: object, request: object) -> object:
            async with limit:
                start = time.perf_counter()
                reply = await call(request, timeout=60)  # type: ignore[operator]
                latencies[name].append(time.perf_counter() - start)
                return reply

        async def rank(r: int) -> None:
            reply = await timed("RegisterRank", stub.RegisterRank, pb.RegisterRankRequest(
                job_id=job_id, rank=r, stage=r % STAGES, pipeline_id=r // STAGES, gpu_name="Simulated A100",
                supported_frequencies=freqs))
            assert reply.schedule.mode == pb.SCHEDULE_MODE_PLAN  # type: ignore[attr-defined]
            for _ in range(fetches):
                schedule = await timed("GetSchedule", stub.GetSchedule, pb.GetScheduleRequest(job_id=job_id, rank=r))
                assert len(schedule.instructions) == 2 * MICROBATCHES  # type: ignore[attr-defined]
            await timed("ReportIteration", stub.ReportIteration, pb.ReportIterationRequest(
                job_id=job_id, rank=r, iteration=0, time=1.0, energy=100.0))

        await asyncio.gather(*(rank(r) for r in range(ranks)))
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=64, help="RPCs in flight at most")
    parser.add_argument("--fetches", type=int, default=4, help="GetSchedule calls per rank")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: sys.exit("benchmark timed out"))
    signal.alarm(int(args.timeout))

    with tempfile.TemporaryDirectory(prefix="perseus-bench-") as tmp:
        proc, port = start_server(f"sqlite:///{os.path.join(tmp, 'bench.db')}")
        try:
            profile = load_profile(PROFILE)
            dp = (args.ranks + STAGES - 1) // STAGES
            with PerseusClient(f"127.0.0.1:{port}") as client:
                t0 = time.perf_counter()
                client.register_job(job_id="bench", model="gpt3-175b", num_stages=STAGES,
                                    num_microbatches=MICROBATCHES, dp_degree=dp, profile=profile)
                job = client.wait_for_phase("bench", "serving", timeout=300)
                frontier_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            latencies = asyncio.run(drive(port, "bench", args.ranks, args.concurrency, args.fetches,
                                          list(profile.frequencies())))
            wall = time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    total = sum(len(v) for v in latencies.values())
    print(f"perseus server benchmark: {args.ranks} ranks ({STAGES} stages x {dp} pipelines), "
          f"{args.concurrency} in flight, {args.fetches} schedule fetches per rank, SQLite, loopback")
    print(f"frontier of {job.frontier_size} plans ready {frontier_s:.1f} s after RegisterJob "
          f"({STAGES} stages x {MICROBATCHES} microbatches)")
    print(f"{'RPC':<16} {'calls':>7} {'RPC/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, values in latencies.items():
        values.sort()
        p50 = statistics.median(values) * 1e3
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))] * 1e3
        print(f"{name:<16} {len(values):>7} {len(values) / wall:>9.0f} {p50:>8.2f} {p99:>8.2f} {values[-1] * 1e3:>8.2f}")
    print(f"{'all':<16} {total:>7} {total / wall:>9.0f}   (wall {wall:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
