"""Pruning exploration: which batch sizes are worth a bandit arm.

Starting from the default batch size, runs explore downwards (default, next smaller, ...) until a
batch size fails to converge, then upwards from the default. Batch sizes that converged survive the
round; the cheapest of them becomes the anchor of the next round. After ``num_rounds`` rounds the
survivors are the bandit's arms.

The state is *replayed* from the ordered list of exploration results rather than stored, so it is
always consistent with the trial rows in the database, whichever replica wrote them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ExplorationResult:
    """Outcome of one exploration trial: its batch size, cost and whether it converged."""

    batch_size: int
    cost: float
    converged: bool


@dataclass(frozen=True)
class PruningState:
    """Where pruning stands after the given results.

    Attributes:
        next_batch_size: The batch size to explore next, or None when pruning is over.
        survivors: The candidate set: the current round's set while pruning, the final arms after.
        round: The current round (0-based); equals the number of rounds when done.
        anchor: The batch size the current round explores from (the cheapest converged so far).
    """

    next_batch_size: int | None
    survivors: tuple[int, ...]
    round: int
    anchor: int

    @property
    def done(self) -> bool:
        return self.next_batch_size is None


def replay_pruning(
    batch_sizes: Sequence[int],
    default: int,
    num_rounds: int,
    results: Sequence[ExplorationResult],
) -> PruningState:
    """Replay pruning over ``results`` (in the order the trials were issued) and say what comes next.

    Raises:
        ValueError: if ``default`` is not a candidate, or a result's batch size is not the one the
            replay expected at that point (the history was not produced by this procedure).
    """
    candidates = sorted(set(batch_sizes))
    if default not in candidates:
        raise ValueError(f"default batch size {default} is not among the candidates {candidates}")
    anchor = default
    consumed = 0
    for round_index in range(num_rounds):
        good: list[int] = []
        best_cost = math.inf
        pos = candidates.index(anchor)
        down = sorted(candidates[: pos + 1], reverse=True)
        up = candidates[pos + 1 :]
        for direction in (down, up):
            for bs in direction:
                if consumed == len(results):
                    return PruningState(bs, tuple(candidates), round_index, anchor)
                result = results[consumed]
                consumed += 1
                if result.batch_size != bs:
                    raise ValueError(f"exploration result for batch size {result.batch_size}, expected {bs}")
                if not result.converged:
                    break  # this direction is exhausted: larger/smaller ones are assumed worse
                good.append(bs)
                if result.cost < best_cost:
                    best_cost, new_anchor = result.cost, bs
        if not good:
            # Nothing converged (not even the default): keep the default so the job can still run.
            return PruningState(None, (default,), num_rounds, default)
        candidates = sorted(good)
        anchor = new_anchor
    return PruningState(None, tuple(candidates), num_rounds, anchor)
