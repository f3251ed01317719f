"""Control-plane load test: 1024 ranks each reporting one iteration per second, SQLite and PostgreSQL.

For each database and each code base (this tree, and ``--baseline DIR``, e.g. a checkout of
main, so both run on the same machine in the same minute) it starts ``perseus serve`` as a
subprocess on 127.0.0.1, registers one serving job (GPT-3 175B A100 profile, 8 stages), registers
``--ranks`` ranks (at most ``--concurrency`` calls in flight) and then lets every rank send
ReportIteration once a second for ``--seconds`` seconds, spread evenly over each second, as a
training job does. Prints per run RegisterRank latencies and the steady-state ReportIteration
latencies (p50, p99, max) and rate. PostgreSQL is a throwaway cluster started from Debian's
packages the way the tests start it. With PostgreSQL it also runs two replicas of this tree and
measures how long a target set through one takes to reach ranks watching the other.

    .venv/bin/python benchmarks/server.py [--ranks 1024] [--seconds 20] [--baseline /work/main] [--db sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pg_cluster import PostgresUnavailable, scratch_database, throwaway_cluster  # noqa: E402  (tests/)

from perseus.client import PerseusClient, Target  # noqa: E402
from perseus.profile import load_profile  # noqa: E402
from perseus.v1 import scheduler_pb2 as pb  # noqa: E402
from perseus.v1 import scheduler_pb2_grpc as pb_grpc  # noqa: E402

PROFILE = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"
STAGES, MICROBATCHES = 8, 8
CHANNELS = 16
"""Client connections the simulated ranks share (real ranks have one each; 1024 here would measure
the load generator)."""


@dataclass
class Result:
    code: str
    db: str
    register: list[float]
    reports: list[float]
    errors: Counter[str]
    rate: float


def start_server(code_root: Path, db: str) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "perseus.server", "--host", "127.0.0.1", "--port", "0", "--db", db,
           "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=code_root, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"serving on 127\.0\.0\.1:(\d+) ", line)
    if not match:
        proc.kill()
        raise SystemExit(f"server from {code_root} did not start: {line!r}")
    return proc, int(match.group(1))


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def load(port: int, ranks: int, seconds: float, concurrency: int, freqs: list[int]) -> tuple[
        list[float], list[float], Counter[str], float]:
    """(RegisterRank latencies, ReportIteration latencies, failed calls by status code, reports per second)."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
    stubs = [pb_grpc.SchedulerStub(c) for c in channels]
    register: list[float] = []
    reports: list[float] = []
    errors: Counter[str] = Counter()
    limit = asyncio.Semaphore(concurrency)

    async def register_rank(r: int) -> None:
        async with limit:
            start = time.perf_counter()
            reply = await stubs[r % CHANNELS].RegisterRank(pb.RegisterRankRequest(
                job_id="bench", rank=r, stage=r % STAGES, pipeline_id=r // STAGES, gpu_name="Simulated A100",
                supported_frequencies=freqs), timeout=60)
            register.append(time.perf_counter() - start)
            assert reply.schedule.mode == pb.SCHEDULE_MODE_PLAN

    async def report(r: int, t0: float) -> None:
        stub = stubs[r % CHANNELS]
        for iteration in range(int(seconds)):
            # Rank r reports at r/ranks into every second: the load is even, as in a real job.
            await asyncio.sleep(max(0.0, t0 + iteration + r / ranks - time.perf_counter()))
            start = time.perf_counter()
            try:
                await stub.ReportIteration(pb.ReportIterationRequest(
                    job_id="bench", rank=r, iteration=iteration, time=1.0, energy=100.0), timeout=30)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                continue
            if iteration >= 2:  # the first two seconds warm up connections and caches
                reports.append(time.perf_counter() - start)

    await asyncio.gather(*(register_rank(r) for r in range(ranks)))
    t0 = time.perf_counter() + 0.5
    await asyncio.gather(*(report(r, t0) for r in range(ranks)))
    rate = len(reports) / max(1e-9, time.perf_counter() - t0 - 2)
    for channel in channels:
        await channel.close(None)
    return register, reports, errors, rate


def run_one(code: str, code_root: Path, db: str, args: argparse.Namespace) -> Result:
    proc, port = start_server(code_root, db)
    try:
        profile = load_profile(PROFILE)
        dp = (args.ranks + STAGES - 1) // STAGES
        with PerseusClient(f"127.0.0.1:{port}") as client:
            client.register_job(job_id="bench", model="gpt3-175b", num_stages=STAGES, num_microbatches=MICROBATCHES,
                                dp_degree=dp, profile=profile)
            client.wait_for_phase("bench", "serving", timeout=300)
        register, reports, errors, rate = asyncio.run(
            load(port, args.ranks, args.seconds, args.concurrency, list(profile.frequencies())))
    finally:
        stop_server(proc)
    return Result(code, db.split(":")[0].split("+")[0], register, reports, errors, rate)


def propagation(cluster: str, changes: int = 20, watchers: int = 8) -> list[float]:
    """Seconds from SetTarget on replica A until every rank watching replica B has the new plan."""
    with scratch_database(cluster, "replicas") as db:
        (a, port_a), (b, port_b) = start_server(ROOT, db), start_server(ROOT, db)
        try:
            return _propagation(port_a, port_b, changes, watchers)
        finally:
            stop_server(a)
            stop_server(b)


def _propagation(port_a: int, port_b: int, changes: int, watchers: int) -> list[float]:
    """See :func:`propagation`."""
    profile = load_profile(PROFILE)
    via_a = PerseusClient(f"127.0.0.1:{port_a}")
    via_a.register_job(job_id="r", num_stages=STAGES, num_microbatches=MICROBATCHES, profile=profile)
    for rank in range(watchers):
        via_a.register_rank("r", rank, rank % STAGES, list(profile.frequencies()))
    via_a.wait_for_phase("r", "serving", timeout=300)
    seen: dict[int, str] = {}
    changed = threading.Condition()

    def watch(rank: int) -> None:
        for schedule in PerseusClient(f"127.0.0.1:{port_b}").watch_schedule("r", rank):
            with changed:
                seen[rank] = schedule.plan_name
                changed.notify_all()

    for rank in range(watchers):
        threading.Thread(target=watch, args=(rank,), daemon=True).start()
    delays = []
    for i in range(changes):
        start = time.perf_counter()
        plan = via_a.set_target("r", Target.max_slowdown(1.2 if i % 2 == 0 else 1.0)).plan_name
        with changed:
            if not changed.wait_for(functools.partial(_all_on, seen, plan, watchers), timeout=30):
                raise SystemExit("a change through replica A did not reach replica B's watchers in 30 s")
        delays.append(time.perf_counter() - start)
    return delays


def _all_on(seen: dict[int, str], plan: str, watchers: int) -> bool:
    return all(seen.get(rank) == plan for rank in range(watchers))


def percentiles(values: list[float]) -> tuple[float, float, float]:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return statistics.median(values) * 1e3, p99 * 1e3, values[-1] * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=20, help="seconds of reporting per run (first 2 not timed)")
    parser.add_argument("--concurrency", type=int, default=64, help="RegisterRank calls in flight at most")
    parser.add_argument("--db", default="sqlite,postgres", help="databases to run: sqlite, postgres or both")
    parser.add_argument("--baseline", metavar="DIR", help="also run the server from this checkout (e.g. main)")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: sys.exit("benchmark timed out"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("benchmark stopped"))  # still stops servers, PostgreSQL
    signal.alarm(int(args.timeout))
    codes = [("this tree", ROOT)] + ([("baseline", Path(args.baseline).resolve())] if args.baseline else [])
    results: list[Result] = []
    delays: list[float] = []
    with tempfile.TemporaryDirectory(prefix="perseus-bench-") as tmp:
        for db_kind in args.db.split(","):
            if db_kind == "sqlite":
                for i, (code, root) in enumerate(codes):
                    results.append(run_one(code, root, f"sqlite:///{tmp}/bench{i}.db", args))
            elif db_kind == "postgres":
                try:
                    with throwaway_cluster() as cluster:
                        for code, root in codes:
                            with scratch_database(cluster, "bench") as db:
                                results.append(run_one(code, root, db, args))
                        delays = propagation(cluster)
                except PostgresUnavailable as exc:
                    raise SystemExit(str(exc)) from None
            else:
                raise SystemExit(f"--db: unknown database {db_kind!r} (sqlite or postgres)")

    print(f"perseus server benchmark {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.ranks} ranks "
          f"({STAGES} stages), each reporting one iteration per second for {args.seconds:g} s; loopback, "
          f"{os.cpu_count()} CPUs; baseline: {args.baseline or '-'}")
    print(f"{'code':<10} {'db':<10} {'register p50/p99 ms':>20} {'report p50 ms':>14} {'p99 ms':>8} "
          f"{'max ms':>8} {'reports/s':>10}  errors")
    for r in results:
        reg50, reg99, _ = percentiles(r.register)
        p50, p99, worst = percentiles(r.reports)
        print(f"{r.code:<10} {r.db:<10} {f'{reg50:.1f} / {reg99:.1f}':>20} {p50:>14.2f} {p99:>8.2f} {worst:>8.1f} "
              f"{r.rate:>10.0f}  {', '.join(f'{n} {c}' for c, n in r.errors.items()) or '0'}")
    if delays:
        p50, _, worst = percentiles(delays)
        print(f"replicas: a target set through replica A reached 8 ranks watching replica B in {p50:.0f} ms "
              f"(median of {len(delays)}), at most {worst:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
