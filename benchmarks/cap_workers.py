"""The cluster power cap with real pipeline workers: three training runs under one cap, live.

Three jobs train at once (``merak_integration.launch``: torchrun, gloo, gpt3-tiny, 2 stages x 4
microbatches, simulated GPUs modelling the first two stages of the shipped GPT-3 175B A100, BLOOM A100
and GPT-3 175B A40 profiles), each against the real server (gRPC on 127.0.0.1, SQLite in a temporary
directory) that registered it with that profile. While they train, the benchmark switches the cluster
policy at iteration boundaries the workers pick up themselves:

1. no cap (every job at its fastest plan): the reference iteration times;
2. ``SetPowerCap(W)``: the server chooses each job's plan;
3. the cap cleared and every job served one uniform per-GPU power limit (the highest whose noise-free
   power fits W, see :func:`cap_sim.uniform_limit`) as its global-power-limit baseline.

After each change every job runs ``--settle`` iterations (the server's measured-power feedback acts
here), then ``--phase`` measured ones. Measured power is the server's (GetPowerCap at the phase's end:
each rank's last 10 reports, energy / time from the simulated GPUs' energy counters); slowdown compares
each job's median measured iteration time (rank 0's reports in the measured iterations) with the
reference phase. The uniform limit gets a second try with the same feedback: the limit whose planned
power, scaled by the first try's measured over planned power, fits the cap.
Run: .venv/bin/python benchmarks/cap_workers.py [--fraction 0.5] [--phase 14] [--time-scale 0.5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from perseus.client import PerseusClient, Target
from perseus.profile import PipelineProfile, load_profile, save_profile
from perseus.server.app import ServerConfig, ServerThread

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cap_sim import SimulatedJob, planned_power_under_limit, uniform_limit

ROOT = Path(__file__).resolve().parent.parent
JOBS = {"gpt3-a100": "gpt3-175b+a100_sxm_bf16", "bloom-a100": "bloom+a100_sxm_bf16", "gpt3-a40": "gpt3-175b+a40_bf16"}
STAGES, MICROBATCHES = 2, 4


def first_stages(name: str) -> PipelineProfile:
    p = load_profile(ROOT / "profiles" / name / "profile.csv")
    return PipelineProfile({k: v for k, v in p.instructions.items() if k[0] < STAGES}, p.blocking_power, p.source)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="the cap between the least-energy plans' power (0) and the fastest plans' (1)")
    parser.add_argument("--phase", type=int, default=12, help="measured iterations per job in each phase")
    parser.add_argument("--settle", type=int, default=12,
                        help="iterations per job after each change before measuring (the cap's feedback acts here)")
    parser.add_argument("--time-scale", type=float, default=0.5, help="simulated instruction time multiplier")
    args = parser.parse_args()
    console = Console(width=160)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="perseus-capw-") as tmp, \
            ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp}/cap.db")) as server, \
            PerseusClient(f"127.0.0.1:{server.port}", retry_timeout=30) as client, contextlib.ExitStack() as logs:
        profiles = {job: first_stages(name) for job, name in JOBS.items()}
        for job, profile in profiles.items():
            save_profile(profile, Path(tmp) / job, model=job, partition="uniform", num_stages=STAGES, source=job)
            client.register_job(job_id=job, model="gpt3-tiny", partition="uniform", num_stages=STAGES,
                                num_microbatches=MICROBATCHES, blocking_power=profile.blocking_power, profile=profile)
        for job in JOBS:
            client.wait_for_phase(job, "serving", timeout=300)
        frontiers = {job: client.get_frontier(job).plans for job in JOBS}
        most = sum(f[0].energy / f[0].iteration_time for f in frontiers.values())
        least = sum(min(p.energy / p.iteration_time for p in f) for f in frontiers.values())
        cap = least + args.fraction * (most - least)
        sims = [SimulatedJob(client, job, profiles[job], 1, MICROBATCHES, 0.0, 0) for job in JOBS]
        limit = uniform_limit(sims, cap)
        limits = [limit]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        env.pop("PERSEUS_DEVICE", None)
        try:
            for k, job in enumerate(JOBS):
                cmd = [sys.executable, "-m", "merak_integration.launch", "gpt3-tiny", "2", str(MICROBATCHES),
                       "--pp", str(STAGES), "--device", "sim", "--sim_profile", str(Path(tmp) / job / "profile.csv"),
                       "--sim_time_scale", str(args.time_scale), "--max_steps", "100000",
                       "--master_port", str(29600 + 17 * k), "--server", f"127.0.0.1:{server.port}",
                       "--job_name", job, "--out_dir", str(Path(tmp) / f"out-{job}")]
                procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                              stderr=logs.enter_context(open(Path(tmp) / f"{job}.log", "wb")),
                                              start_new_session=True))
            started = time.perf_counter()
            phases: list[tuple[str, dict[str, int], float]] = []  # (name, iterations at start, measured W)

            def advance(count: int, name: str) -> dict[str, int]:
                """Wait until every job ran ``count`` more iterations; returns the counts at the start."""
                start = {job: client.get_job(job).num_iterations for job in JOBS}
                deadline = time.monotonic() + 600
                while min(client.get_job(job).num_iterations - start[job] for job in JOBS) < count:
                    for job, p in zip(JOBS, procs, strict=True):
                        if p.poll() is not None:
                            log = (Path(tmp) / f"{job}.log").read_text()[-3000:]
                            raise SystemExit(f"{job}'s training run exited ({p.returncode}):\n{log}")
                    if time.monotonic() > deadline:
                        raise SystemExit(f"phase {name}: the jobs did not reach {args.phase} iterations in 600 s")
                    time.sleep(0.2)
                return start

            def run_phase(name: str) -> float:
                """Let the change settle, then measure a phase; returns its measured watts."""
                advance(args.settle, name)
                start = advance(args.phase, name)
                watts = client.get_power_cap().measured_power
                phases.append((name, start, watts))
                ends.append({job: client.get_job(job).num_iterations for job in JOBS})
                return watts

            def uniform(watts_per_gpu: float) -> float:
                for job in JOBS:
                    client.set_target(job, Target.of_baseline("global-power-limit", power_limits=(watts_per_gpu,)))
                return run_phase(f"uniform {watts_per_gpu:.0f} W/GPU")

            ends: list[dict[str, int]] = []
            run_phase("no cap")
            client.set_power_cap(cap)
            run_phase("Perseus cap")
            client.set_power_cap(None)
            planned = sum(planned_power_under_limit(sim, limit) for sim in sims)
            measured = uniform(limit)
            # The operator's second try: the limit whose planned power, scaled by what the first try measured
            # over planned, fits the cap (a uniform policy gets the same feedback the cap has).
            limits.append(uniform_limit(sims, cap * planned / measured))
            if limits[-1] != limit:
                uniform(limits[-1])
            wall = time.perf_counter() - started
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        db = sqlite3.connect(f"{tmp}/cap.db")
        times: dict[tuple[str, str], float] = {}
        for (name, start, _), end in zip(phases, ends, strict=True):
            for job in JOBS:
                rows = db.execute("SELECT time FROM scheduler_iteration_reports WHERE job_id = ? AND rank = 0 "
                                  "AND iteration >= ? AND iteration < ?",
                                  (job, start[job], end[job])).fetchall()
                times[(name, job)] = statistics.median(t for (t,) in rows)
        db.close()
    table = Table("policy", "measured W", "of cap", *(f"{job} s/iter" for job in JOBS), "total slowdown",
                  title=(f"3 live training runs (real workers, simulated GPUs, time scale {args.time_scale}); cap "
                         f"{cap:.0f} W (planned: fastest {most:.0f} W, least-energy {least:.0f} W); "
                         f"{args.settle} settling + {args.phase} measured iterations per phase; {wall:.0f} s"))
    for name, _, watts in phases:
        slow = sum(times[(name, job)] / times[("no cap", job)] - 1 for job in JOBS)
        table.add_row(name, f"{watts:.0f}", f"{100 * watts / cap:.1f}%",
                      *(f"{times[(name, job)]:.3f}" for job in JOBS), f"{100 * slow:.2f}%")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
