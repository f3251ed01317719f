"""The frontier's step loop, compiled whole: one call runs many cuts without returning to Python.

A *step* is one turn of :meth:`perseus.solver.frontier.GraphCutSolver.solve`: record the current
plan as a candidate, find the minimum cut of its critical DAG, speed the cut up, reclaim slack.
As a Python loop over compiled kernels each step paid 0.2-0.3 ms of interpreter and NumPy call
overhead (synthetic s1: 3,050 steps, 0.9 s of a 2 s run); here the loop itself is compiled and
Python only sees the state between calls (:func:`run_steps`), to report progress and to grow
the candidate buffer.

It computes exactly what the Python loop did, in the same order of floating-point operations:
sums that decide anything (a plan's energy, which reclaim sweep is cheaper) use NumPy's pairwise
summation (:func:`pairwise_sum`), so the frontier is bit-identical to the per-step Python version.

Everything here runs inside compiled code (``numba``); :mod:`perseus.solver.native` calls it
through a C entry point, so a solve needs numba only on the first run on a machine.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from perseus.pipeline.dag import FloatArray, IntArray
from perseus.solver.kernels import (
    batch_series_ties,
    critical_network,
    finish_times,
    latest_finish_times,
    reaches_through,
    reclaim_sweep,
)
from perseus.solver.mincut import LayoutIds, _warm_min_cut, pair_capacities
from perseus.solver.native_abi import (
    BLOCKING_POWER,
    CANDIDATES_FULL,
    CAP,
    CAPPED,
    DEADLINE,
    DONE,
    HAVE_FINISH,
    HAVE_LATEST,
    HAVE_PREVIOUS,
    ITERATIONS,
    LAST_MAKESPAN,
    NUM_CANDIDATES,
    NUM_STAGES,
    PREVIOUS_MAKESPAN,
    RESOLUTION,
    RUNNING,
    STATUS,
    STEP_BUDGET,
)

PAIRWISE_BLOCK = 128
"""NumPy's ``PW_BLOCKSIZE``: below it, eight running sums; above it, halves summed recursively."""


@njit(nogil=True)
def _block_sum(values: FloatArray, start: int, count: int) -> float:  # pragma: no cover - compiled
    """NumPy's sum of at most :data:`PAIRWISE_BLOCK` values: eight running sums, then the rest."""
    if count < 8:
        total = 0.0
        for i in range(start, start + count):
            total += values[i]
        return total
    lanes = np.empty(8)
    for j in range(8):
        lanes[j] = values[start + j]
    i = 8
    while i < count - count % 8:
        for j in range(8):
            lanes[j] += values[start + i + j]
        i += 8
    total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    while i < count:
        total += values[start + i]
        i += 1
    return total


@njit(nogil=True)
def pairwise_sum(values: FloatArray, start: int, count: int) -> float:  # pragma: no cover - compiled
    """``values[start:start + count].sum()`` exactly as NumPy computes it, so a compiled sum decides
    ties the way the NumPy code it replaces did: blocks of :data:`PAIRWISE_BLOCK` summed by
    :func:`_block_sum`, larger ranges split in halves (rounded to multiples of 8) and the halves'
    sums added. Written with an explicit stack: compiled recursion would need numba at load time."""
    if count <= PAIRWISE_BLOCK:
        return _block_sum(values, start, count)
    starts = np.empty(128, dtype=np.int64)  # pending ranges; depth is at most log2(count)
    counts = np.empty(128, dtype=np.int64)
    combine = np.empty(128, dtype=np.bool_)  # a marker: add the top two partial sums
    sums = np.empty(128)
    top = sums_top = 0
    starts[0], counts[0], combine[0] = start, count, False
    top = 1
    while top > 0:
        top -= 1
        if combine[top]:
            sums_top -= 1
            sums[sums_top - 1] = sums[sums_top - 1] + sums[sums_top]
            continue
        s, c = starts[top], counts[top]
        if c <= PAIRWISE_BLOCK:
            sums[sums_top] = _block_sum(values, s, c)
            sums_top += 1
            continue
        half = c // 2
        half -= half % 8
        combine[top] = True
        starts[top + 1], counts[top + 1], combine[top + 1] = s + half, c - half, False
        starts[top + 2], counts[top + 2], combine[top + 2] = s, half, False
        top += 3
    return sums[0]


@njit(nogil=True)
def _gather(table: FloatArray, node_class: IntArray, choice: IntArray) -> FloatArray:  # pragma: no cover
    """``table[node_class, choice]``: every node's value at its chosen option."""
    out = np.empty(len(choice))
    for v in range(len(choice)):
        out[v] = table[node_class[v], choice[v]]
    return out


@njit(nogil=True)
def _cut(  # pragma: no cover - compiled
    edges: IntArray,
    node_class: IntArray,
    class_time: FloatArray,
    next_option: IntArray,
    rate_table: FloatArray,
    layout: tuple[IntArray, IntArray, IntArray, IntArray, LayoutIds, LayoutIds, LayoutIds, LayoutIds, LayoutIds, LayoutIds],
    flow: FloatArray,
    choice: IntArray,
    durations: FloatArray,
    finish: FloatArray,
    latest: FloatArray,
    makespan: float,
    resolution: float,
) -> tuple[bool, IntArray]:
    """The nodes to speed up next, or ``(False, _)`` once some critical path is all at full speed.

    Paths within ``resolution`` of the makespan count as critical: each cut node saves at least
    that much, so a step shortens the iteration by a full resolution unit instead of trickling
    through slivers of slack left by the reclaim pass. Near the fastest end, where such a
    near-critical path may already be all at full speed, the exact critical paths are cut
    instead, so the frontier still reaches the true minimum time."""
    n = len(choice)
    rate = np.empty(n)
    steps = np.empty(n)
    for v in range(n):
        c = node_class[v]
        rate[v] = rate_table[c, choice[v]]
        steps[v] = durations[v] - class_time[c, max(next_option[c, choice[v]], 0)]
    out_first, out_edges, in_first, in_edges, first, head, tail, partner, arc, slot = layout
    full_speed = np.empty(n, dtype=np.bool_)
    capacity = np.empty(n)  # each critical node's cost rate, 0 off the critical DAG
    for attempt in range(2):
        tol = resolution + 1e-9 * makespan if attempt == 0 else 1e-9 * makespan
        critical, tight, sources, sinks = critical_network(edges, durations, finish, latest, makespan, tol)
        for v in range(n):
            full_speed[v] = critical[v] and not np.isfinite(rate[v])
        if reaches_through(full_speed, edges, tight, sources, sinks):
            continue  # a critical path already all at full speed
        for v in range(n):
            capacity[v] = rate[v] if critical[v] else 0.0
        cut = _warm_min_cut(
            pair_capacities(capacity, tight, sources, sinks),
            edges, out_first, out_edges, in_first, in_edges, first, head, tail, partner, arc, slot, flow,
        )  # fmt: skip
        return True, batch_series_ties(cut, rate, edges, tight, steps, resolution)
    return False, np.empty(0, dtype=np.int64)


@njit(nogil=True)
def _reclaim(  # pragma: no cover - compiled
    predecessors: IntArray,
    successors: IntArray,
    node_class: IntArray,
    class_time: FloatArray,
    class_cost: FloatArray,
    class_count: IntArray,
    choice: IntArray,
    deadline: float,
    finish: FloatArray,
) -> tuple[IntArray, FloatArray, bool]:
    """:meth:`GraphCutSolver.reclaim` given ``choice``'s finish times: the cheaper of the two sweeps'
    choices, with its finish times (forward sweep, ``True``) or its latest finish times for
    ``deadline`` (backward sweep, ``False``), which the next step then need not compute."""
    n = len(choice)
    durations = _gather(class_time, node_class, choice)
    tol = 1e-12 * deadline
    bound = latest_finish_times(successors, durations, deadline) + tol
    forward, forward_finish = reclaim_sweep(
        predecessors, node_class, class_time, class_count, choice, bound, deadline, True
    )
    backward, latest_start = reclaim_sweep(
        successors, node_class, class_time, class_count, choice, finish - durations - tol, deadline, False
    )
    cost_forward = pairwise_sum(_gather(class_cost, node_class, forward), 0, n)
    cost_backward = pairwise_sum(_gather(class_cost, node_class, backward), 0, n)
    if cost_forward <= cost_backward:
        return forward, forward_finish[:n].copy(), True
    return backward, latest_start[:n] + _gather(class_time, node_class, backward), False


@njit(nogil=True)
def run_steps(  # pragma: no cover - compiled
    predecessors: IntArray,
    successors: IntArray,
    edges: IntArray,
    node_class: IntArray,
    class_time: FloatArray,
    class_energy: FloatArray,
    class_cost: FloatArray,
    class_count: IntArray,
    next_option: IntArray,
    rate_table: FloatArray,
    layout: tuple[IntArray, IntArray, IntArray, IntArray, LayoutIds, LayoutIds, LayoutIds, LayoutIds, LayoutIds, LayoutIds],
    flow: FloatArray,
    choice: IntArray,
    finish: FloatArray,
    latest: FloatArray,
    candidate_time: FloatArray,
    candidate_energy: FloatArray,
    candidate_choice: npt.NDArray[np.int16],
    real: FloatArray,
    counts: IntArray,
) -> None:
    """Run up to ``counts[STEP_BUDGET]`` steps from the state in the arrays, updating it in place.

    ``choice``, ``finish`` and ``latest`` are the current plan and what is known of its times
    (``counts[HAVE_FINISH]``, ``counts[HAVE_LATEST]``); the candidate arrays hold the points
    that may still be Pareto-optimal (``counts[NUM_CANDIDATES]`` of them, see
    :class:`perseus.solver.frontier._StepState`); ``flow`` the last maximum flow. Sets
    ``counts[STATUS]`` and leaves the state at a step boundary, so the next call goes on.
    """
    n = len(choice)
    resolution = real[RESOLUTION]
    done = 0
    while True:
        if counts[ITERATIONS] >= counts[CAP]:
            counts[STATUS] = CAPPED
            return
        if counts[NUM_CANDIDATES] == len(candidate_time):
            counts[STATUS] = CANDIDATES_FULL
            return
        if done == counts[STEP_BUDGET]:
            counts[STATUS] = RUNNING
            return
        done += 1
        durations = _gather(class_time, node_class, choice)
        if counts[HAVE_FINISH] == 0:
            finish[:] = finish_times(predecessors, durations)
            counts[HAVE_FINISH] = 1
        makespan = finish.max()
        if counts[HAVE_LATEST] == 0:
            latest[:] = latest_finish_times(successors, durations, makespan)
            counts[HAVE_LATEST] = 1
        else:
            latest[:] = latest - (real[DEADLINE] - makespan)  # all sinks share the deadline: a uniform shift
        # The candidate: drop the newest points this faster, no dearer one dominates (see _StepState).
        busy = pairwise_sum(durations, 0, n)
        spent = pairwise_sum(_gather(class_energy, node_class, choice), 0, n)
        energy = spent + real[BLOCKING_POWER] * (counts[NUM_STAGES] * makespan - busy)
        k = counts[NUM_CANDIDATES]
        if k > 0 and makespan < candidate_time[k - 1]:
            while k > 0 and candidate_energy[k - 1] >= energy:
                k -= 1
        candidate_time[k], candidate_energy[k] = makespan, energy
        for v in range(n):
            candidate_choice[k, v] = choice[v]
        counts[NUM_CANDIDATES] = k + 1
        real[LAST_MAKESPAN] = makespan
        found, speed_up = _cut(
            edges, node_class, class_time, next_option, rate_table, layout, flow,
            choice, durations, finish, latest, makespan, resolution,
        )  # fmt: skip
        if not found or (counts[HAVE_PREVIOUS] == 1 and makespan >= real[PREVIOUS_MAKESPAN]):
            counts[STATUS] = DONE  # the fastest plan, or (rounding only) a step that did not shorten the iteration
            return
        real[PREVIOUS_MAKESPAN], counts[HAVE_PREVIOUS] = makespan, 1
        counts[ITERATIONS] += 1
        faster = choice.copy()
        for v in speed_up:
            faster[v] = next_option[node_class[v], choice[v]]
        faster_finish = finish_times(predecessors, _gather(class_time, node_class, faster))
        deadline = faster_finish.max()
        real[DEADLINE] = deadline
        picked, times, forward = _reclaim(
            predecessors, successors, node_class, class_time, class_cost, class_count, faster, deadline, faster_finish
        )
        choice[:] = picked
        if forward:
            finish[:] = times
            counts[HAVE_FINISH], counts[HAVE_LATEST] = 1, 0
        else:
            latest[:] = times
            counts[HAVE_FINISH], counts[HAVE_LATEST] = 0, 1
