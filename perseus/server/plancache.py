"""Decoded plans on demand: the server keeps per plan only its summary (:class:`StoredPlan`).

A 16-stage x 256-microbatch frontier holds about 3,000 plans of 8,192 instructions; decoded, one
plan is about 1.5 MB of Python objects, so the whole frontier would need GBs. The plan rows are
stored compactly (:func:`perseus.plan.store.encode_plan`, a few KB each), so the server decodes a
plan's clocks from its row when a rank needs them (its schedule, the closed loop's prediction, an
export) and keeps the recently used ones in a small LRU (:class:`PlanCache`), bounded by their
instruction count. Not thread-safe by itself: the scheduler core calls it under its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from perseus.plan import FrequencyPlan
from perseus.server.types import StoredPlan

CACHED_INSTRUCTIONS = 1_000_000
"""Decoded instructions kept (about 150 MB at ~150 bytes each): 120 plans of a 16 x 256 job, a few
thousand of a small one; a job serves one plan plus one per straggler pace, so every serving job's
plans stay decoded unless hundreds of large jobs serve at once."""


def plan_size(plan: FrequencyPlan) -> int:
    """Instructions of ``plan`` (what the cache budget counts)."""
    return sum(len(stage) for stage in plan.stages)


def matches(stored: StoredPlan, plan: FrequencyPlan) -> bool:
    """Whether ``plan`` is the one ``stored`` summarises (a reused row id must not serve another plan)."""
    return (plan.name, plan.iteration_time, plan.energy) == (stored.name, stored.iteration_time, stored.energy)


class PlanCache:
    """The last decoded plans by plan id, at most ``budget`` instructions in all (the newest always stays).

    ``load(plan_id)`` reads and decodes a plan's row (raises if the row is gone).
    """

    def __init__(self, load: Callable[[int], FrequencyPlan], budget: int = CACHED_INSTRUCTIONS) -> None:
        self._load = load
        self._budget = budget
        self._plans: OrderedDict[int, FrequencyPlan] = OrderedDict()
        self._size = 0
        self.loads = 0
        """Rows decoded so far (tests and benchmarks read it)."""

    def __len__(self) -> int:
        return len(self._plans)

    def cached(self, stored: StoredPlan) -> FrequencyPlan | None:
        """``stored``'s plan if it is decoded already (no database read), else None."""
        plan = self._plans.get(stored.id)
        if plan is None:
            return None
        if not matches(stored, plan):
            self.forget([stored.id])
            return None
        self._plans.move_to_end(stored.id)
        return plan

    def get(self, stored: StoredPlan) -> FrequencyPlan:
        """``stored``'s plan, decoded from its row if it is not cached."""
        plan = self.cached(stored)
        if plan is not None:
            return plan
        plan = self._load(stored.id)
        self.loads += 1
        if not matches(stored, plan):
            raise LookupError(f"plan row {stored.id} holds {plan.name!r}, not {stored.name!r}")
        self._plans[stored.id] = plan
        self._size += plan_size(plan)
        while self._size > self._budget and len(self._plans) > 1:
            _, old = self._plans.popitem(last=False)
            self._size -= plan_size(old)
        return plan

    def forget(self, plan_ids: Iterable[int]) -> None:
        """Drop plans whose rows were deleted (their ids may be reused by new rows)."""
        for plan_id in plan_ids:
            plan = self._plans.pop(plan_id, None)
            if plan is not None:
                self._size -= plan_size(plan)
