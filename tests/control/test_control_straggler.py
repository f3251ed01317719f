"""The straggler detector (pure): robust to noise, hysteresis, dwell, recovery."""

from __future__ import annotations

import itertools
import random

import pytest

from perseus.control.straggler import StragglerConfig, StragglerState, observe, relative_paces
from perseus.errors import InputError

CFG = StragglerConfig(window=9, enter=1.10, exit=1.05, confirm=3, dwell=10)


def _run(paces_by_iteration: list[dict[int, float]], cfg: StragglerConfig = CFG) -> list[dict[int, float]]:
    """The straggler set after each iteration."""
    state = StragglerState()
    out = []
    for i, paces in enumerate(paces_by_iteration):
        state = observe(cfg, state, i, paces)
        out.append(dict(state.slow))
    return out


def test_a_persistent_slowdown_is_detected_within_the_window() -> None:
    its = [{0: 1.0, 1: 1.0}] * 20 + [{0: 1.0, 1: 1.2}] * 20
    slow = _run(its)
    first = next(i for i, s in enumerate(slow) if s)
    # the median moves once more than half the window is slow, then the change is confirmed
    assert first == 20 + CFG.window // 2 + CFG.confirm - 1
    assert set(slow[first]) == {1} and slow[first][1] == pytest.approx(1.2)
    assert all(s == slow[first] for s in slow[first:])  # and it stays


def test_noise_never_flips() -> None:
    """5% Gaussian jitter plus 1 in 20 iterations 1.5x slower (a hiccup) on any pipeline: never a straggler."""
    rng = random.Random(7)
    its = []
    for _ in range(5000):
        its.append({p: rng.gauss(1.0, 0.05) * (1.5 if rng.random() < 0.05 else 1.0) for p in (0, 1, 2)})
    assert not any(_run(its))


def test_hysteresis_keeps_a_straggler_between_the_thresholds() -> None:
    """Entered at 1.2x; at 1.07x (between exit 1.05 and enter 1.10) it stays; at 1.0x it recovers."""
    its = [{0: 1.0, 1: 1.2}] * 30 + [{0: 1.0, 1: 1.07}] * 40 + [{0: 1.0, 1: 1.0}] * 30
    slow = _run(its)
    assert slow[29] and slow[69]  # entered, and kept between the thresholds
    assert not slow[-1]  # recovered
    # a pipeline that starts at 1.07x never enters
    assert not any(_run([{0: 1.0, 1: 1.07}] * 100))


def test_dwell_limits_how_often_a_decision_changes() -> None:
    """A pipeline alternating slow and fast every 8 iterations changes the decision at most every dwell."""
    its = [{0: 1.0, 1: 1.3 if (i // 8) % 2 else 1.0} for i in range(300)]
    slow = _run(its)
    changes = [i for i in range(1, len(slow)) if slow[i] != slow[i - 1]]
    assert len(changes) >= 4
    assert all(b - a >= CFG.dwell for a, b in itertools.pairwise(changes))


def test_paces_are_relative_to_the_other_pipelines() -> None:
    """All pipelines equally slow (a slower plan everywhere) is no straggler; one alone is."""
    assert not any(_run([{0: 1.3, 1: 1.3, 2: 1.3}] * 50))
    slow = _run([{0: 1.3, 1: 1.3, 2: 1.6}] * 50)
    assert set(slow[-1]) == {2} and slow[-1][2] == pytest.approx(1.6 / 1.3)


def test_no_decision_before_every_window_is_full_or_with_one_pipeline() -> None:
    state = observe(CFG, StragglerState(), 0, {0: 1.0, 1: 2.0})
    assert relative_paces(CFG, state) == {} and not state.slow
    assert not any(_run([{0: 2.0}] * 50))


@pytest.mark.parametrize("field,value", [("window", 1), ("enter", 1.0), ("exit", 1.2), ("confirm", 0), ("dwell", -1)])
def test_config_validation_names_the_flag(field: str, value: float) -> None:
    from dataclasses import replace

    with pytest.raises(InputError, match=f"--straggler-{field}"):
        replace(CFG, **{field: value}).validate()
