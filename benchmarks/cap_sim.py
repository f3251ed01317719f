"""Simulated GPUs of a whole job, reporting measured iteration time and energy to a real Perseus server.

Every rank of every data-parallel pipeline registers with the server and follows its schedule the
way a worker does: it re-reads its schedule when a report's acknowledged version differs from the
one it runs. One iteration of a pipeline is simulated on the profile's DAG:

* PLAN mode: each instruction runs at the clock the schedule names;
* POWER_LIMIT mode: each instruction runs at the highest clock whose profiled power fits under the
  limit (what :class:`perseus.device.sim.SimulatedGPU` does under a power limit).

Each instruction's time and energy are the profiled ones times independent log-normal noise (the
"hardware" never matches the profile exactly). A pipeline's time is the longest path; the job's
iteration time is its slowest pipeline's (data parallelism synchronizes them); every rank reports
that time and its own energy: its instructions plus blocking power for the rest of the iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from perseus.client import PerseusClient, ServedSchedule
from perseus.pipeline.costs import instruction_measurements
from perseus.pipeline.dag import PipelineDAG
from perseus.profile.model import Measurement, PipelineProfile
from perseus.reports import IterationReport


def limited_clock(measurements: dict[int, Measurement], watts: float) -> int:
    """The highest clock whose profiled average power fits under ``watts`` (the lowest if none does)."""
    for f in sorted(measurements, reverse=True):
        m = measurements[f]
        if m.energy / m.time <= watts:
            return f
    return min(measurements)


@dataclass
class SimulatedJob:
    """All ranks of one job: ``pipelines`` x ``profile.num_stages`` simulated GPUs."""

    client: PerseusClient
    job_id: str
    profile: PipelineProfile
    pipelines: int
    microbatches: int
    noise: float
    seed: int
    dag: PipelineDAG = field(init=False)
    schedules: dict[int, ServedSchedule] = field(init=False, default_factory=dict)
    iteration: int = field(init=False, default=0)
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.dag = PipelineDAG.build("1f1b", self.profile.num_stages, self.microbatches)
        self.rng = np.random.default_rng(self.seed)
        self._costs: list[dict[int, Measurement]] = []
        for inst in self.dag.nodes:
            ms = instruction_measurements(self.profile, self.dag, inst.stage, inst.kind, inst.chunk)
            self._costs.append({m.frequency: m for m in ms})

    @property
    def stages(self) -> int:
        return self.profile.num_stages

    def register(self) -> None:
        for p in range(self.pipelines):
            for s in range(self.stages):
                rank = p * self.stages + s
                self.schedules[rank] = self.client.register_rank(
                    self.job_id, rank, s, self.profile.frequencies(), pipeline_id=p, gpu_name="Simulated GPU")

    def refresh(self, version: int) -> None:
        """Re-read every schedule older than ``version`` (what a worker does after a report's ack)."""
        for rank, schedule in self.schedules.items():
            if schedule.version != version:
                self.schedules[rank] = self.client.get_schedule(self.job_id, rank)

    def _clocks(self, pipeline: int) -> list[int]:
        """The clock of every DAG node of one pipeline under its ranks' schedules."""
        clocks = [0] * self.dag.num_nodes
        for s, nodes in enumerate(self.dag.stage_nodes):
            schedule = self.schedules[pipeline * self.stages + s]
            for pos, node in enumerate(nodes):
                costs = self._costs[node]
                if schedule.mode == "plan":
                    clocks[node] = min(costs, key=lambda f: abs(f - schedule.instructions[pos].frequency))
                elif schedule.mode == "power_limit":
                    clocks[node] = limited_clock(costs, schedule.power_limit)
                else:  # default clocks: the highest
                    clocks[node] = max(costs)
        return clocks

    def step(self, run_id: str) -> tuple[float, float]:
        """Simulate and report one iteration; returns (iteration time, job power in watts)."""
        n = self.dag.num_nodes
        per_pipeline = []
        for p in range(self.pipelines):
            clocks = self._clocks(p)
            t_noise = self.rng.lognormal(0.0, self.noise, n)
            e_noise = self.rng.lognormal(0.0, self.noise, n)
            durations = np.array([self._costs[i][f].time for i, f in enumerate(clocks)]) * t_noise
            energies = np.array([self._costs[i][f].energy for i, f in enumerate(clocks)]) * e_noise
            per_pipeline.append((float(self.dag.finish_times(durations).max()), durations, energies))
        iteration_time = max(t for t, _, _ in per_pipeline)
        reports = []
        total = 0.0
        for p, (_, durations, energies) in enumerate(per_pipeline):
            for s, nodes in enumerate(self.dag.stage_nodes):
                busy = float(durations[list(nodes)].sum())
                energy = float(energies[list(nodes)].sum()) + self.profile.blocking_power * (iteration_time - busy)
                total += energy
                rank = p * self.stages + s
                reports.append(IterationReport(rank, self.iteration, iteration_time, energy,
                                               self.schedules[rank].plan_name))
        ack = self.client.report_iterations(self.job_id, run_id, reports)
        self.iteration += 1
        self.refresh(ack.version)
        assert math.isfinite(total)
        return iteration_time, total / iteration_time


def planned_power_under_limit(job: SimulatedJob, watts: float) -> float:
    """Noise-free watts of the whole job when every GPU runs under a ``watts`` power limit."""
    from perseus.pipeline.evaluate import evaluate_frequencies

    clocks = [limited_clock(costs, watts) for costs in job._costs]
    t, e = evaluate_frequencies(job.profile, job.dag, clocks)
    return job.pipelines * e / t


def uniform_limit(jobs: list[SimulatedJob], cap: float) -> float:
    """The highest single per-GPU power limit under which the jobs' summed noise-free power fits ``cap``."""
    candidates = sorted({m.energy / m.time for job in jobs for costs in job._costs for m in costs.values()})
    lo, hi = 0, len(candidates) - 1  # bisection: power grows with the limit

    def fits(i: int) -> bool:
        return sum(planned_power_under_limit(j, candidates[i]) for j in jobs) <= cap * (1 + 1e-9)

    if not fits(lo):
        return candidates[lo]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return candidates[lo]
