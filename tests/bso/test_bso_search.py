"""Early-stop rules, concurrent assignment and the bandit's view of failed runs."""

from __future__ import annotations

import pytest

from perseus.bso.search import (
    Assignment,
    Decision,
    SearchConfig,
    TrialKind,
    TrialRecord,
    TrialStatus,
    bandit_costs,
    epoch_decision,
    next_assignment,
    zeus_cost,
)
from perseus.bso.spec import JobSpec
from perseus.errors import InputError

CONFIG = SearchConfig(
    batch_sizes=(16, 32, 64), default_batch_size=32, eta=0.5, beta=2.0, target_metric=0.8,
    higher_is_better=True, max_epochs=10, max_power=300.0,
)  # fmt: skip


def trial(n: int, bs: int, kind: TrialKind, status: TrialStatus, cost: float = 0.0) -> TrialRecord:
    return TrialRecord(n, bs, kind, status, cost)


def test_cost_units() -> None:
    # eta=0.5: half the joules plus half of max power (W) x seconds.
    assert zeus_cost(energy=1000.0, time=10.0, eta=0.5, max_power=300.0) == pytest.approx(500 + 1500)
    assert zeus_cost(1000.0, 10.0, 1.0, 300.0) == pytest.approx(1000.0)


def test_epoch_decision_rules() -> None:
    assert epoch_decision(CONFIG, 1, 100.0, 0.5, None) is Decision.CONTINUE
    assert epoch_decision(CONFIG, 3, 100.0, 0.8, 10.0) is Decision.CONVERGED  # converged wins over cost
    assert epoch_decision(CONFIG, 3, 201.0, 0.5, 100.0) is Decision.STOP_COST
    assert epoch_decision(CONFIG, 3, 200.0, 0.5, 100.0) is Decision.CONTINUE  # not above beta x best
    assert epoch_decision(CONFIG, 10, 50.0, 0.5, 100.0) is Decision.STOP_MAX_EPOCHS
    assert epoch_decision(CONFIG, 10, 5000.0, 0.5, None) is Decision.STOP_MAX_EPOCHS  # no best: no cost rule
    lower = SearchConfig(**{**CONFIG.__dict__, "higher_is_better": False, "target_metric": 40.0})
    assert epoch_decision(lower, 2, 1.0, 39.5, None) is Decision.CONVERGED
    assert epoch_decision(lower, 2, 1.0, 40.5, None) is Decision.CONTINUE


def test_concurrent_trial_gets_best_known_batch_size() -> None:
    trials = [trial(1, 32, TrialKind.EXPLORATION, TrialStatus.CONVERGED, 100.0)]
    first = next_assignment(CONFIG, trials, 2)
    assert first.kind is TrialKind.EXPLORATION and first.batch_size == 16
    trials.append(trial(2, 16, TrialKind.EXPLORATION, TrialStatus.RUNNING))
    second = next_assignment(CONFIG, trials, 3)
    assert second.kind is TrialKind.CONCURRENT and second.batch_size == 32
    # Before anything converged, a concurrent run gets the default.
    only_running = [trial(1, 32, TrialKind.EXPLORATION, TrialStatus.RUNNING)]
    assert next_assignment(CONFIG, only_running, 2) == next_assignment(CONFIG, only_running, 2)
    assert next_assignment(CONFIG, only_running, 2).batch_size == 32


def test_failed_exploration_is_retried_once_then_pruned() -> None:
    trials = [
        trial(1, 32, TrialKind.EXPLORATION, TrialStatus.CONVERGED, 100.0),
        trial(2, 16, TrialKind.EXPLORATION, TrialStatus.FAILED, 0.0),
    ]
    assert next_assignment(CONFIG, trials, 3) == Assignment(16, TrialKind.EXPLORATION)  # maybe preempted
    trials.append(trial(3, 16, TrialKind.EXPLORATION, TrialStatus.FAILED, 0.0))
    assert next_assignment(CONFIG, trials, 4).batch_size == 64  # 16 dropped, so explore upwards


def test_bandit_charges_unconverged_runs_the_stop_threshold() -> None:
    trials = [
        trial(1, 32, TrialKind.EXPLORATION, TrialStatus.CONVERGED, 100.0),
        trial(2, 16, TrialKind.BANDIT, TrialStatus.STOPPED, 150.0),
        trial(3, 16, TrialKind.BANDIT, TrialStatus.FAILED, 1.0),
        trial(4, 16, TrialKind.BANDIT, TrialStatus.RUNNING, 1.0),
    ]
    costs = bandit_costs(CONFIG, trials, [16, 32])
    assert costs == {16: [200.0], 32: [100.0]}


def test_only_converged_runs_set_best_and_bandit_avoids_failing_arm() -> None:
    trials: list[TrialRecord] = []
    n = 0
    outcome = {32: 100.0, 16: 90.0, 64: 120.0}
    order = []
    while (a := next_assignment(CONFIG, trials, n + 1)).kind is TrialKind.EXPLORATION:
        n += 1
        order.append(a.batch_size)
        trials.append(trial(n, a.batch_size, a.kind, TrialStatus.CONVERGED, outcome[a.batch_size]))
    assert order == [32, 16, 64, 16, 32, 64]  # round 2 starts from the cheapest (16)
    picks = []
    for _ in range(30):
        n += 1
        a = next_assignment(CONFIG, trials, n)
        assert a.kind is TrialKind.BANDIT
        picks.append(a.batch_size)
        # 16 is cheap when it converges but from now on never converges: stopped at a low cost.
        status = TrialStatus.STOPPED if a.batch_size == 16 else TrialStatus.CONVERGED
        cost = {16: 40.0, 32: 100.0, 64: 120.0}[a.batch_size]
        trials.append(trial(n, a.batch_size, a.kind, status, cost))
    assert picks[-10:].count(32) >= 8


def test_spec_validation_names_the_field() -> None:
    good = JobSpec("j", 32, (16, 64), 0.8, 10, max_power=300.0)
    assert good.normalized().batch_sizes == (16, 32, 64)
    for bad, word in (
        (JobSpec("j", 32, (16,), 0.8, 10, beta=1.0, max_power=300.0), "beta"),
        (JobSpec("j", 32, (16,), 0.8, 10, eta=1.5, max_power=300.0), "eta"),
        (JobSpec("j", 32, (0,), 0.8, 10, max_power=300.0), "batch sizes"),
        (JobSpec("j", 32, (16,), 0.8, 0, max_power=300.0), "max_epochs"),
        (JobSpec("j", 32, (16,), 0.8, 10), "max_power"),
        (JobSpec("", 32, (16,), 0.8, 10, max_power=1.0), "job_id"),
    ):
        with pytest.raises(InputError, match=word):
            bad.normalized()
