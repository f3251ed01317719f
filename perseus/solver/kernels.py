"""The solver's longest-path passes and per-cut graph work, compiled with numba.

Every solver step runs two longest-path passes and two reclaim sweeps over the whole DAG, one
node after another (a node needs its predecessors' results), so they cannot be vectorised
across nodes. As Python loops they took two thirds of a solve; compiled they take about 1%.
Each function walks the DAG through its padded adjacency (``PipelineDAG.predecessors`` /
``successors``, padded with the virtual node ``N``), so any schedule and any number of
neighbours per node work. The per-cut helpers (the critical network, the full-speed check, the
series-tie batching) work on whole-DAG ids and the DAG's edge list: as numpy and Python code they
took 0.57 ms per cut at 16 x 96, compiled 0.15 ms.

A solve runs them inside the compiled step loop (:mod:`perseus.solver.sweep`, loaded as machine
code by :mod:`perseus.solver.native`); called directly (as tests do) they compile with numba. None
is cached by numba (``cache=True``): the step loop is then built around the cached functions' machine
code instead of their IR, unable to inline them, and solved 16 x 256 in 81-85 s instead of 57-66 s.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from perseus.pipeline.dag import FloatArray, IntArray


@njit(nogil=True)
def finish_times(predecessors: IntArray, durations: FloatArray) -> FloatArray:  # pragma: no cover - compiled
    """Earliest finish time of every node (nodes in topological order)."""
    n = len(durations)
    finish = np.zeros(n + 1)  # the padding node N finishes at 0
    for v in range(n):
        start = 0.0
        for u in predecessors[v]:
            start = max(start, finish[u])
        finish[v] = start + durations[v]
    return finish[:n]


@njit(nogil=True)
def latest_finish_times(successors: IntArray, durations: FloatArray, deadline: float) -> FloatArray:  # pragma: no cover
    """Latest finish time of every node that still ends the iteration by ``deadline``."""
    n = len(durations)
    latest_start = np.full(n + 1, deadline)  # the padding node N starts at the deadline
    latest_finish = np.empty(n)
    for v in range(n - 1, -1, -1):
        end = deadline
        for w in successors[v]:
            end = min(end, latest_start[w])
        latest_finish[v] = end
        latest_start[v] = end - durations[v]
    return latest_finish


@njit(nogil=True)
def _slowest_within(times: FloatArray, count: int, budget: float, floor: int) -> int:  # pragma: no cover
    """The slowest option (largest index among the first ``count``, sorted by time) taking at most
    ``budget`` seconds, but never faster than option ``floor``.

    A walk up from ``floor`` rather than a bisection: a reclaim moves a node by a few options at
    most, so the walk takes a step or two where a bisection over 38-120 options takes six or seven
    unpredictable branches (16 x 256: two sweeps of 8,192 nodes a step)."""
    k = floor
    while k + 1 < count and times[k + 1] <= budget:
        k += 1
    return k


@njit(nogil=True)
def reclaim_sweep(  # pragma: no cover - compiled
    neighbours: IntArray,
    node_class: IntArray,
    class_time: FloatArray,
    class_count: IntArray,
    choice: IntArray,
    limit: FloatArray,
    deadline: float,
    forward: bool,
) -> tuple[IntArray, FloatArray]:
    """One greedy reclaim sweep: every node picks its slowest option that fits, never faster than
    ``choice``.

    Forward (``neighbours`` = predecessors), earlier nodes take the slack first: a node starts
    when its predecessors finish and must finish by ``limit`` (its latest finish time); returns
    the new choice and its finish times. Backward (``neighbours`` = successors), later nodes take
    it first: a node ends when its successors start (at the latest) and must start no earlier
    than ``limit`` (its earliest start); returns the new choice and its latest start times.
    Time arrays are padded with node N.
    """
    n = len(choice)
    picked = np.empty(n, dtype=np.int64)
    times = np.full(n + 1, 0.0 if forward else deadline)
    for i in range(n):
        v = i if forward else n - 1 - i
        c = node_class[v]
        if forward:
            start = 0.0
            for u in neighbours[v]:
                start = max(start, times[u])
            k = _slowest_within(class_time[c], class_count[c], limit[v] - start, choice[v])
            times[v] = start + class_time[c, k]
        else:
            end = deadline
            for w in neighbours[v]:
                end = min(end, times[w])
            k = _slowest_within(class_time[c], class_count[c], end - limit[v], choice[v])
            times[v] = end - class_time[c, k]
        picked[v] = k
    return picked, times


@njit(nogil=True)
def critical_network(  # pragma: no cover - compiled
    edges: IntArray, durations: FloatArray, finish: FloatArray, latest: FloatArray, makespan: float, tol: float
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], IntArray, IntArray]:
    """The DAG of paths within ``tol`` of the makespan: which nodes are on one (slack at most
    ``tol``), which edges join two such nodes with at most ``tol`` of slack between them, and
    the critical nodes that may start at time 0 (sources) and may end the iteration (sinks)."""
    n = len(durations)
    critical = np.empty(n, dtype=np.bool_)
    num_sources = num_sinks = 0
    for v in range(n):
        critical[v] = latest[v] - finish[v] <= tol
        if critical[v] and latest[v] - durations[v] <= tol:
            num_sources += 1
        if critical[v] and finish[v] >= makespan - tol:
            num_sinks += 1
    tight = np.empty(len(edges), dtype=np.bool_)
    for e in range(len(edges)):
        u, w = edges[e, 0], edges[e, 1]
        tight[e] = critical[u] and critical[w] and (latest[w] - durations[w]) - finish[u] <= tol
    sources = np.empty(num_sources, dtype=np.int64)
    sinks = np.empty(num_sinks, dtype=np.int64)
    num_sources = num_sinks = 0
    for v in range(n):
        if critical[v]:
            if latest[v] - durations[v] <= tol:
                sources[num_sources] = v
                num_sources += 1
            if finish[v] >= makespan - tol:
                sinks[num_sinks] = v
                num_sinks += 1
    return critical, tight, sources, sinks


@njit(nogil=True)
def reaches_through(  # pragma: no cover - compiled
    allowed: npt.NDArray[np.bool_], edges: IntArray, tight: npt.NDArray[np.bool_], sources: IntArray, sinks: IntArray
) -> bool:
    """Whether some source-to-sink path along ``tight`` edges uses only ``allowed`` nodes; ``edges``
    are sorted by source and node ids are topological, so one sweep over them propagates reachability."""
    reach = np.zeros(len(allowed), dtype=np.bool_)
    for v in sources:
        reach[v] = allowed[v]
    for e in range(len(edges)):
        if tight[e] and reach[edges[e, 0]] and allowed[edges[e, 1]]:
            reach[edges[e, 1]] = True
    return bool(reach[sinks].any())


@njit(nogil=True)
def batch_series_ties(  # pragma: no cover - compiled
    cut: IntArray,
    rate: FloatArray,
    edges: IntArray,
    tight: npt.NDArray[np.bool_],
    step: FloatArray,
    resolution: float,
) -> IntArray:
    """Add to each cut node its equally priced neighbours on the same series chain, within ``resolution``.

    Nodes in series (each the only ``tight`` successor/predecessor of the other) lie on the
    same critical paths, so at equal cost rate (``rate``, per node) they are interchangeable in
    the cut; shortening several at once (each by ``step``, per node) is what consecutive steps
    would do. Returns node ids in ascending order.
    """
    n = len(rate)
    out_deg = np.zeros(n, dtype=np.int64)
    in_deg = np.zeros(n, dtype=np.int64)
    for e in range(len(edges)):
        if tight[e]:
            out_deg[edges[e, 0]] += 1
            in_deg[edges[e, 1]] += 1
    nxt = np.full(n, -1, dtype=np.int64)
    prv = np.full(n, -1, dtype=np.int64)
    for e in range(len(edges)):
        u, w = edges[e, 0], edges[e, 1]
        if tight[e] and out_deg[u] == 1 and in_deg[w] == 1:
            nxt[u], prv[w] = w, u
    chosen = np.zeros(n, dtype=np.bool_)
    chosen[cut] = True
    for node in cut:
        budget = resolution - step[node]
        target = rate[node]
        for direction in (nxt, prv):
            cur = direction[node]
            while cur >= 0 and budget > 0:
                if abs(rate[cur] - target) <= 1e-9 * target and not chosen[cur] and step[cur] <= budget:
                    chosen[cur] = True
                    budget -= step[cur]
                cur = direction[cur]
    return np.flatnonzero(chosen)
