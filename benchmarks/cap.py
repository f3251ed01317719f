"""A cluster power cap over three jobs: Perseus's per-job plan choice against one uniform power limit.

Three jobs share a power budget: GPT-3 175B and BLOOM on A100s and GPT-3 175B on A40s (the shipped
8-stage profiles, 1F1B, 12 microbatches), with 4, 2 and 4 data-parallel pipelines. For each cap:

* **Perseus**: every job's frontier is computed, and :func:`perseus.solver.powercap.solve_cap` picks one
  plan per job so that the summed planned power fits the cap with the least total slowdown.
* **Uniform power limit**: the policy a cluster operator applies without Perseus (Zeus-style global
  power limit): every GPU of every job gets the same power limit, the highest that keeps the summed
  power within the cap; each stage then runs at the highest clock whose profiled power fits under it.

Slowdown is against each job's all-max-frequency iteration time, summed over jobs (weights 1). Both
policies are evaluated exactly on the profiled numbers (planned power, not measured on GPUs).
Run: .venv/bin/python benchmarks/cap.py [--microbatches 12] [--points 8]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from perseus.plan.model import FrequencyPlan
from perseus.profile import load_profile
from perseus.profile.model import PipelineProfile
from perseus.server.baselines import build_baseline, stage_frequencies, stage_power
from perseus.solver.frontier import compute_frontier
from perseus.solver.powercap import RELATIVE_SLACK, CapJob, solve_cap

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


if __name__ == "__main__":
    main()
