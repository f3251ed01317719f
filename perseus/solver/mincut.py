"""Minimum vertex cut on the critical sub-DAG, by Dinic's max-flow compiled with numba.

Each critical node ``v`` is split into ``v_in -> v_out`` with capacity equal to the energy it
costs per second of speed-up (``inf`` for a node already at full speed); dependency edges,
and the edges from the super source and to the super sink, are uncapacitated. The minimum
cut is the cheapest set of instructions whose speed-up shortens *every* critical path at once
(the Phillips-Dessouky step).

Only the critical sub-DAG enters the network, built as flat arrays inside the compiled code:
handing a whole-DAG network to igraph's push-relabel per cut (and the Python lists it takes)
cost about 6 ms at 8 x 96, 30% of a solve; this costs well under 1 ms there. Capacities stay
floats, so costs go in exactly; an augmenting path's bottleneck arc ends at exactly 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from perseus.pipeline.dag import FloatArray, IntArray


class CutNetwork:
    """Minimum vertex cuts of sub-DAGs of one DAG (``num_nodes`` nodes, ``edges`` as ``(src, dst)``)."""

    def __init__(self, num_nodes: int, edges: IntArray) -> None:
        self.num_nodes = num_nodes
        self.edges = np.ascontiguousarray(edges, dtype=np.int64).reshape(-1, 2)

    def min_cut(
        self, capacity: FloatArray, tight: npt.NDArray[np.bool_], sources: IntArray, sinks: IntArray
    ) -> IntArray:
        """Node ids of a minimum vertex cut; ``capacity`` is per node (0 = not in the critical
        DAG, ``inf`` = cannot be cut), ``tight`` masks the edges of the critical DAG."""
        nodes = np.flatnonzero(capacity > 0)
        local = np.full(self.num_nodes, -1, dtype=np.int64)
        local[nodes] = np.arange(len(nodes))
        edges = local[self.edges[tight]]
        edges = edges[(edges >= 0).all(axis=1)]
        cut = min_vertex_cut(capacity[nodes], edges, local[sources], local[sinks])
        return nodes[cut]


@njit(cache=True, nogil=True)
def min_vertex_cut(  # pragma: no cover - compiled
    capacity: FloatArray, edges: IntArray, sources: IntArray, sinks: IntArray
) -> IntArray:
    """Local ids of a minimum vertex cut separating ``sources`` from ``sinks`` in the DAG of
    ``len(capacity)`` nodes and ``edges``; the cut is the one closest to the sources."""
    k = len(capacity)
    source, sink = 2 * k, 2 * k + 1
    num_vertices = 2 * k + 2
    # Arcs: node arcs v_in -> v_out, dependency arcs u_out -> v_in, source and sink arcs. Arc 2a
    # is arc a, arc 2a + 1 its reverse (residual capacity starts at 0).
    num_arcs = k + len(edges) + len(sources) + len(sinks)
    tail = np.empty(2 * num_arcs, dtype=np.int64)
    head = np.empty(2 * num_arcs, dtype=np.int64)
    residual = np.zeros(2 * num_arcs)
    a = 0
    for v in range(k):
        tail[2 * a], head[2 * a], residual[2 * a] = 2 * v, 2 * v + 1, capacity[v]
        a += 1
    for e in range(len(edges)):
        tail[2 * a], head[2 * a], residual[2 * a] = 2 * edges[e, 0] + 1, 2 * edges[e, 1], np.inf
        a += 1
    for v in sources:
        tail[2 * a], head[2 * a], residual[2 * a] = source, 2 * v, np.inf
        a += 1
    for v in sinks:
        tail[2 * a], head[2 * a], residual[2 * a] = 2 * v + 1, sink, np.inf
        a += 1
    for a in range(num_arcs):
        tail[2 * a + 1], head[2 * a + 1] = head[2 * a], tail[2 * a]
    # Adjacency (arc ids grouped by tail vertex, CSR), by counting sort.
    first = np.zeros(num_vertices + 1, dtype=np.int64)
    for arc in range(2 * num_arcs):
        first[tail[arc] + 1] += 1
    for v in range(num_vertices):
        first[v + 1] += first[v]
    order = np.empty(2 * num_arcs, dtype=np.int64)
    fill = first[:-1].copy()
    for arc in range(2 * num_arcs):
        order[fill[tail[arc]]] = arc
        fill[tail[arc]] += 1
    level = np.empty(num_vertices, dtype=np.int64)
    queue = np.empty(num_vertices, dtype=np.int64)
    current = np.empty(num_vertices, dtype=np.int64)
    path = np.empty(num_vertices, dtype=np.int64)
    while True:
        # Dinic phase: BFS levels in the residual network...
        level[:] = -1
        level[source] = 0
        queue[0], q_head, q_tail = source, 0, 1
        while q_head < q_tail:
            v = queue[q_head]
            q_head += 1
            for i in range(first[v], first[v + 1]):
                arc = order[i]
                w = head[arc]
                if residual[arc] > 0 and level[w] < 0:
                    level[w] = level[v] + 1
                    queue[q_tail] = w
                    q_tail += 1
        if level[sink] < 0:
            break
        # ...then a blocking flow along level-increasing arcs (iterative DFS, current-arc pointers).
        current[:] = first[:-1]
        depth, v = 0, source
        while True:
            if v == sink:
                bottleneck = np.inf
                for d in range(depth):
                    bottleneck = min(bottleneck, residual[path[d]])
                saturated = depth
                for d in range(depth):
                    residual[path[d]] -= bottleneck
                    residual[path[d] ^ 1] += bottleneck
                    if residual[path[d]] <= 0 and saturated == depth:
                        saturated = d
                # Resume from the tail of the first saturated arc: the path up to it still has room.
                depth = saturated
                v = tail[path[depth]]
                continue
            advanced = False
            while current[v] < first[v + 1]:
                arc = order[current[v]]
                w = head[arc]
                if residual[arc] > 0 and level[w] == level[v] + 1:
                    path[depth] = arc
                    depth += 1
                    v = w
                    advanced = True
                    break
                current[v] += 1
            if not advanced:
                if v == source:
                    break
                level[v] = -1  # dead end for this phase
                depth -= 1
                v = tail[path[depth]]
                current[v] += 1
    # The cut: nodes whose in-vertex the source still reaches and whose out-vertex it does not.
    cut = np.empty(k, dtype=np.int64)
    size = 0
    for v in range(k):
        if level[2 * v] >= 0 and level[2 * v + 1] < 0:
            cut[size] = v
            size += 1
    return cut[:size]
