"""The batch size search policy: which batch size a new run gets, and when a run must stop.

Pure functions over the job's configuration and its trial history. The gRPC service calls them
inside a database transaction; the trace simulator calls the very same functions in memory, so the
simulated results describe what the service does.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perseus.bso.bandit import GaussianThompsonSampler
from perseus.bso.pruning import ExplorationResult, PruningState, replay_pruning

DEFAULT_PRUNING_ROUNDS = 2


class TrialKind(str, enum.Enum):
    """Why a trial got its batch size."""

    EXPLORATION = "exploration"  # drives pruning; one in flight at a time
    CONCURRENT = "concurrent"  # started while an exploration trial was running: best known batch size
    BANDIT = "bandit"  # Thompson sampling over the survivors


class TrialStatus(str, enum.Enum):
    RUNNING = "running"
    CONVERGED = "converged"
    STOPPED = "stopped"  # ended without converging (cost threshold, max epochs, or the user stopped it)
    FAILED = "failed"  # crashed, killed or lease expired


class Decision(enum.Enum):
    """The answer to an epoch report (mirrors perseus.v1.Decision)."""

    CONTINUE = 1
    CONVERGED = 2
    STOP_COST = 3
    STOP_MAX_EPOCHS = 4
    STOP_ENDED = 5


@dataclass(frozen=True)
class SearchConfig:
    """The parts of a job's spec the search needs."""

    batch_sizes: tuple[int, ...]
    default_batch_size: int
    eta: float
    beta: float
    target_metric: float
    higher_is_better: bool
    max_epochs: int
    max_power: float
    window_size: int = 0
    num_pruning_rounds: int = DEFAULT_PRUNING_ROUNDS
    seed: int = 0


@dataclass(frozen=True)
class TrialRecord:
    """What the policy needs to know about a past or running trial."""

    trial_number: int
    batch_size: int
    kind: TrialKind
    status: TrialStatus
    cost: float

    @property
    def finished(self) -> bool:
        return self.status is not TrialStatus.RUNNING

    @property
    def converged(self) -> bool:
        return self.status is TrialStatus.CONVERGED


@dataclass(frozen=True)
class Assignment:
    batch_size: int
    kind: TrialKind


def zeus_cost(energy: float, time: float, eta: float, max_power: float) -> float:
    """Energy-time cost ``eta * energy + (1 - eta) * max_power * time`` (joules, seconds, watts).

    ``eta = 1`` optimises energy only; ``eta = 0`` time only (time is priced at max power so the two
    terms share the unit joule).
    """
    return eta * energy + (1.0 - eta) * max_power * time


def best_converged(trials: Sequence[TrialRecord]) -> TrialRecord | None:
    """The cheapest converged trial. Only converged runs may set the best cost."""
    converged = [t for t in trials if t.converged]
    return min(converged, key=lambda t: (t.cost, t.trial_number)) if converged else None


MAX_EXPLORATION_FAILURES = 2


def pruning_state(config: SearchConfig, trials: Sequence[TrialRecord]) -> PruningState:
    """Replay pruning from the finished exploration trials.

    A failed (crashed, killed, lease-expired) exploration is re-tried once, since the cause may have
    nothing to do with the batch size (preemption); the second failure in a row counts as "did not
    converge" so a batch size that always crashes (out of memory) is pruned instead of retried forever.
    """
    explored = sorted((t for t in trials if t.kind is TrialKind.EXPLORATION and t.finished), key=lambda t: t.trial_number)
    results: list[ExplorationResult] = []
    failures = 0
    for t in explored:
        if t.status is TrialStatus.FAILED:
            failures += 1
            if failures < MAX_EXPLORATION_FAILURES:
                continue
        failures = 0
        results.append(ExplorationResult(t.batch_size, t.cost, t.converged))
    return replay_pruning(config.batch_sizes, config.default_batch_size, config.num_pruning_rounds, results)


def bandit_costs(config: SearchConfig, trials: Sequence[TrialRecord], arms: Sequence[int]) -> dict[int, list[float]]:
    """Cost history per arm (oldest first) as the bandit sees it.

    A run that did not converge must be re-run, so it is charged at least the early-stop threshold
    (``beta`` x best converged cost) instead of the smaller cost it stopped at; otherwise a batch size
    that never converges would look cheap. Failed (crashed) trials say nothing about cost and are left out.
    """
    best = best_converged(trials)
    history: dict[int, list[float]] = {arm: [] for arm in arms}
    for t in sorted(trials, key=lambda t: t.trial_number):
        if t.batch_size not in history or not t.finished or t.status is TrialStatus.FAILED:
            continue
        cost = t.cost
        if not t.converged and best is not None and math.isfinite(config.beta):
            cost = max(cost, config.beta * best.cost)
        history[t.batch_size].append(cost)
    return history


def next_assignment(config: SearchConfig, trials: Sequence[TrialRecord], trial_number: int) -> Assignment:
    """The batch size for trial ``trial_number`` given all trials so far (running ones included)."""
    state = pruning_state(config, trials)
    if state.next_batch_size is not None:
        exploring = any(t.kind is TrialKind.EXPLORATION and not t.finished for t in trials)
        if not exploring:
            return Assignment(state.next_batch_size, TrialKind.EXPLORATION)
        # Pruning needs its results in order; a concurrent run takes the best known batch size instead.
        best = best_converged(trials)
        return Assignment(best.batch_size if best else state.anchor, TrialKind.CONCURRENT)
    arms = list(state.survivors)
    sampler = GaussianThompsonSampler(window_size=config.window_size)
    rng = np.random.default_rng([config.seed, trial_number])
    return Assignment(sampler.choose(bandit_costs(config, trials, arms), rng), TrialKind.BANDIT)


def metric_reached(config: SearchConfig, metric: float) -> bool:
    if config.higher_is_better:
        return metric >= config.target_metric
    return metric <= config.target_metric


def epoch_decision(config: SearchConfig, epochs: int, cost: float, metric: float, best_cost: float | None) -> Decision:
    """What a run should do after ``epochs`` epochs at cumulative ``cost`` with validation ``metric``.

    Converged wins over the stop rules (the epoch is already paid for). A run is stopped once its cost
    exceeds ``beta`` x the best converged cost, or when it reached ``max_epochs`` without converging.
    """
    if metric_reached(config, metric):
        return Decision.CONVERGED
    if best_cost is not None and cost > config.beta * best_cost:
        return Decision.STOP_COST
    if epochs >= config.max_epochs:
        return Decision.STOP_MAX_EPOCHS
    return Decision.CONTINUE
