"""Equally priced instructions in series with a cut one, compiled with numba (see ``frontier._batch_series_ties``).

As a Python loop over the cut with a dozen NumPy calls to find the series chains it took a tenth
of a solve (synthetic s1: 3,050 cuts, 60 us each); compiled it takes about 2 us a cut.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from perseus.pipeline.dag import FloatArray, IntArray


@njit(cache=True, nogil=True)
def series_ties(  # pragma: no cover - compiled
    cut: IntArray, rate: FloatArray, edges: IntArray, num_nodes: int, step: FloatArray, resolution: float
) -> IntArray:
    """``cut`` plus, walking each cut node's series chain both ways, every node of the same cost rate
    (within 1e-9) whose step still fits in what is left of ``resolution``; sorted node ids.

    Nodes are local ids ``0..num_nodes-1``; ``edges`` (``(src, dst)`` rows) are the critical DAG's,
    ``step[v]`` is the time node ``v``'s next option saves.
    """
    if len(edges) == 0:
        return cut.copy()
    out_deg = np.zeros(num_nodes, dtype=np.int64)
    in_deg = np.zeros(num_nodes, dtype=np.int64)
    for e in range(len(edges)):
        out_deg[edges[e, 0]] += 1
        in_deg[edges[e, 1]] += 1
    nxt = np.full(num_nodes, -1, dtype=np.int64)  # the only critical successor, itself with one predecessor
    prv = np.full(num_nodes, -1, dtype=np.int64)
    for e in range(len(edges)):
        src, dst = edges[e, 0], edges[e, 1]
        if out_deg[src] == 1 and in_deg[dst] == 1:
            nxt[src] = dst
            prv[dst] = src
    chosen = np.zeros(num_nodes, dtype=np.bool_)
    for node in cut:
        chosen[node] = True
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
