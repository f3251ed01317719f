"""Gaussian Thompson sampling over batch sizes, minimising cost.

Each arm (a batch size) has costs observed from past runs. The cost of an arm is modelled as a
Gaussian with unknown mean and a precision estimated from the arm's own recent costs; with a flat
prior the posterior of the mean is ``N(mean(costs), var(costs) / n)``. Sampling one value per arm
and taking the cheapest balances trying uncertain arms against exploiting the best known one.

The sampler is stateless: it is handed the cost history and a random generator, so several server
replicas can make the same decision from the same database rows without sharing memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArmPosterior:
    """Posterior of an arm's mean cost: ``N(mean, 1 / precision)`` from ``count`` observations."""

    mean: float
    precision: float
    count: int


@dataclass(frozen=True)
class GaussianThompsonSampler:
    """Thompson sampling with a window of recent costs per arm.

    Attributes:
        window_size: Only the most recent ``window_size`` costs of an arm are used (0 = all), so the
            bandit follows drift in cost (e.g. a changed dataset or cluster).
        num_exploration: Arms with fewer observations are tried first (need >= 2 for a variance).
        prior_mean: Mean of the prior on an arm's mean cost.
        prior_precision: Precision of that prior; 0 is a flat prior (the data alone decide).
    """

    window_size: int = 0
    num_exploration: int = 2
    prior_mean: float = 0.0
    prior_precision: float = 0.0

    def window(self, costs: Sequence[float]) -> list[float]:
        """The costs the sampler uses: the last ``window_size`` of them (oldest first)."""
        if self.window_size > 0:
            return list(costs[-self.window_size :])
        return list(costs)

    def posterior(self, costs: Sequence[float]) -> ArmPosterior:
        """Posterior of the arm's mean cost given its (windowed) costs."""
        data = np.asarray(self.window(costs), dtype=float)
        n = len(data)
        if n == 0:
            return ArmPosterior(self.prior_mean, self.prior_precision, 0)
        variance = float(np.var(data))
        if variance == 0.0:
            # One observation (or identical ones): all we know is that value; sample it exactly.
            return ArmPosterior(float(data.mean()), math.inf, n)
        noise_precision = 1.0 / variance
        precision = self.prior_precision + n * noise_precision
        mean = (self.prior_precision * self.prior_mean + noise_precision * float(data.sum())) / precision
        return ArmPosterior(mean, precision, n)

    def choose(self, history: Mapping[int, Sequence[float]], rng: np.random.Generator) -> int:
        """Pick the arm to run next.

        Args:
            history: Cost observations (oldest first) for every arm; arms absent or with too few
                observations are explored first, in random order.
            rng: Random generator; seeding it per decision makes every replica agree.
        """
        arms = sorted(history)
        if not arms:
            raise ValueError("no arms to choose from")
        under_explored = [arm for arm in arms if len(self.window(history[arm])) < self.num_exploration]
        if under_explored:
            return int(under_explored[int(rng.integers(len(under_explored)))])
        best_arm, best_sample = arms[0], math.inf
        for arm in arms:
            post = self.posterior(history[arm])
            sample = post.mean if math.isinf(post.precision) else rng.normal(post.mean, 1.0 / math.sqrt(post.precision))
            if sample < best_sample:
                best_arm, best_sample = arm, float(sample)
        return int(best_arm)
