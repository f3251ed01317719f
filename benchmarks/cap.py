"""A cluster power cap over three jobs: Perseus's per-job plan choice against one uniform power limit.

Three jobs share a power budget: GPT-3 175B and BLOOM on A100s and GPT-3 175B on A40s (the shipped
8-stage profiles, 1F1B, 12 microbatches), with 4, 2 and 4 data-parallel pipelines. For each cap:

* **Perseus**: every job's frontier is computed, and :func:`perseus.solver.powercap.solve_cap` picks one
  plan per job so that the summed planned power fits the cap with the least total slowdown.
* **Uniform power limit**: the policy a cluster operator applies without Perseus (Zeus-style global
  power limit): every GPU of every job gets the same power limit, the highest that keeps the summed
  power within the cap; each stage then runs at the highest clock whose profiled power fits under it.

Slowdown is against each job's all-max-frequency iteration time, summed over jobs (weights 1).

The first table evaluates both policies exactly on the profiled numbers (planned power). The second
runs the real server (gRPC on 127.0.0.1, SQLite in a temporary directory) with the three jobs'
simulated GPUs (:mod:`cap_sim`: every rank follows its served schedule and reports noisy measured
time and energy): first with no cap (the measured reference times), then per cap with
``perseus cap --watts`` (SetPowerCap) and with a uniform per-GPU power limit served as every job's
global-power-limit baseline. Measured power is the server's own (GetPowerCap, what ``perseus cap``
and ``perseus jobs`` show: each rank's last 10 reports); slowdown is from measured iteration times.
Run: .venv/bin/python benchmarks/cap.py [--microbatches 12] [--points 8] [--server-caps 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from perseus.client import PerseusClient, Target
from perseus.plan.model import FrequencyPlan
from perseus.profile import load_profile
from perseus.profile.model import PipelineProfile
from perseus.server.baselines import build_baseline, stage_frequencies, stage_power
from perseus.solver.frontier import compute_frontier
from perseus.solver.powercap import RELATIVE_SLACK, CapJob, solve_cap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cap_sim import SimulatedJob, uniform_limit

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
STAGES = 8


@dataclass(frozen=True)
class ClusterJob:
    name: str
    profile: PipelineProfile
    pipelines: int

    def power(self, plan: FrequencyPlan) -> float:
        return self.pipelines * plan.energy / plan.iteration_time


def uniform_power_limit(jobs: list[ClusterJob], microbatches: int, watts: float) -> tuple[float, list[FrequencyPlan]]:
    """The highest single per-GPU power limit whose plans fit the cap, and those plans."""
    limits = sorted({stage_power(j.profile, s, f) for j in jobs for s in range(STAGES)
                     for f in stage_frequencies(j.profile, s)}, reverse=True)
    plans: list[FrequencyPlan] = []
    for limit in limits:
        plans = [build_baseline(j.profile, "1f1b", STAGES, microbatches, 1, "global-power-limit",
                                power_limits=(limit,)).plan for j in jobs]
        if sum(j.power(p) for j, p in zip(jobs, plans, strict=True)) <= watts * (1 + RELATIVE_SLACK):
            return limit, plans
    return limits[-1], plans  # even the lowest limit exceeds the cap: report it as it is


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--microbatches", type=int, default=12)
    parser.add_argument("--points", type=int, default=8, help="caps between the least and the most power")
    parser.add_argument("--server-caps", type=int, default=3,
                        help="caps run on the real server with simulated GPUs (0: skip)")
    parser.add_argument("--iterations", type=int, default=10, help="measured iterations per setting on the server")
    parser.add_argument("--noise", type=float, default=0.02,
                        help="log-normal sigma of each simulated instruction's time and energy")
    args = parser.parse_args()
    m = args.microbatches
    jobs = [
        ClusterJob("gpt3-175b A100 x4", load_profile(PROFILES / "gpt3-175b+a100_sxm_bf16" / "profile.csv"), 4),
        ClusterJob("bloom A100 x2", load_profile(PROFILES / "bloom+a100_sxm_bf16" / "profile.csv"), 2),
        ClusterJob("gpt3-175b A40 x4", load_profile(PROFILES / "gpt3-175b+a40_bf16" / "profile.csv"), 4),
    ]
    start = time.perf_counter()
    frontiers = [compute_frontier(j.profile, "1f1b", STAGES, m) for j in jobs]
    solve_seconds = time.perf_counter() - start
    cap_jobs = [
        CapJob.from_frontier(j.name, [(p.name, p.iteration_time, p.energy) for p in f.plans], j.pipelines)
        for j, f in zip(jobs, frontiers, strict=True)
    ]
    fastest = [f.fastest.iteration_time for f in frontiers]
    most = sum(j.power(f.fastest) for j, f in zip(jobs, frontiers, strict=True))
    least = sum(j.power(f.min_energy) for j, f in zip(jobs, frontiers, strict=True))
    console = Console(width=160)
    console.print(f"frontiers: {', '.join(f'{j.name} {len(f.plans)} plans' for j, f in zip(jobs, frontiers, strict=True))} "
                  f"({solve_seconds:.1f} s); all-max power {most:.0f} W, least-energy plans {least:.0f} W")
    table = Table("cap W", "Perseus W", "Perseus slowdown", "exact ms", "Lagrangian slowdown / bound", "uniform limit W/GPU",
                  "uniform W", "uniform slowdown", "slowdown saved")
    for k in range(args.points):
        cap = least + (most - least) * k / max(1, args.points - 1)
        t0 = time.perf_counter()
        ours = solve_cap(cap_jobs, cap)
        solve_ms = (time.perf_counter() - t0) * 1000
        fast = solve_cap(cap_jobs, cap, exact_state_limit=0)
        limit, plans = uniform_power_limit(jobs, m, cap)
        uniform_w = sum(j.power(p) for j, p in zip(jobs, plans, strict=True))
        uniform_slow = sum(p.iteration_time / t - 1 for p, t in zip(plans, fastest, strict=True))
        table.add_row(
            f"{cap:.0f}", f"{ours.total_power:.0f}", f"{100 * ours.weighted_slowdown:.2f}%",
            f"{solve_ms:.0f}", f"{100 * fast.weighted_slowdown:.2f}% / {100 * fast.lower_bound:.2f}%",
            f"{limit:.0f}", f"{uniform_w:.0f}" + ("" if uniform_w <= cap * (1 + RELATIVE_SLACK) else " (over)"),
            f"{100 * uniform_slow:.2f}%", f"{100 * (uniform_slow - ours.weighted_slowdown):.2f} pts",
        )
    console.print(table)
    if args.server_caps > 0:
        caps = [least + (most - least) * (k + 1) / (args.server_caps + 1) for k in range(args.server_caps)]
        console.print(server_run(jobs, m, caps, args.iterations, args.noise))


WARMUP = 2
"""Iterations after a change before measuring: the first runs the old schedule until its report's ack
carries the new version (what a worker does), the second runs the new one."""


def server_run(jobs: list[ClusterJob], microbatches: int, caps: list[float], iterations: int, noise: float) -> Table:
    """Both policies on the real server with simulated GPUs: measured power and slowdown per cap."""
    from perseus.server.app import ServerConfig, ServerThread

    table = Table("cap W", "Perseus measured W", "of cap", "Perseus slowdown", "uniform limit W/GPU",
                  "uniform measured W", "of cap ", "uniform slowdown", "slowdown saved",
                  title=f"real server, simulated GPUs (noise {noise:.0%}, {iterations} measured iterations per setting)")
    ids = ["gpt3-a100", "bloom-a100", "gpt3-a40"]
    with tempfile.TemporaryDirectory(prefix="perseus-cap-") as tmp, \
            ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp}/cap.db")) as server, \
            PerseusClient(f"127.0.0.1:{server.port}", retry_timeout=30) as client:
        for job_id, j in zip(ids, jobs, strict=True):
            client.register_job(job_id=job_id, model=j.name, num_stages=STAGES, num_microbatches=microbatches,
                                dp_degree=j.pipelines, blocking_power=j.profile.blocking_power, profile=j.profile)
        for job_id in ids:
            client.wait_for_phase(job_id, "serving", timeout=600)
        sims = [SimulatedJob(client, job_id, j.profile, j.pipelines, microbatches, noise, seed)
                for seed, (job_id, j) in enumerate(zip(ids, jobs, strict=True))]
        for sim in sims:
            sim.register()
        run = iter(range(1_000_000))

        def measure() -> tuple[float, list[float]]:
            """(server's measured total watts, mean measured iteration time per job)."""
            run_id = f"r{next(run)}"
            times: list[list[float]] = [[] for _ in sims]
            for it in range(WARMUP + iterations):
                for k, sim in enumerate(sims):
                    t, _ = sim.step(run_id)
                    if it >= WARMUP:
                        times[k].append(t)
            return client.get_power_cap().measured_power, [sum(ts) / len(ts) for ts in times]

        _, reference = measure()  # no cap, every job at its fastest plan
        verdicts: list[bool] = []
        for cap in caps:
            client.set_power_cap(cap)
            ours_w, ours_t = measure()
            client.set_power_cap(None)
            limit = uniform_limit(sims, cap)
            for job_id in ids:
                client.set_target(job_id, Target.of_baseline("global-power-limit", power_limits=(limit,)))
            uni_w, uni_t = measure()
            for job_id in ids:
                client.set_target(job_id, Target.fastest())
            ours_s = sum(t / r - 1 for t, r in zip(ours_t, reference, strict=True))
            uni_s = sum(t / r - 1 for t, r in zip(uni_t, reference, strict=True))
            verdicts.append(abs(ours_w - cap) <= 0.02 * cap and ours_s < uni_s)
            table.add_row(f"{cap:.0f}", f"{ours_w:.0f}", f"{100 * ours_w / cap:.1f}%", f"{100 * ours_s:.2f}%",
                          f"{limit:.0f}", f"{uni_w:.0f}", f"{100 * uni_w / cap:.1f}%", f"{100 * uni_s:.2f}%",
                          f"{100 * (uni_s - ours_s):.2f} pts")
    table.caption = ("every cap: Perseus's measured total within 2% of the cap and less slowdown than the uniform "
                     f"limit: {'yes' if all(verdicts) else 'NO'}")
    return table


if __name__ == "__main__":
    main()
