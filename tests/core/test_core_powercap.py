"""The cluster power cap: exact against brute force, the Lagrangian's bound, floors and infeasible caps."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from perseus.errors import InputError
from perseus.solver.powercap import CapJob, CapOption, solve_cap


def random_job(rng: random.Random, job_id: str, n: int) -> CapJob:
    """A frontier-like job: faster plans draw more power (with some non-convexity)."""
    t0 = rng.uniform(0.5, 3.0)
    options = []
    for i in range(n):
        slow = 1.0 + i * rng.uniform(0.005, 0.05)
        options.append(CapOption(f"{job_id}-p{i}", t0 * slow, rng.uniform(200, 400) * 8 / slow**rng.uniform(1, 3)))
    return CapJob(job_id, tuple(options), weight=rng.choice([0.5, 1.0, 2.0]),
                  max_slowdown=rng.choice([math.inf, 1.1, 1.3]))


def brute_force(jobs: list[CapJob], watts: float) -> float | None:
    """Least weighted slowdown over every combination of every job's options (floors applied)."""
    best = None
    allowed = [[o for o in j.options if o.iteration_time <= j.reference_time * j.max_slowdown * (1 + 1e-9)] for j in jobs]
    for combo in itertools.product(*allowed):
        if sum(o.power for o in combo) <= watts * (1 + 1e-9):
            cost = sum(j.weight * (o.iteration_time / j.reference_time - 1) for j, o in zip(jobs, combo, strict=True))
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_exact_equals_brute_force_and_lagrangian_is_bounded(seed: int) -> None:
    rng = random.Random(seed)
    jobs = [random_job(rng, f"j{k}", rng.randint(2, 7)) for k in range(rng.randint(1, 4))]
    least = sum(j.admissible()[0].power for j in jobs)
    most = sum(max(o.power for o in j.options) for j in jobs)
    watts = rng.uniform(least, most)
    want = brute_force(jobs, watts)
    assert want is not None  # watts >= the least admissible power, so some combination fits
    exact = solve_cap(jobs, watts)
    assert exact.exact and exact.feasible
    assert exact.total_power <= watts * (1 + 1e-9)
    assert exact.weighted_slowdown == pytest.approx(want, abs=1e-12)
    for job in jobs:
        assert exact.plans[job.job_id].iteration_time <= job.reference_time * job.max_slowdown * (1 + 1e-9)

    approx = solve_cap(jobs, watts, exact_state_limit=0)
    assert not approx.exact and approx.feasible
    assert approx.total_power <= watts * (1 + 1e-9)
    assert approx.lower_bound <= want + 1e-12
    assert approx.weighted_slowdown >= want - 1e-12
    assert approx.gap == pytest.approx(approx.weighted_slowdown - approx.lower_bound)


def test_lagrangian_gap_is_small_on_many_jobs() -> None:
    """With many jobs the integral greedy sits close to the LP bound (one fractional segment at most)."""
    rng = random.Random(7)
    jobs = [random_job(rng, f"j{k}", 40) for k in range(60)]
    least = sum(j.admissible()[0].power for j in jobs)
    most = sum(max(o.power for o in j.options) for j in jobs)
    solution = solve_cap(jobs, (least + most) / 2, exact_state_limit=0)
    # One job's worst slowdown bounds the greedy's loss; in practice it is far smaller.
    assert solution.gap <= max(j.cost(o) for j in jobs for o in j.admissible())
    assert solution.gap / solution.weighted_slowdown < 0.05


def test_cap_below_least_power_is_reported_and_runs_least_power_plans() -> None:
    job = CapJob("a", (CapOption("fast", 1.0, 900.0), CapOption("slow", 1.2, 500.0)))
    solution = solve_cap([job], 400.0)
    assert not solution.feasible
    assert solution.plans["a"].name == "slow"
    assert "below the 500 W" in solution.note


def test_floor_is_never_broken_even_if_that_makes_the_cap_infeasible() -> None:
    job = CapJob("a", (CapOption("fast", 1.0, 900.0), CapOption("slow", 1.2, 500.0)), max_slowdown=1.1)
    solution = solve_cap([job], 600.0)
    assert not solution.feasible
    assert solution.plans["a"].name == "fast"


def test_weights_decide_who_slows_down() -> None:
    a = CapJob("a", (CapOption("fast", 1.0, 1000.0), CapOption("slow", 1.1, 600.0)), weight=1.0)
    b = CapJob("b", (CapOption("fast", 1.0, 1000.0), CapOption("slow", 1.1, 600.0)), weight=3.0)
    solution = solve_cap([a, b], 1600.0)
    assert (solution.plans["a"].name, solution.plans["b"].name) == ("slow", "fast")
    assert solution.weighted_slowdown == pytest.approx(0.1)


def test_from_frontier_counts_every_pipeline() -> None:
    job = CapJob.from_frontier("a", [("p0", 2.0, 1000.0)], pipelines=4)
    assert job.options[0].power == pytest.approx(2000.0)


@pytest.mark.parametrize("watts", [0.0, -1.0, math.nan, math.inf])
def test_bad_cap_is_one_clear_error(watts: float) -> None:
    job = CapJob("a", (CapOption("p", 1.0, 100.0),))
    with pytest.raises(InputError, match="--watts"):
        solve_cap([job], watts)
