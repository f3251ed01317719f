"""Minimum vertex cut on the critical sub-DAG, by Dinic's max-flow compiled with numba.

Each critical node ``v`` is split into ``v_in -> v_out`` with capacity equal to the energy it
costs per second of speed-up (``inf`` for a node already at full speed); dependency edges,
and the edges from the super source and to the super sink, are uncapacitated. The minimum
cut is the cheapest set of instructions whose speed-up shortens *every* critical path at once
(the Phillips-Dessouky step).

Only the critical sub-DAG enters the network, built as flat arrays inside the compiled code:
handing a whole-DAG network to igraph's push-relabel per cut (and the Python lists it takes)
cost about 6 ms at 8 x 96, 30% of a solve; this costs well under 1 ms there. Capacities stay
floats, so costs go in exactly (residuals within a 1e-13 relative sliver count as saturated, see
:func:`min_vertex_cut`).

Each max-flow is *warm-started* from the previous cut's flow. From scratch, every augmenting
path runs the length of the pipeline and saturates one node, and the paths per cut grow with
the pipeline too (16 x 96: 420 paths of about 440 arcs per cut), so a cut cost grew with the
square of the microbatches. Between consecutive cuts only a few dozen of a thousand critical
nodes change capacity or criticality, so most of the old flow still fits: it is trimmed to a
feasible flow of the new network (:func:`_repair_flow`) and Dinic only adds what is missing
(about 40% less work per cut at 16 x 48 and 16 x 96). The minimum cut closest to the sources
does not depend on the flow it starts from.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from perseus.pipeline.dag import FloatArray, IntArray

FLOWS_KEPT = 2
"""Recent maximum flows tried as a start: steps often alternate between two shapes of critical DAG,
so the flow from two cuts back can fit better (16 x 48: 100k arc visits per cut, 104k with only
the last flow, 169k from scratch)."""


class CutNetwork:
    """Minimum vertex cuts of sub-DAGs of one DAG (``num_nodes`` nodes in topological order, ``edges``
    as ``(src, dst)`` sorted by ``src``), each max-flow starting from a recent one's flow."""

    def __init__(self, num_nodes: int, edges: IntArray) -> None:
        self.num_nodes = num_nodes
        self.edges = np.ascontiguousarray(edges, dtype=np.int64).reshape(-1, 2)
        self.edge_flows = np.zeros((FLOWS_KEPT, len(self.edges)))
        """The last few maximum flows on every edge (0 off their networks), newest first..."""
        self.source_flows = np.zeros((FLOWS_KEPT, num_nodes))
        """...from the super source into every node..."""
        self.sink_flows = np.zeros((FLOWS_KEPT, num_nodes))
        """...and from every node into the super sink."""

    def min_cut(
        self, capacity: FloatArray, tight: npt.NDArray[np.bool_], sources: IntArray, sinks: IntArray
    ) -> IntArray:
        """Node ids of a minimum vertex cut; ``capacity`` is per node (0 = not in the critical
        DAG, ``inf`` = cannot be cut), ``tight`` masks the edges of the critical DAG."""
        return _warm_min_cut(
            np.ascontiguousarray(capacity, dtype=np.float64),
            np.ascontiguousarray(tight, dtype=np.bool_),
            self.edges,
            np.ascontiguousarray(sources, dtype=np.int64),
            np.ascontiguousarray(sinks, dtype=np.int64),
            self.edge_flows,
            self.source_flows,
            self.sink_flows,
        )


@njit(cache=True, nogil=True)
def _warm_min_cut(  # pragma: no cover - compiled
    capacity: FloatArray,
    tight: npt.NDArray[np.bool_],
    all_edges: IntArray,
    sources: IntArray,
    sinks: IntArray,
    edge_flows: FloatArray,
    source_flows: FloatArray,
    sink_flows: FloatArray,
) -> IntArray:
    """:meth:`CutNetwork.min_cut` on whole-DAG arrays: extract the sub-network (nodes with positive
    capacity, tight edges between them), start from whichever kept flow (rows of ``*_flows``) keeps
    the most value once trimmed to it, find the cut, and shift the new maximum flow in as row 0."""
    n = len(capacity)
    local = np.full(n, -1, dtype=np.int64)
    k = 0
    for v in range(n):
        if capacity[v] > 0:
            local[v] = k
            k += 1
    nodes = np.empty(k, dtype=np.int64)
    for v in range(n):
        if local[v] >= 0:
            nodes[local[v]] = v
    sub_capacity = capacity[nodes]
    count = 0
    for e in range(len(all_edges)):
        if tight[e] and local[all_edges[e, 0]] >= 0 and local[all_edges[e, 1]] >= 0:
            count += 1
    edge_ids = np.empty(count, dtype=np.int64)
    edges = np.empty((count, 2), dtype=np.int64)
    count = 0
    for e in range(len(all_edges)):
        u, w = local[all_edges[e, 0]], local[all_edges[e, 1]]
        if tight[e] and u >= 0 and w >= 0:
            edge_ids[count] = e
            edges[count, 0], edges[count, 1] = u, w
            count += 1
    local_sources, local_sinks = local[sources], local[sinks]
    best_edge = np.zeros(count)
    best_source = np.zeros(len(sources))
    best_sink = np.zeros(len(sinks))
    best_value = 0.0
    for row in range(edge_flows.shape[0]):
        edge_flow = edge_flows[row][edge_ids]
        source_flow = source_flows[row][sources]
        sink_flow = sink_flows[row][sinks]
        _repair_flow(sub_capacity, edges, local_sources, local_sinks, edge_flow, source_flow, sink_flow)
        value = source_flow.sum()
        if value > best_value:
            best_value, best_edge, best_source, best_sink = value, edge_flow, source_flow, sink_flow
    cut, edge_flow, source_flow, sink_flow = min_vertex_cut(
        sub_capacity, edges, local_sources, local_sinks, best_edge, best_source, best_sink
    )
    for row in range(edge_flows.shape[0] - 1, 0, -1):
        edge_flows[row] = edge_flows[row - 1]
        source_flows[row] = source_flows[row - 1]
        sink_flows[row] = sink_flows[row - 1]
    edge_flows[0] = 0.0
    source_flows[0] = 0.0
    sink_flows[0] = 0.0
    edge_flows[0][edge_ids] = edge_flow
    source_flows[0][sources] = source_flow
    sink_flows[0][sinks] = sink_flow
    return nodes[cut]


@njit(cache=True, nogil=True)
def min_vertex_cut(  # pragma: no cover - compiled
    capacity: FloatArray,
    edges: IntArray,
    sources: IntArray,
    sinks: IntArray,
    edge_flow: FloatArray,
    source_flow: FloatArray,
    sink_flow: FloatArray,
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    """Local ids of a minimum vertex cut separating ``sources`` from ``sinks`` in the DAG of
    ``len(capacity)`` nodes (topological order) and ``edges``; the cut is the one closest to the
    sources. ``*_flow`` are a starting flow (any non-negative values; trimmed to a feasible flow
    first); the maximum flow found is returned in the same form after the cut.

    Residual capacities up to ``eps`` (1e-13 of the finite capacities' sum) count as saturated:
    a trimmed flow's sums carry rounding, and a sliver of 1e-17 left on a node's arc must not
    move the cut. The cut's cost is then within ``eps`` per arc of the flow's value.
    """
    k = len(capacity)
    node_flow = _repair_flow(capacity, edges, sources, sinks, edge_flow, source_flow, sink_flow)
    total = 0.0
    for v in range(k):
        if np.isfinite(capacity[v]):
            total += capacity[v]
    eps = 1e-13 * total
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
        tail[2 * a], head[2 * a] = 2 * v, 2 * v + 1
        residual[2 * a] = max(capacity[v] - node_flow[v], 0.0)
        residual[2 * a + 1] = node_flow[v]
        a += 1
    for e in range(len(edges)):
        tail[2 * a], head[2 * a], residual[2 * a], residual[2 * a + 1] = (
            2 * edges[e, 0] + 1, 2 * edges[e, 1], np.inf, edge_flow[e])
        a += 1
    for i in range(len(sources)):
        tail[2 * a], head[2 * a], residual[2 * a], residual[2 * a + 1] = source, 2 * sources[i], np.inf, source_flow[i]
        a += 1
    for i in range(len(sinks)):
        tail[2 * a], head[2 * a], residual[2 * a], residual[2 * a + 1] = 2 * sinks[i] + 1, sink, np.inf, sink_flow[i]
        a += 1
    for a in range(num_arcs):
        tail[2 * a + 1], head[2 * a + 1] = head[2 * a], tail[2 * a]
    # Arcs laid out by tail vertex (CSR, by counting sort, keeping arc order within a vertex), each
    # with its head, residual capacity and partner's position: the search loops then read one array
    # slot per arc instead of going through an index (a quarter less time per cut at 16 x 96).
    first = np.zeros(num_vertices + 1, dtype=np.int64)
    for arc in range(2 * num_arcs):
        first[tail[arc] + 1] += 1
    for v in range(num_vertices):
        first[v + 1] += first[v]
    position = np.empty(2 * num_arcs, dtype=np.int64)
    fill = first[:-1].copy()
    for arc in range(2 * num_arcs):
        position[arc] = fill[tail[arc]]
        fill[tail[arc]] += 1
    arc_tail = np.empty(2 * num_arcs, dtype=np.int64)
    arc_head = np.empty(2 * num_arcs, dtype=np.int64)
    arc_residual = np.empty(2 * num_arcs)
    partner = np.empty(2 * num_arcs, dtype=np.int64)
    for arc in range(2 * num_arcs):
        i = position[arc]
        arc_tail[i], arc_head[i], arc_residual[i], partner[i] = tail[arc], head[arc], residual[arc], position[arc ^ 1]
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
            if 0 <= level[sink] <= level[v]:
                break  # the blocking flow only uses levels below the sink's
            for i in range(first[v], first[v + 1]):
                w = arc_head[i]
                if level[w] < 0 and arc_residual[i] > eps:
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
                    bottleneck = min(bottleneck, arc_residual[path[d]])
                saturated = depth
                for d in range(depth):
                    arc_residual[path[d]] -= bottleneck
                    arc_residual[partner[path[d]]] += bottleneck
                    if arc_residual[path[d]] <= eps and saturated == depth:
                        saturated = d
                # Resume from the tail of the first saturated arc: the path up to it still has room.
                depth = saturated
                v = arc_tail[path[depth]]
                continue
            advanced = False
            next_level = level[v] + 1
            while current[v] < first[v + 1]:
                i = current[v]
                w = arc_head[i]
                if level[w] == next_level and arc_residual[i] > eps:
                    path[depth] = i
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
                v = arc_tail[path[depth]]
                current[v] += 1
    # The cut: nodes whose in-vertex the source still reaches and whose out-vertex it does not.
    cut = np.empty(k, dtype=np.int64)
    size = 0
    for v in range(k):
        if level[2 * v] >= 0 and level[2 * v + 1] < 0:
            cut[size] = v
            size += 1
    flows = np.empty(num_arcs)  # an arc's flow is its reverse arc's residual capacity
    for a in range(num_arcs):
        flows[a] = arc_residual[position[2 * a + 1]]
    return cut[:size], flows[k : k + len(edges)].copy(), flows[k + len(edges) : k + len(edges) + len(sources)].copy(), (
        flows[k + len(edges) + len(sources) :].copy()
    )


@njit(cache=True, nogil=True)
def _repair_flow(  # pragma: no cover - compiled
    capacity: FloatArray,
    edges: IntArray,
    sources: IntArray,
    sinks: IntArray,
    edge_flow: FloatArray,
    source_flow: FloatArray,
    sink_flow: FloatArray,
) -> FloatArray:
    """Trim a starting flow, in place, to a feasible flow of the network; returns each node's flow.

    Forward in topological order, a node passes on at most what reaches it and its capacity
    (each outgoing arc keeping at most its old flow); backward, it then takes in only what it
    passes on. Every value only shrinks, so the result is a flow within every capacity, and
    it keeps all of the old flow that still fits along unchanged paths.
    """
    k = len(capacity)
    out_first = np.zeros(k + 1, dtype=np.int64)
    in_first = np.zeros(k + 1, dtype=np.int64)
    for e in range(len(edges)):
        out_first[edges[e, 0] + 1] += 1
        in_first[edges[e, 1] + 1] += 1
    for v in range(k):
        out_first[v + 1] += out_first[v]
        in_first[v + 1] += in_first[v]
    out_edges = np.empty(len(edges), dtype=np.int64)
    in_edges = np.empty(len(edges), dtype=np.int64)
    out_fill = out_first[:-1].copy()
    in_fill = in_first[:-1].copy()
    for e in range(len(edges)):
        out_edges[out_fill[edges[e, 0]]] = e
        out_fill[edges[e, 0]] += 1
        in_edges[in_fill[edges[e, 1]]] = e
        in_fill[edges[e, 1]] += 1
    source_of = np.full(k, -1, dtype=np.int64)
    sink_of = np.full(k, -1, dtype=np.int64)
    for i in range(len(sources)):
        source_of[sources[i]] = i
    for i in range(len(sinks)):
        sink_of[sinks[i]] = i
    inflow = np.zeros(k)
    for v in range(k):
        if source_of[v] >= 0:
            inflow[v] += source_flow[source_of[v]]
        remaining = min(inflow[v], capacity[v])
        for i in range(out_first[v], out_first[v + 1]):
            e = out_edges[i]
            edge_flow[e] = min(edge_flow[e], remaining)
            remaining = max(remaining - edge_flow[e], 0.0)
            inflow[edges[e, 1]] += edge_flow[e]
        if sink_of[v] >= 0:
            sink_flow[sink_of[v]] = min(sink_flow[sink_of[v]], remaining)
    node_flow = np.zeros(k)
    for v in range(k - 1, -1, -1):
        out = sink_flow[sink_of[v]] if sink_of[v] >= 0 else 0.0
        for i in range(out_first[v], out_first[v + 1]):
            out += edge_flow[out_edges[i]]
        node_flow[v] = out
        surplus = -out
        if source_of[v] >= 0:
            surplus += source_flow[source_of[v]]
        for i in range(in_first[v], in_first[v + 1]):
            surplus += edge_flow[in_edges[i]]
        if source_of[v] >= 0 and surplus > 0:
            cut_back = min(source_flow[source_of[v]], surplus)
            source_flow[source_of[v]] -= cut_back
            surplus -= cut_back
        for i in range(in_first[v], in_first[v + 1]):
            if surplus <= 0:
                break
            e = in_edges[i]
            cut_back = min(edge_flow[e], surplus)
            edge_flow[e] -= cut_back
            surplus -= cut_back
    return node_flow
