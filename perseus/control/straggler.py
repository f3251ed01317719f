"""Automatic straggler detection: which data-parallel pipeline is persistently slower than the others.

A *straggler* is a pipeline whose *pace* (measured busy time of its stages over the busy time its plan
predicts, the slowest stage counting) stays above the other pipelines' pace for a while. The pace is
normalised by each pipeline's own plan, so a fast pipeline that was switched to a slower plan to keep
pace does not look slow, and the decision does not flip back once it is acted on.

Noise never flips a decision: a pipeline's pace is the median of its last ``window`` iterations (more
than half of them must be slow before it moves), entering needs ``enter`` and leaving ``exit`` (a gap),
a change is made only once called for ``confirm`` iterations in a row, and a decision stands for at
least ``dwell`` iterations.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from perseus.errors import InputError


@dataclass(frozen=True)
class StragglerConfig:
    """Thresholds and windows of the detector (``perseus serve --straggler-*``)."""

    window: int = 9
    """Iterations per pipeline the median covers (odd): 5 slow ones of 9 move it, 4 outliers never do."""
    enter: float = 1.10
    """Relative pace at which a pipeline becomes a straggler: above CPU/network jitter (a few %)."""
    exit: float = 1.05
    """Relative pace below which a straggler has recovered; the gap to ``enter`` is the hysteresis."""
    confirm: int = 3
    """Consecutive iterations a change must be called for before it is made (a burst of outliers is not)."""
    dwell: int = 10
    """Iterations a decision stands before the next one may change it."""

    def validate(self) -> None:
        if not 3 <= self.window <= 1000:
            raise InputError("--straggler-window", f"must be in [3, 1000] iterations, got {self.window}")
        if not 1.0 < self.enter <= 10.0:
            raise InputError("--straggler-enter", f"must be in (1, 10], got {self.enter}")
        if not 1.0 <= self.exit < self.enter:
            raise InputError("--straggler-exit", f"must be in [1, --straggler-enter={self.enter}), got {self.exit}")
        if not 1 <= self.confirm <= 1000:
            raise InputError("--straggler-confirm", f"must be in [1, 1000] iterations, got {self.confirm}")
        if not 0 <= self.dwell <= 100_000:
            raise InputError("--straggler-dwell", f"must be in [0, 100000] iterations, got {self.dwell}")


@dataclass(frozen=True)
class StragglerState:
    """What the detector remembers about one job: recent paces, current stragglers, last change."""

    paces: Mapping[int, tuple[float, ...]] = field(default_factory=dict)
    """Pipeline -> its last ``window`` paces, oldest first."""
    slow: Mapping[int, float] = field(default_factory=dict)
    """Straggling pipeline -> its pace relative to the others' when it was (last) decided."""
    changed_at: int | None = None
    """Iteration of the last decision (``None``: none yet)."""
    pending: Mapping[int, float] | None = None
    """The change called for (the straggler set it would make), while it is being confirmed."""
    pending_count: int = 0
    """Consecutive iterations ``pending`` has been called for."""


def relative_paces(config: StragglerConfig, state: StragglerState) -> dict[int, float]:
    """Each pipeline's median pace over the median of the others' (empty until every window is full)."""
    if len(state.paces) < 2 or any(len(w) < config.window for w in state.paces.values()):
        return {}
    medians = {p: statistics.median(w) for p, w in state.paces.items()}
    out: dict[int, float] = {}
    for p, med in medians.items():
        others = statistics.median(v for q, v in medians.items() if q != p)
        out[p] = med / others if others > 0 else 1.0
    return out


def observe(config: StragglerConfig, state: StragglerState, iteration: int, paces: Mapping[int, float]) -> StragglerState:
    """The state after one iteration in which pipeline ``p`` ran at pace ``paces[p]``."""
    windows = dict(state.paces)
    for p, pace in paces.items():
        windows[p] = (*windows.get(p, ())[-(config.window - 1):], pace)
    state = replace(state, paces=windows)
    if state.changed_at is not None and iteration - state.changed_at < config.dwell:
        return state
    rel = relative_paces(config, state)
    if not rel:
        return state
    slow = dict(state.slow)
    for p, r in rel.items():
        if p in slow:
            if r <= config.exit:
                del slow[p]  # recovered
            elif abs(r / slow[p] - 1) >= config.enter - 1:
                slow[p] = r  # much slower or faster than decided: the others' pace must follow
        elif r >= config.enter:
            slow[p] = r
    if len(slow) >= len(rel) or slow == dict(state.slow):
        # nothing to change (or everyone slower than everyone: no reference left)
        return replace(state, pending=None, pending_count=0)
    same = state.pending is not None and set(state.pending) == set(slow)
    count = state.pending_count + 1 if same else 1
    if count < config.confirm:
        return replace(state, pending=slow, pending_count=count)
    return replace(state, slow=slow, changed_at=iteration, pending=None, pending_count=0)
