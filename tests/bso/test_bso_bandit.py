"""Gaussian Thompson sampling on seeded synthetic costs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perseus.bso.bandit import GaussianThompsonSampler


def run_bandit(means: dict[int, float], rounds: int, seed: int, window: int = 0, drift=None) -> list[int]:
    """Pull arms for ``rounds`` rounds on Gaussian costs (std 10); returns the arms chosen."""
    rng = np.random.default_rng(seed)
    noise = np.random.default_rng(seed + 1000)
    sampler = GaussianThompsonSampler(window_size=window)
    history: dict[int, list[float]] = {arm: [] for arm in means}
    chosen = []
    for i in range(rounds):
        current = drift(i) if drift else means
        arm = sampler.choose(history, rng)
        history[arm].append(float(noise.normal(current[arm], 10.0)))
        chosen.append(arm)
    return chosen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_converges_to_cheapest_arm(seed: int) -> None:
    means = {8: 140.0, 16: 100.0, 32: 80.0, 64: 95.0, 128: 130.0}
    chosen = run_bandit(means, 200, seed)
    tail = chosen[-100:]
    assert tail.count(32) >= 80, f"cheapest arm picked {tail.count(32)}/100 times"
    regret = sum(means[a] - 80.0 for a in chosen)
    uniform_regret = 200 * (sum(means.values()) / len(means) - 80.0)
    assert regret < 0.25 * uniform_regret


def test_window_follows_drift() -> None:
    before = {16: 80.0, 32: 120.0}
    after = {16: 120.0, 32: 70.0}
    chosen = run_bandit(before, 300, seed=7, window=5, drift=lambda i: before if i < 100 else after)
    assert chosen[60:100].count(16) >= 32
    assert chosen[-60:].count(32) >= 45, "windowed bandit did not move to the new cheapest arm"


def test_explores_arms_with_too_few_observations_first() -> None:
    sampler = GaussianThompsonSampler()
    rng = np.random.default_rng(0)
    history = {8: [1.0, 1.1], 16: [50.0], 32: [0.5, 0.6]}
    assert sampler.choose(history, rng) == 16


def test_posterior_matches_flat_prior_formula() -> None:
    sampler = GaussianThompsonSampler(window_size=3)
    post = sampler.posterior([1000.0, 10.0, 20.0, 30.0])  # the window drops the 1000
    assert post.count == 3
    assert post.mean == pytest.approx(20.0)
    assert post.precision == pytest.approx(3 / np.var([10.0, 20.0, 30.0]))
    single = sampler.posterior([42.0])
    assert single.mean == 42.0 and math.isinf(single.precision)


def test_same_seed_same_choice() -> None:
    sampler = GaussianThompsonSampler()
    history = {8: [10.0, 14.0], 16: [11.0, 13.0], 32: [12.0, 12.5]}
    picks = {sampler.choose(history, np.random.default_rng([5, t])) for t in range(3)}
    again = {sampler.choose(history, np.random.default_rng([5, t])) for t in range(3)}
    assert picks == again
    with pytest.raises(ValueError):
        sampler.choose({}, np.random.default_rng(0))
