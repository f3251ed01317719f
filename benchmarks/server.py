"""Control-plane load test: ``--ranks`` ranks each reporting one iteration per second, SQLite and PostgreSQL.

For each database, each code base (this tree, and ``--baseline DIR``, e.g. an export of main, so
both run on the same machine in the same minute) and each way of reporting it starts ``perseus
serve`` as a subprocess on 127.0.0.1, registers one serving job (GPT-3 175B A100 profile, 8
stages) and ``--ranks`` ranks, then lets every rank finish one iteration per second for
``--seconds`` seconds, spread evenly over each second, as a training job does. Three ways to report:

* ``streamed``: what workers do (:class:`perseus.client.reporter.BackgroundReporter`): each rank
  keeps one ``StreamReports`` stream open and sends a report as soon as its iteration ends (what
  finished while a batch waited for its ack goes in the next batch);
* ``batched``: what workers did before streams (and still do with a server without them): each
  rank's sender wakes every ``SEND_INTERVAL_S`` and sends what its rank buffered meanwhile in one
  ``ReportIterations`` call (at one iteration per second that is about one report per call);
* ``per-report``: one ``ReportIteration`` call per report, the oldest path.

The ranks are simulated by ``--clients`` load-generator processes (asyncio, their own gRPC
channels), so the latency measured is the server's, not one client process's GIL. A report's
latency runs from the moment its iteration ends (when a worker queues it) until the
acknowledgement of the call or stream message that carried it, which the server gives only after
the commit; so ``batched`` includes the up to ``SEND_INTERVAL_S`` a report waits for its sender.
The server's CPU time (user + system, from /proc, PostgreSQL's own processes not included) per
message (call or stream message) and per 1000 reports, and the PostgreSQL cluster's (its postmaster
and every backend) per 1000 reports, are a proxy that hardly depends on what else
the machine runs; latencies do. The first ``WARMUP_S`` seconds are not measured. With PostgreSQL it
also runs two replicas of this tree and measures how long a target set through one takes to reach
ranks watching the other.

    .venv/bin/python benchmarks/server.py [--ranks 1024] [--seconds 15] [--db sqlite,postgres]
        [--mode streamed,batched,per-report] [--baseline DIR] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import multiprocessing as mp
import os
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pg_cluster import PostgresUnavailable, scratch_database, throwaway_cluster  # noqa: E402  (tests/)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from perseus.client import PerseusClient, Target  # noqa: E402
from perseus.client.reporter import BATCH_SIZE, SEND_INTERVAL_S  # noqa: E402
from perseus.profile import load_profile  # noqa: E402
from perseus.v1 import scheduler_pb2 as pb  # noqa: E402
from perseus.v1 import scheduler_pb2_grpc as pb_grpc  # noqa: E402

PROFILE = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"
STAGES, MICROBATCHES = 8, 8
CHANNELS_PER_CLIENT = 4
"""Connections each load-generator process opens (real ranks have one each; 1024 here would measure
the load generator)."""
WARMUP_S = 2.0
"""Seconds at the start of each run not measured: connections and caches warm up."""
MODES = ("streamed", "batched", "per-report")
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    code: str
    db: str
    mode: str
    register: list[float]
    latencies: list[float] = field(default_factory=list)
    """Latency of each measured report (iteration end to acknowledgement), seconds."""
    messages: int = 0
    """Measured calls (or stream messages) that carried them."""
    window_s: float = 0.0
    """Seconds of reporting measured (rates are per these seconds)."""
    wall_s: float = 0.0
    """Seconds over which the server's CPU time was measured."""
    errors: Counter[str] = field(default_factory=Counter)
    client_cpu_s: float = 0.0
    """CPU seconds of the busiest load-generator process over its whole life (start-up included)."""
    cpu_s: float = 0.0
    """Server process CPU seconds (user + system) over the measured window."""
    db_cpu_s: float | None = None
    """CPU seconds of the PostgreSQL cluster's processes over the window (None: SQLite, in the server's process)."""
    loop_cpu_s: float = 0.0
    """CPU seconds of the server's main thread (its asyncio event loop, which runs gRPC) over the window:
    the one thread that cannot use the second core, so the one whose saturation queues calls."""


# ------------------------------------------------------------------ server


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


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds of a process so far (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def postgres_cpu_seconds(db: str) -> float | None:
    """User + system CPU seconds so far of the PostgreSQL cluster serving ``db``: its postmaster (found by
    the port on its command line), the children it reaped and its live children; None for SQLite."""
    match = re.search(r"@[^:/]+:(\d+)/", db)
    if not db.startswith("postgresql") or not match:
        return None
    stats: dict[int, tuple[list[str], list[str]]] = {}
    """pid -> (/proc/pid/stat fields after the command name, command line arguments) of postgres processes."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() == "postgres":
                stats[int(proc.name)] = ((proc / "stat").read_text().rsplit(")", 1)[1].split(),
                                         (proc / "cmdline").read_bytes().decode(errors="replace").split("\0"))
        except OSError:  # gone meanwhile
            continue
    port = match.group(1)
    masters = [pid for pid, (_, args) in stats.items() if any(a == "-p" and b == port for a, b in itertools.pairwise(args))]
    if len(masters) != 1:
        return None
    total = sum(int(x) for x in stats[masters[0]][0][11:15])  # its own user + system, and its reaped children's
    total += sum(int(f[11]) + int(f[12]) for f, _ in stats.values() if int(f[1]) == masters[0])
    return total / TICK


# ------------------------------------------------------------------ load generator (one process per --clients)


@dataclass(frozen=True)
class LoadSpec:
    port: int
    mode: str
    ranks: int
    mine: tuple[int, ...]
    """The ranks this process simulates."""
    seconds: float
    t0: float
    """Wall-clock time (time.time()) of iteration 0 of rank 0."""


def load_process(spec: LoadSpec, out: Any) -> None:
    """Entry point of a load-generator process: runs its ranks, puts (latencies, messages, errors) on ``out``."""
    latencies, messages, errors = asyncio.run(_load(spec))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put((latencies, messages, errors, usage.ru_utime + usage.ru_stime))


async def _load(spec: LoadSpec) -> tuple[list[float], int, Counter[str]]:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{spec.port}") for _ in range(CHANNELS_PER_CLIENT)]
    stubs = [pb_grpc.SchedulerStub(c) for c in channels]
    latencies: list[float] = []
    measured = [0]
    errors: Counter[str] = Counter()
    start_measuring = spec.t0 + WARMUP_S
    end = spec.t0 + spec.seconds

    def done_at(rank: int, iteration: int) -> float:
        """When rank ``rank`` finishes ``iteration``: ranks spread evenly over each second."""
        return spec.t0 + iteration + rank / spec.ranks

    def acked(rank: int, iterations: list[int]) -> None:
        """Record the reports of one acknowledged call or message: latency from each iteration's end."""
        now = time.time()
        counted = [now - done_at(rank, i) for i in iterations if done_at(rank, i) >= start_measuring]
        if counted:
            latencies.extend(counted)
            measured[0] += 1

    async def call(coro: Any, rank: int, iterations: list[int]) -> None:
        try:
            await coro
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += len(iterations)
            return
        acked(rank, iterations)

    async def per_report(rank: int) -> None:
        stub = stubs[rank % len(stubs)]
        for iteration in range(int(spec.seconds)):
            await asyncio.sleep(max(0.0, done_at(rank, iteration) - time.time()))
            await call(stub.ReportIteration(pb.ReportIterationRequest(
                job_id="bench", rank=rank, iteration=iteration, time=1.0, energy=100.0, run_id="bench"),
                timeout=30), rank, [iteration])

    async def streamed(rank: int) -> None:
        """BackgroundReporter's stream sender: a batch as soon as an iteration ends, the next one after its ack."""
        stream = stubs[rank % len(stubs)].StreamReports()
        last = int(spec.seconds)
        next_iteration = seq = 0
        try:
            while next_iteration < last:
                await asyncio.sleep(max(0.0, done_at(rank, next_iteration) - time.time()))
                ready = [i for i in range(next_iteration, last) if done_at(rank, i) <= time.time()]
                seq += 1
                await stream.write(pb.ReportBatch(seq=seq, job_id="bench", run_id="bench", reports=[
                    pb.IterationReport(rank=rank, iteration=i, time=1.0, energy=100.0) for i in ready]))
                ack = await stream.read()
                if ack is grpc.aio.EOF or ack.code:
                    errors["REFUSED" if ack is not grpc.aio.EOF else "EOF"] += len(ready)
                else:
                    acked(rank, ready)
                next_iteration += len(ready)
            await stream.done_writing()
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += max(1, last - next_iteration)
        except asyncio.InvalidStateError:  # the server ended the stream between a read and the next write
            errors["STREAM_ENDED"] += max(1, last - next_iteration)

    async def batched(rank: int) -> None:
        """BackgroundReporter's sender: every SEND_INTERVAL_S, what the rank finished meanwhile, in one call."""
        stub = stubs[rank % len(stubs)]
        wake = spec.t0 + random.Random(rank).uniform(0, SEND_INTERVAL_S)  # senders start when their ranks do
        next_iteration = 0
        while next_iteration < int(spec.seconds):
            wake += SEND_INTERVAL_S
            await asyncio.sleep(max(0.0, wake - time.time()))
            ready = [i for i in range(next_iteration, int(spec.seconds)) if done_at(rank, i) <= time.time()]
            for first in range(0, len(ready), BATCH_SIZE):
                chunk = ready[first:first + BATCH_SIZE]
                await call(stub.ReportIterations(pb.ReportIterationsRequest(
                    job_id="bench", run_id="bench",
                    reports=[pb.IterationReport(rank=rank, iteration=i, time=1.0, energy=100.0) for i in chunk]),
                    timeout=30), rank, chunk)
            next_iteration += len(ready)

    run = {"streamed": streamed, "batched": batched, "per-report": per_report}[spec.mode]
    await asyncio.gather(*(run(r) for r in spec.mine))
    assert time.time() >= end - 1
    for channel in channels:
        await channel.close(None)
    return latencies, measured[0], errors


# ------------------------------------------------------------------ one run


async def register_ranks(port: int, ranks: int, freqs: list[int], concurrency: int = 64) -> list[float]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.SchedulerStub(channel)
    latencies: list[float] = []
    limit = asyncio.Semaphore(concurrency)

    async def register(r: int) -> None:
        async with limit:
            start = time.perf_counter()
            reply = await stub.RegisterRank(pb.RegisterRankRequest(
                job_id="bench", rank=r, stage=r % STAGES, pipeline_id=r // STAGES, gpu_name="Simulated A100",
                supported_frequencies=freqs), timeout=60)
            latencies.append(time.perf_counter() - start)
            assert reply.schedule.mode == pb.SCHEDULE_MODE_PLAN

    await asyncio.gather(*(register(r) for r in range(ranks)))
    await channel.close(None)
    return latencies


def run_one(code: str, code_root: Path, db: str, mode: str, args: argparse.Namespace) -> Result:
    proc, port = start_server(code_root, db)
    try:
        profile = load_profile(PROFILE)
        dp = (args.ranks + STAGES - 1) // STAGES
        with PerseusClient(f"127.0.0.1:{port}") as client:
            client.register_job(job_id="bench", model="gpt3-175b", num_stages=STAGES, num_microbatches=MICROBATCHES,
                                dp_degree=dp, profile=profile)
            client.wait_for_phase("bench", "serving", timeout=300)
        result = Result(code, db.split(":")[0].split("+")[0], mode,
                        asyncio.run(register_ranks(port, args.ranks, list(profile.frequencies()))))
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        t0 = time.time() + 3.0 + 0.5 * args.clients  # time for the load processes to start and import
        procs = [ctx.Process(target=load_process, args=(LoadSpec(
            port, mode, args.ranks, tuple(range(i, args.ranks, args.clients)), args.seconds, t0), out), daemon=True)
            for i in range(args.clients)]
        for p in procs:
            p.start()
        time.sleep(max(0.0, t0 + WARMUP_S - time.time()))
        cpu_start, loop_start, wall_start = cpu_seconds(proc.pid), cpu_seconds(proc.pid, proc.pid), time.time()
        db_start = postgres_cpu_seconds(db)
        for _ in procs:
            latencies, messages, errors, client_cpu = out.get(timeout=args.seconds + 120)
            result.client_cpu_s = max(result.client_cpu_s, client_cpu)
            result.latencies += latencies
            result.messages += messages
            result.errors += errors
        result.cpu_s = cpu_seconds(proc.pid) - cpu_start
        result.loop_cpu_s = cpu_seconds(proc.pid, proc.pid) - loop_start
        db_end = postgres_cpu_seconds(db)
        if db_start is not None and db_end is not None:
            result.db_cpu_s = db_end - db_start
        result.wall_s = time.time() - wall_start
        result.window_s = int(args.seconds) - WARMUP_S
        for p in procs:
            p.join(timeout=30)
    finally:
        stop_server(proc)
    return result


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


def supported(root: Path, modes: list[str]) -> list[str]:
    """The modes the server at ``root`` supports (a checkout from before StreamReports cannot stream)."""
    proto = (root / "proto" / "perseus" / "v1" / "scheduler.proto").read_text()
    return [m for m in modes if m != "streamed" or "rpc StreamReports" in proto]


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max) in milliseconds."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return statistics.median(values) * 1e3, p99 * 1e3, values[-1] * 1e3


# ------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=1024, help="simulated ranks (default 1024)")
    parser.add_argument("--seconds", type=float, default=15, help=f"seconds of reporting per run, the first "
                        f"{WARMUP_S:g} not measured (default 15)")
    parser.add_argument("--db", default="sqlite,postgres", help="databases: sqlite, postgres or both (default both)")
    parser.add_argument("--mode", default=",".join(MODES), help="ways to report: streamed (as workers do), batched "
                        "(ReportIterations every 0.5 s, as workers did), per-report (one ReportIteration each); "
                        "default all three")
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes (default 4)")
    parser.add_argument("--baseline", metavar="DIR", help="also run the server from this checkout, e.g. an export "
                        "of main: `git archive main | tar -x -C /tmp/main`")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    args = parser.parse_args()
    for kind in args.db.split(","):
        if kind not in ("sqlite", "postgres"):
            parser.error(f"--db: unknown database {kind!r} (sqlite or postgres)")
    for mode in args.mode.split(","):
        if mode not in MODES:
            parser.error(f"--mode: unknown mode {mode!r} ({', '.join(MODES)})")
    if not 1 <= args.clients <= args.ranks:
        parser.error(f"--clients: must be in [1, --ranks], got {args.clients}")
    if args.seconds < WARMUP_S + 2:
        parser.error(f"--seconds: at least {WARMUP_S + 2:g}")
    return args


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGALRM, lambda *_: sys.exit("benchmark timed out"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("benchmark stopped"))  # still stops servers, PostgreSQL
    signal.alarm(int(args.timeout))
    codes = [("this tree", ROOT)] + ([("baseline", Path(args.baseline).resolve())] if args.baseline else [])
    modes = args.mode.split(",")
    results: list[Result] = []
    delays: list[float] = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="perseus-bench-") as tmp:
        for db_kind in args.db.split(","):
            if db_kind == "sqlite":
                for i, (code, root) in enumerate(codes):
                    for mode in supported(root, modes):
                        results.append(run_one(code, root, f"sqlite:///{tmp}/bench{i}-{mode}.db", mode, args))
            else:
                try:
                    with throwaway_cluster() as cluster:
                        for code, root in codes:
                            for mode in supported(root, modes):
                                with scratch_database(cluster, "bench") as db:
                                    results.append(run_one(code, root, db, mode, args))
                        delays = propagation(cluster)
                except PostgresUnavailable as exc:
                    raise SystemExit(str(exc)) from None
    print_results(args, results, delays, load)
    return 0


def print_results(args: argparse.Namespace, results: list[Result], delays: list[float], load: float) -> None:
    console = Console(width=220)
    table = Table(title=(
        f"perseus server, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.ranks} ranks ({STAGES} "
        f"stages) each finishing one iteration per second for {args.seconds:g} s (first {WARMUP_S:g} s not "
        f"measured); {args.clients} load processes; loopback; {os.cpu_count()} CPUs, load average "
        f"{load:.1f} before the first run; baseline: {args.baseline or '-'}"))
    for column in ("code", "db", "reporting", "register p50/p99 ms", "messages/s", "reports/s", "ack p50 ms",
                   "ack p99 ms", "ack max ms", "server CPU ms / message", "server CPU s / 1000 reports", "server CPU %",
                   "PostgreSQL CPU s / 1000 reports",
                   "loop thread CPU ms / message", "loop thread CPU %", "busiest client CPU %", "errors"):
        table.add_column(column, justify="left" if column in ("code", "db", "reporting", "errors") else "right")
    for r in results:
        reg50, reg99, _ = percentiles(r.register)
        p50, p99, worst = percentiles(r.latencies)
        window = max(r.window_s, 1e-9)
        table.add_row(r.code, r.db, r.mode, f"{reg50:.1f} / {reg99:.1f}", f"{r.messages / window:.0f}",
                      f"{len(r.latencies) / window:.0f}", f"{p50:.1f}", f"{p99:.1f}", f"{worst:.0f}",
                      f"{1000 * r.cpu_s / max(r.messages, 1):.2f}", f"{1000 * r.cpu_s / max(len(r.latencies), 1):.2f}", f"{100 * r.cpu_s / max(r.wall_s, 1e-9):.0f}",
                      "-" if r.db_cpu_s is None else f"{1000 * r.db_cpu_s / max(len(r.latencies), 1):.2f}",
                      f"{1000 * r.loop_cpu_s / max(r.messages, 1):.2f}", f"{100 * r.loop_cpu_s / max(r.wall_s, 1e-9):.0f}",
                      f"{100 * r.client_cpu_s / (int(args.seconds) + 3 + 0.5 * args.clients):.0f}",
                      ", ".join(f"{n} {c}" for c, n in r.errors.items()) or "0")
    console.print(table)
    console.print("ack: from the end of a report's iteration (when the worker queues it) until the acknowledgement "
                  "(after the commit) of the call or stream message carrying it. Server CPU: the perseus "
                  "process only (user + system); PostgreSQL's processes are counted apart. CPU hardly depends on other "
                  "load, latencies do.")
    if delays:
        p50, _, worst = percentiles(delays)
        console.print(f"replicas: a target set through replica A reached 8 ranks watching replica B in "
                      f"{p50:.0f} ms (median of {len(delays)}), at most {worst:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
