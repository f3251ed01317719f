"""Time an iteration loses to Perseus on the training thread: synchronous reports vs the background link.

Starts ``perseus serve`` as a subprocess (temporary SQLite), registers one serving job with
``--ranks`` ranks (8 stages), then runs every rank for ``--iterations`` iterations of
``--iteration_s`` seconds, all ranks ending each iteration at the same moment (a pipeline's ranks
do; the worst case for the server). At each iteration boundary a rank does what the worker does:

- ``sync`` (the path before the background link): ``ReportIteration`` and wait for the answer,
  then compare the schedule version;
- ``async`` (``merak_integration.serverlink`` now): queue the report for the background sender and
  pick up a schedule the watch stream delivered, if any.

``--probes`` ranks run alone in their own process, one training thread plus the link's threads,
exactly like a worker; their boundary times are the table (wall time, so on a shared machine it
includes waiting for a CPU). The other ranks send the same RPCs (sync: ReportIteration awaited at
each boundary; async: a watch stream each and, as the background sender does, a ``StreamReports``
stream with a batch as soon as an iteration ends) from ``--load_procs`` asyncio processes at low
CPU priority, standing in for the ranks of other machines. Every report must be in the database
at the end.

    .venv/bin/python benchmarks/worker_link.py [--ranks 1024] [--iterations 30] [--iteration_s 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server import MICROBATCHES, PROFILE, STAGES, start_server  # noqa: E402
from perseus.client import PerseusClient  # noqa: E402
from perseus.client.follower import ScheduleFollower  # noqa: E402
from perseus.client.health import TRANSIENT, LinkHealth  # noqa: E402
from perseus.client.reporter import BackgroundReporter  # noqa: E402
from perseus.profile import load_profile  # noqa: E402
from perseus.reports import IterationReport  # noqa: E402
from perseus.v1 import scheduler_pb2 as pb  # noqa: E402
from perseus.v1 import scheduler_pb2_grpc as pb_grpc  # noqa: E402

JOB = "bench"
SENDER_INTERVAL = 0.5  # BackgroundReporter's default interval (s)


class Rank:
    """One simulated rank's link to the server, in either mode; ``boundary`` is the training thread's part."""

    def __init__(self, target: str, mode: str, rank: int, spill_dir: Path) -> None:
        self.mode, self.rank = mode, rank
        if mode == "sync":
            self.client = PerseusClient(target, retry_timeout=60.0)  # what the synchronous worker used
            self.version = self.client.get_schedule(JOB, rank).version
            return
        self.client = PerseusClient(target, retry_timeout=0.0, timeout=5.0)
        health = LinkHealth(target)
        self.reporter = BackgroundReporter(self.client, JOB, "async", spill_dir / f"rank{rank}.jsonl",
                                           health=health, warn=None, flush_timeout=60.0)
        self.follower = ScheduleFollower(self.client, JOB, rank, health)

    def boundary(self, iteration: int) -> None:
        if self.mode == "sync":
            version = self.client.report_iteration(JOB, self.rank, iteration, 1.0, 100.0, "p000", run_id="sync")
            if version != self.version:
                self.version = self.client.get_schedule(JOB, self.rank).version
            return
        self.reporter.put(IterationReport(self.rank, iteration, 1.0, 100.0, "p000"))
        self.follower.take()

    def close(self) -> None:
        if self.mode == "async":
            delivery = self.reporter.close()
            self.follower.stop()
            if delivery.pending or delivery.dropped or delivery.rejected:
                print(f"rank {self.rank}: {delivery}", file=sys.stderr)
        self.client.close()


def run_rank(rank: Rank, start: float, iterations: int, period: float, out: list[float]) -> None:
    """Iterations end at start + k * period on every rank; the time spent at each boundary goes to ``out``."""
    for k in range(iterations):
        delay = start + (k + 1) * period - time.time()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        rank.boundary(k)
        out.append(time.perf_counter() - t0)


def probe(target: str, mode: str, rank: int, spill: str, start: float, iterations: int, period: float,
          results: mp.Queue) -> None:
    link = Rank(target, mode, rank, Path(spill))
    times: list[float] = []
    run_rank(link, start, iterations, period, times)
    link.close()
    results.put(times)


def load(target: str, mode: str, ranks: list[int], start: float, iterations: int, period: float,
         results: mp.Queue) -> None:
    """The other ranks' traffic, from one asyncio loop at low CPU priority (they stand for other machines)."""
    os.nice(10)
    asyncio.run(_load(target, mode, ranks, start, iterations, period))
    results.put(None)


async def _load(target: str, mode: str, ranks: list[int], start: float, iterations: int, period: float) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SchedulerStub(channel)
        watches = [asyncio.create_task(_watch(stub, r)) for r in ranks] if mode == "async" else []
        await asyncio.gather(*(_load_rank(stub, mode, r, start, iterations, period) for r in ranks))
        for w in watches:
            w.cancel()


async def _watch(stub: pb_grpc.SchedulerStub, rank: int) -> None:
    """What a rank's schedule follower keeps open."""
    async for _ in stub.WatchSchedule(pb.GetScheduleRequest(job_id=JOB, rank=rank)):
        pass


async def _load_rank(stub: pb_grpc.SchedulerStub, mode: str, rank: int, start: float, iterations: int,
                     period: float) -> None:
    """sync: one ReportIteration per iteration, awaited; async: what the background sender sends."""
    if mode == "async":
        await _stream_rank(stub, rank, start, iterations, period)
        return
    for k in range(iterations):
        await asyncio.sleep(max(0.0, start + (k + 1) * period - time.time()))
        await _retry(stub.ReportIteration, pb.ReportIterationRequest(
            job_id=JOB, rank=rank, iteration=k, time=1.0, energy=100.0, plan_name="p000", run_id="sync"))


def _report(rank: int, iteration: int) -> pb.IterationReport:
    return pb.IterationReport(rank=rank, iteration=iteration, time=1.0, energy=100.0, plan_name="p000")


async def _stream_rank(stub: pb_grpc.SchedulerStub, rank: int, start: float, iterations: int, period: float) -> None:
    """The background sender's stream: a batch as soon as an iteration ends (what ends while a batch
    awaits its ack goes in the next). If the stream fails, the rest go as the sender's fallback sends
    them: batched ReportIterations calls, every ``SENDER_INTERVAL`` or so."""
    sent = seq = 0
    stream = stub.StreamReports()
    try:
        while sent < iterations:
            await asyncio.sleep(max(0.0, start + (sent + 1) * period - time.time()))
            ended = [k for k in range(sent, iterations) if start + (k + 1) * period <= time.time()]
            seq += 1
            await stream.write(pb.ReportBatch(seq=seq, job_id=JOB, run_id="async",
                                              reports=[_report(rank, k) for k in ended]))
            ack = await stream.read()
            if ack is grpc.aio.EOF or ack.code:
                break
            sent += len(ended)
        else:
            await stream.done_writing()
            return
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass
    for k in range(sent, iterations):
        await asyncio.sleep(max(0.0, start + (k + 1) * period - time.time()) + random.uniform(0, SENDER_INTERVAL))
        batch = [_report(rank, i) for i in range(sent, k + 1)]
        await _retry(stub.ReportIterations, pb.ReportIterationsRequest(job_id=JOB, run_id="async", reports=batch))
        sent = k + 1


async def _retry(call: Any, request: Any) -> None:
    while True:
        try:
            await call(request, timeout=120)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in TRANSIENT:
                raise
            await asyncio.sleep(0.5)


def measure(target: str, mode: str, args: argparse.Namespace, spill: Path) -> list[float]:
    """Run every rank once in ``mode``; returns the probes' boundary times."""
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()
    start = time.time() + args.setup_s
    common = (start, args.iterations, args.iteration_s, results)
    loaded = list(range(args.probes, args.ranks))
    procs = [ctx.Process(target=probe, args=(target, mode, r, str(spill), *common)) for r in range(args.probes)]
    procs += [ctx.Process(target=load, args=(target, mode, loaded[i::args.load_procs], *common))
              for i in range(args.load_procs)]
    for p in procs:
        p.start()
    times: list[float] = []
    for _ in procs:
        got = results.get(timeout=args.setup_s + args.iterations * args.iteration_s + 300)
        times += got or []
    for p in procs:
        p.join(timeout=60)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def register(target: str, ranks: int, freqs: list[int], say: Callable[[str], None]) -> None:
    with PerseusClient(target) as client:
        client.register_job(job_id=JOB, model="gpt3-175b", num_stages=STAGES, num_microbatches=MICROBATCHES,
                            dp_degree=(ranks + STAGES - 1) // STAGES, profile=load_profile(PROFILE))
        client.wait_for_phase(JOB, "serving", timeout=300)
        t0 = time.perf_counter()
        for r in range(ranks):
            client.register_rank(JOB, r, r % STAGES, freqs, pipeline_id=r // STAGES)
        say(f"registered {ranks} ranks in {time.perf_counter() - t0:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--iteration_s", type=float, default=1.0, help="iteration length (s)")
    parser.add_argument("--probes", type=int, default=8, help="ranks measured, each alone in its process")
    parser.add_argument("--load_procs", type=int, default=4, help="processes running the other ranks")
    parser.add_argument("--setup_s", type=float, default=20.0, help="time the processes get to connect")
    parser.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: sys.exit("benchmark timed out"))
    signal.alarm(int(args.timeout))

    rows = []
    with tempfile.TemporaryDirectory(prefix="perseus-bench-") as tmp:
        proc, port = start_server(ROOT, f"sqlite:///{os.path.join(tmp, 'bench.db')}")
        target = f"127.0.0.1:{port}"
        try:
            register(target, args.ranks, list(load_profile(PROFILE).frequencies()), print)
            for mode in ("sync", "async"):
                times = measure(target, mode, args, Path(tmp) / "spill")
                rows.append((mode, times))
            with PerseusClient(target) as client:
                stored = {r.run_id: r.num_reports for r in client.get_job(JOB).runs}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    expected = args.ranks * args.iterations
    print(f"\nworker link benchmark: {args.ranks} ranks ({STAGES} stages), {args.iterations} iterations of "
          f"{args.iteration_s:g} s, all ranks at each boundary together, one server (SQLite, loopback); "
          f"{args.probes} probe ranks measured, each in its own process")
    print("| path | training-thread time per iteration: mean / p50 / p99 / max | p99 share of the iteration "
          "| reports stored |")
    print("| --- | --- | --- | --- |")
    for mode, times in rows:
        label = "synchronous ReportIteration" if mode == "sync" else "background link (queue + report stream)"
        cells = " / ".join(f"{v * 1e3:.3f} ms" for v in (statistics.mean(times), statistics.median(times),
                                                       percentile(times, 0.99), max(times)))
        share = 100 * percentile(times, 0.99) / args.iteration_s
        print(f"| {label} | {cells} | {share:.3f}% | {stored.get(mode, 0)} of {expected} |")
    return 0 if all(stored.get(mode, 0) == expected for mode, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
