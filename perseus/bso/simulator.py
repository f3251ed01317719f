"""Trace-driven simulation of recurring jobs: the batch size optimizer vs. the default configuration.

Every recurrence of a job runs until it reaches the target metric. The optimizer's runs take their
batch size from :func:`perseus.bso.search.next_assignment` and are stopped by
:func:`perseus.bso.search.epoch_decision` -- the functions the gRPC service runs -- with the power
limit chosen just in time per batch size (the first run of a batch size spends its first epoch
trying every power limit, then keeps the one with the lowest epoch cost). The baseline runs the
default batch size at the maximum power limit and retries a run that did not converge.

A run's epochs-to-target is sampled from the recorded runs (seeds) of that batch size, so the
simulation keeps the randomness of real training. Units: seconds, joules, watts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from perseus.bso.search import (
    Decision,
    SearchConfig,
    TrialRecord,
    TrialStatus,
    epoch_decision,
    next_assignment,
    zeus_cost,
)
from perseus.bso.traces import EpochPower, WorkloadTrace
from perseus.errors import InputError

MAX_TRIES = 20  # retries of one recurrence before the target is declared unreachable


@dataclass(frozen=True)
class SimulationConfig:
    eta: float = 0.5
    beta: float = 2.0
    window_size: int = 10
    num_pruning_rounds: int = 2
    recurrences: int | None = None  # None: 2 x |batch sizes| x |power limits|, as in the Zeus paper
    max_epochs: int | None = None  # None: twice the slowest recorded converging run of the default
    seed: int = 1


@dataclass
class RunLog:
    batch_size: int
    power_limit: int
    epochs: int
    time: float
    energy: float
    converged: bool


@dataclass
class PolicyResult:
    """Totals over all recurrences of one policy."""

    energy: float = 0.0
    time: float = 0.0
    runs: list[RunLog] = field(default_factory=list)

    def add(self, run: RunLog) -> None:
        self.runs.append(run)
        self.energy += run.energy
        self.time += run.time


@dataclass(frozen=True)
class SimulationResult:
    workload: str
    gpu: str
    recurrences: int
    max_epochs: int
    baseline: PolicyResult
    optimized: PolicyResult

    @property
    def final_config(self) -> tuple[int, int]:
        """The (batch size, power limit) the optimizer used most over its last 10 runs."""
        tail = self.optimized.runs[-10:]
        keys = [(r.batch_size, r.power_limit) for r in tail]
        return max(set(keys), key=keys.count)


def default_max_epochs(trace: WorkloadTrace) -> int:
    reached = [e for e in trace.paths[trace.workload.default_batch_size] if e is not None]
    if not reached:
        raise InputError(trace.workload.name, "the default batch size never reaches the target in the trace")
    return 2 * max(reached)


def jit_power_limit(power: dict[int, EpochPower], eta: float, max_power: float) -> int:
    """The power limit with the lowest epoch cost ``eta * J + (1 - eta) * max_power * s``."""
    return min(power, key=lambda pl: (zeus_cost(power[pl].energy_per_epoch, power[pl].time_per_epoch, eta, max_power), -pl))


Decide = Callable[[int, float, float, bool], Decision]  # (epochs, energy J, time s, reached) -> decision


def _run(
    trace: WorkloadTrace,
    batch_size: int,
    power_limit: int,
    target_epoch: int | None,
    profile_first_epoch: bool,
    decide: Decide,
) -> RunLog:
    """Run epoch by epoch until ``decide`` says anything but continue."""
    at_pl = trace.power[batch_size][power_limit]
    points = list(trace.power[batch_size].values())
    time_s = energy = 0.0
    epochs = 0
    decision = Decision.CONTINUE
    while decision is Decision.CONTINUE:
        epochs += 1
        if epochs == 1 and profile_first_epoch:
            # JIT profiling: the first epoch is split evenly across every power limit.
            time_s += sum(p.time_per_epoch for p in points) / len(points)
            energy += sum(p.energy_per_epoch for p in points) / len(points)
        else:
            time_s += at_pl.time_per_epoch
            energy += at_pl.energy_per_epoch
        decision = decide(epochs, energy, time_s, target_epoch is not None and epochs >= target_epoch)
    return RunLog(batch_size, power_limit, epochs, time_s, energy, decision is Decision.CONVERGED)


def simulate(trace: WorkloadTrace, config: SimulationConfig) -> SimulationResult:
    """Simulate ``config.recurrences`` recurrences under the baseline and under the optimizer."""
    workload = trace.workload
    sizes = trace.batch_sizes
    if workload.default_batch_size not in sizes:
        raise InputError(
            f"{workload.name} on {trace.gpu}",
            f"default batch size {workload.default_batch_size} is not in the traces (have {list(sizes)})",
        )
    max_power = float(trace.max_power_limit)
    max_epochs = config.max_epochs or default_max_epochs(trace)
    limits = {pl for bs in sizes for pl in trace.power[bs]}
    recurrences = config.recurrences or 2 * len(sizes) * len(limits)
    search = SearchConfig(
        batch_sizes=sizes, default_batch_size=workload.default_batch_size, eta=config.eta, beta=config.beta,
        target_metric=workload.target_metric, higher_is_better=workload.higher_is_better, max_epochs=max_epochs,
        max_power=max_power, window_size=config.window_size, num_pruning_rounds=config.num_pruning_rounds,
        seed=config.seed,
    )  # fmt: skip
    baseline = _simulate_baseline(trace, recurrences, max_epochs, config.seed)
    optimized = _simulate_optimizer(trace, search, recurrences, config.seed)
    return SimulationResult(workload.name, trace.gpu, recurrences, max_epochs, baseline, optimized)


def _simulate_baseline(trace: WorkloadTrace, recurrences: int, max_epochs: int, seed: int) -> PolicyResult:
    """Default batch size at the maximum power limit; a run that misses the target is retried."""
    default_bs = trace.workload.default_batch_size
    default_pl = max(trace.power[default_bs])
    rng = np.random.default_rng(seed)
    result = PolicyResult()

    def decide(epochs: int, _energy: float, _time: float, reached: bool) -> Decision:
        if reached:
            return Decision.CONVERGED
        return Decision.STOP_MAX_EPOCHS if epochs >= max_epochs else Decision.CONTINUE

    for _ in range(recurrences):
        for _ in range(MAX_TRIES):
            run = _run(trace, default_bs, default_pl, _sample(trace, default_bs, rng), False, decide)
            result.add(run)
            if run.converged:
                break
    return result


def _simulate_optimizer(trace: WorkloadTrace, search: SearchConfig, recurrences: int, seed: int) -> PolicyResult:
    """The service's policy (assignment and epoch decisions) with just-in-time power limits."""
    # The service sees a metric; the trace only says whether the target was reached.
    hit = search.target_metric
    miss = -math.inf if search.higher_is_better else math.inf
    rng = np.random.default_rng(seed)
    result = PolicyResult()
    trials: list[TrialRecord] = []
    best_cost: float | None = None
    best_pl: dict[int, int] = {}
    for _ in range(recurrences):
        for _ in range(MAX_TRIES):
            number = len(trials) + 1
            assignment = next_assignment(search, trials, number)
            bs = assignment.batch_size
            profile = bs not in best_pl
            if profile:
                best_pl[bs] = jit_power_limit(trace.power[bs], search.eta, search.max_power)

            def decide(
                epochs: int, energy: float, time_s: float, reached: bool, best: float | None = best_cost
            ) -> Decision:
                cost = zeus_cost(energy, time_s, search.eta, search.max_power)
                return epoch_decision(search, epochs, cost, hit if reached else miss, best)

            run = _run(trace, bs, best_pl[bs], _sample(trace, bs, rng), profile, decide)
            result.add(run)
            cost = zeus_cost(run.energy, run.time, search.eta, search.max_power)
            status = TrialStatus.CONVERGED if run.converged else TrialStatus.STOPPED
            trials.append(TrialRecord(number, bs, assignment.kind, status, cost))
            if run.converged:
                best_cost = cost if best_cost is None else min(best_cost, cost)
                break
    return result


def _sample(trace: WorkloadTrace, batch_size: int, rng: np.random.Generator) -> int | None:
    runs = trace.paths[batch_size]
    return runs[int(rng.integers(len(runs)))]
