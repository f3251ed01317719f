"""Pruning exploration order, dropping of non-converging batch sizes, and rounds."""

from __future__ import annotations

import pytest

from perseus.bso.pruning import ExplorationResult as R
from perseus.bso.pruning import replay_pruning

SIZES = [8, 16, 32, 64, 128, 256]


def drive(converges: dict[int, bool], costs: dict[int, float], rounds: int = 2) -> tuple[list[int], tuple[int, ...]]:
    """Run pruning to the end against a fixed outcome per batch size; returns the order and survivors."""
    results: list[R] = []
    order = []
    for _ in range(10 * len(SIZES) * rounds):  # far more trials than pruning can take
        state = replay_pruning(SIZES, 64, rounds, results)
        if state.done:
            return order, state.survivors
        bs = state.next_batch_size
        assert bs is not None
        order.append(bs)
        results.append(R(bs, costs[bs], converges[bs]))
    raise AssertionError(f"pruning did not finish after {len(order)} trials: {order}")


def test_explores_down_then_up_and_drops_failures() -> None:
    converges = {8: False, 16: True, 32: True, 64: True, 128: True, 256: False}
    costs = {8: 9.0, 16: 5.0, 32: 3.0, 64: 4.0, 128: 6.0, 256: 9.0}
    order, survivors = drive(converges, costs)
    # Round 1 from 64: down 64, 32, 16, 8 (fails), up 128, 256 (fails).
    # Round 2 from the cheapest (32) over {16, 32, 64, 128}: down 32, 16, up 64, 128.
    assert order == [64, 32, 16, 8, 128, 256, 32, 16, 64, 128]
    assert survivors == (16, 32, 64, 128)


def test_failure_in_round_two_is_dropped() -> None:
    results = [R(64, 4.0, True), R(32, 3.0, True), R(16, 5.0, False), R(128, 6.0, True), R(256, 9.0, False)]
    state = replay_pruning(SIZES, 64, 2, results)
    assert state.round == 1 and state.anchor == 32 and state.next_batch_size == 32
    results += [R(32, 3.0, True), R(64, 4.0, True), R(128, 20.0, False)]
    state = replay_pruning(SIZES, 64, 2, results)
    assert state.done and state.survivors == (32, 64)


def test_default_that_never_converges_keeps_the_default() -> None:
    results = [R(64, 4.0, False), R(128, 6.0, False)]
    state = replay_pruning(SIZES, 64, 2, results)
    assert state.done and state.survivors == (64,)


def test_out_of_order_history_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected 64"):
        replay_pruning(SIZES, 64, 2, [R(32, 1.0, True)])
    with pytest.raises(ValueError, match="not among"):
        replay_pruning(SIZES, 48, 2, [])
