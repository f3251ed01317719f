"""Minimum vertex cut on the critical sub-DAG, by Dinic's max-flow compiled with numba.

Each critical node ``v`` is split into ``v_in -> v_out`` with capacity equal to the energy it
costs per second of speed-up (``inf`` for a node already at full speed); dependency edges,
and the edges from the super source and to the super sink, are uncapacitated. The minimum
cut is the cheapest set of instructions whose speed-up shortens *every* critical path at once
(the Phillips-Dessouky step).

The network is laid out once per DAG (:class:`ArcLayout`: every node's arc, every edge, an arc
from the super source to every node and from every node to the super sink, grouped by tail
vertex); a cut only sets residual capacities, so nodes off the critical DAG, slack edges and
non-source/sink nodes get zero capacity and are never reached. Building the critical
sub-network's arrays per cut instead (renumbering, adjacency by counting sort, three flow trims
each building its own adjacency) made the max-flow call 3.1 ms per cut at 16 x 96 instead of
2.2 ms. Capacities stay floats, so costs go in exactly (residuals within a 1e-13 relative sliver
count as saturated, see :func:`_saturation_eps`).

The critical DAG is nearly the whole DAG (the reclaim pass slows every instruction with slack
until it is tight: 2,900 of 3,072 nodes at 16 x 96), so contracting its series chains (a node
with one critical predecessor whose only critical successor it is) removes only about 10% of
its nodes and does not shorten the augmenting paths; it is not done.

Each max-flow is *warm-started* from the previous cut's flow. From scratch, every augmenting
path runs the length of the pipeline and saturates one node, and the paths per cut grow with
the pipeline too (16 x 96: 420 paths of about 440 arcs per cut), so a cut cost grew with the
square of the microbatches. Between consecutive cuts only a few dozen of a thousand critical
nodes change capacity or criticality, so most of the old flow still fits: it is trimmed to a
feasible flow of the new network (:func:`_repair_flow`) and Dinic only adds what is missing
(about 40% less work per cut at 16 x 48 and 16 x 96). The minimum cut closest to the sources
does not depend on the flow it starts from.

Trimming alone throws away more than it must: where a node's capacity fell below its old flow,
every path through the node loses the difference all the way back to the super source and on
to the super sink, and Dinic must find it again along paths the length of the pipeline (16 x 256:
about 8% of a 12,400 flow lost per cut, found again by 160-480 augmenting paths of 1,090 arcs).
Most of it has a detour a few nodes long (through a neighbouring stage or microbatch with spare
capacity), so before trimming, the excess each over-full arc leaves at its tail is first sent to
the deficit at its head along residual paths far shorter than the pipeline (:func:`_reroute`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from perseus.pipeline.dag import FloatArray, IntArray
from perseus.solver.arcs import ArcLayout, LayoutIds

REROUTE_DEPTH = 100
"""Longest detour (arcs) a clipped flow may take around its arc. On 116 saved 16 x 256 cuts, each
timed in turn against the others (ms per cut, max-flow included): depth 30 with 4 searches 5.5,
60/16 4.2, 100/32 3.6, 150/32 3.9 to 3.6, 300/64 3.9; Dinic then needs 3.8 phases and 61 augmenting
paths a cut instead of 7.5 and 142. 16 x 96: 1.7 ms at 30/4, 1.4 at 100-300."""
REROUTE_PHASES = 32
"""Searches for detours per cut at most (each a breadth-first search from the deficits, up to the
depth); they stop as soon as one reaches no vertex in excess."""


class CutNetwork:
    """Minimum vertex cuts of sub-DAGs of one DAG (``num_nodes`` nodes in topological order, ``edges``
    as ``(src, dst)`` sorted by ``src``), each max-flow starting from the last one's flow."""

    def __init__(self, num_nodes: int, edges: IntArray) -> None:
        self.layout = ArcLayout(num_nodes, edges)
        self.flow = np.zeros(self.layout.num_pairs)
        """The last maximum flow on every arc pair (0 off its network)."""

    def min_cut(
        self, capacity: FloatArray, tight: npt.NDArray[np.bool_], sources: IntArray, sinks: IntArray
    ) -> IntArray:
        """Node ids of a minimum vertex cut; ``capacity`` is per node (0 = not in the critical
        DAG, ``inf`` = cannot be cut), ``tight`` masks the edges of the critical DAG."""
        layout = self.layout
        return _warm_min_cut(
            pair_capacities(
                np.asarray(capacity, dtype=np.float64),
                tight,
                np.asarray(sources, dtype=np.int64),
                np.asarray(sinks, dtype=np.int64),
            ),
            layout.edges,
            layout.out_first,
            layout.out_edges,
            layout.in_first,
            layout.in_edges,
            layout.first,
            layout.head,
            layout.tail,
            layout.partner,
            layout.arc,
            layout.slot,
            self.flow,
        )


@njit(nogil=True)
def pair_capacities(  # pragma: no cover - compiled
    capacity: FloatArray, tight: npt.NDArray[np.bool_], sources: IntArray, sinks: IntArray
) -> FloatArray:
    """Every arc pair's capacity (see :class:`ArcLayout`) for a critical DAG: each node's own
    ``capacity``, and no limit on its ``tight`` edges, on the arcs from the super source into its
    ``sources`` and on those from its ``sinks`` to the super sink (every other arc: 0)."""
    n, num_edges = len(capacity), len(tight)
    pair_capacity = np.zeros(3 * n + num_edges)
    pair_capacity[:n] = capacity
    for e in range(num_edges):
        if tight[e]:
            pair_capacity[n + e] = np.inf
    for v in sources:
        pair_capacity[n + num_edges + v] = np.inf
    for v in sinks:
        pair_capacity[2 * n + num_edges + v] = np.inf
    return pair_capacity


@njit(nogil=True)
def _warm_min_cut(  # pragma: no cover - compiled
    pair_capacity: FloatArray,
    edges: IntArray,
    out_first: IntArray,
    out_edges: IntArray,
    in_first: IntArray,
    in_edges: IntArray,
    first: LayoutIds,
    head: LayoutIds,
    tail: LayoutIds,
    partner: LayoutIds,
    arc: LayoutIds,
    slot: LayoutIds,
    flow: FloatArray,
) -> IntArray:
    """:meth:`CutNetwork.min_cut` given each arc pair's capacity: start from the last maximum
    ``flow`` (replaced in place by the new one), its clipped flow rerouted around the
    clipped arcs where it can and trimmed where it cannot, and find the cut closest to the sources.

    The cut does not depend on the starting flow, so this start is only about speed: comparing it
    with the plainly trimmed flow, and with the flow of two cuts back, cost two more trims a cut
    and gained less than they cost (16 x 96: 3-7% slower in all)."""
    n = len(out_first) - 1
    eps = _saturation_eps(pair_capacity, n)
    _reroute(pair_capacity, flow, n, first, head, tail, partner, arc, slot, eps)
    _repair_flow(pair_capacity, edges, out_first, out_edges, in_first, in_edges, flow)
    return _dinic(pair_capacity, n, first, head, tail, partner, arc, flow, eps)


@njit(nogil=True)
def _dinic(  # pragma: no cover - compiled
    pair_capacity: FloatArray,
    n: int,
    first: LayoutIds,
    head: LayoutIds,
    tail: LayoutIds,
    partner: LayoutIds,
    arc: LayoutIds,
    flow: FloatArray,
    eps: float,
) -> IntArray:
    """Node ids of the minimum vertex cut closest to the sources, by Dinic's max-flow from the
    feasible ``flow`` (per arc pair, updated in place to the maximum flow).

    Residual capacities up to ``eps`` (:func:`_saturation_eps`) count as saturated; the cut's
    cost is then within ``eps`` per arc of the flow's value.
    """
    source, sink = 2 * n, 2 * n + 1
    num_vertices = 2 * n + 2
    residual = _residuals(pair_capacity, arc, flow)
    level = np.empty(num_vertices, dtype=np.int64)  # distance to the sink in the residual network
    queue = np.empty(num_vertices, dtype=np.int64)
    current = np.empty(num_vertices, dtype=np.int64)
    path = np.empty(num_vertices, dtype=np.int64)
    room = np.empty(num_vertices + 1)  # room[d]: what the first d path arcs could take when arc d - 1 joined
    mark = np.empty(num_vertices + 1)  # the total pushed in this phase when arc d - 1 joined the path
    while True:
        # Dinic phase: BFS distances to the sink, backwards along residual arcs (so every vertex the
        # search below steps onto still leads to the sink, and it meets no dead ends but saturated
        # ones)...
        level[:] = -1
        level[sink] = 0
        queue[0], q_head, q_tail = sink, 0, 1
        while q_head < q_tail:
            v = queue[q_head]
            q_head += 1
            if 0 <= level[source] <= level[v]:
                break  # the blocking flow only uses distances below the source's
            for i in range(first[v], first[v + 1]):
                w = head[i]
                if level[w] < 0 and residual[partner[i]] > eps:
                    level[w] = level[v] + 1
                    queue[q_tail] = w
                    q_tail += 1
        if level[source] < 0:
            break
        # ...then a blocking flow along distance-decreasing arcs (iterative DFS, current-arc pointers).
        # Pushes reach the arcs on the search path lazily: each arc there carries all the flow pushed
        # since it joined the path (total - mark), applied when it leaves, so a push costs a binary
        # search for the first arc it saturated instead of two walks over a path of ~1,100 arcs.
        current[:] = first[:-1]
        depth, v = 0, source
        total = 0.0
        mark[0], room[0] = 0.0, np.inf
        while True:
            if v == sink:
                total += room[depth]  # the path's bottleneck: nothing was pushed since it was found
                lo, hi = 1, depth  # the shortest prefix of the path whose room is now used up
                while lo < hi:
                    mid = (lo + hi) // 2
                    if room[mid] - (total - mark[mid]) <= eps:
                        hi = mid
                    else:
                        lo = mid + 1
                # Resume from the tail of the first saturated arc: the path up to it still has room.
                while depth >= lo:
                    depth -= 1
                    _push(residual, partner, path[depth], total - mark[depth + 1])
                v = tail[path[depth]]
                continue
            advanced = False
            next_level = level[v] - 1
            while current[v] < first[v + 1]:
                i = current[v]
                w = head[i]
                if level[w] == next_level and residual[i] > eps:
                    path[depth] = i
                    room[depth + 1] = min(room[depth] - (total - mark[depth]), residual[i])
                    mark[depth + 1] = total
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
                _push(residual, partner, path[depth], total - mark[depth + 1])
                v = tail[path[depth]]
                current[v] += 1
    # The source side of the cut: what the source still reaches in the residual network.
    level[:] = -1
    level[source] = 0
    queue[0], q_head, q_tail = source, 0, 1
    while q_head < q_tail:
        v = queue[q_head]
        q_head += 1
        for i in range(first[v], first[v + 1]):
            w = head[i]
            if level[w] < 0 and residual[i] > eps:
                level[w] = 0
                queue[q_tail] = w
                q_tail += 1
    _store_flow(arc, residual, flow)
    # The cut: nodes whose in-vertex the source still reaches and whose out-vertex it does not.
    cut = np.empty(n, dtype=np.int64)
    size = 0
    for v in range(n):
        if pair_capacity[v] > 0 and level[2 * v] >= 0 and level[2 * v + 1] < 0:
            cut[size] = v
            size += 1
    return cut[:size]


@njit(nogil=True)
def _push(residual: FloatArray, partner: LayoutIds, i: int, amount: float) -> None:  # pragma: no cover - compiled
    """Send ``amount`` more along arc slot ``i``: its residual shrinks, its reverse arc's grows."""
    residual[i] -= amount
    residual[partner[i]] += amount


@njit(nogil=True)
def _saturation_eps(pair_capacity: FloatArray, n: int) -> float:  # pragma: no cover - compiled
    """Residual capacity that counts as saturated: 1e-13 of the finite node capacities' sum. A trimmed
    or rerouted flow's sums carry rounding, and a sliver of 1e-17 left on a node's arc must not move
    the cut."""
    total = 0.0
    for v in range(n):
        if np.isfinite(pair_capacity[v]):
            total += pair_capacity[v]
    return 1e-13 * total


@njit(nogil=True)
def _residuals(pair_capacity: FloatArray, arc: LayoutIds, flow: FloatArray) -> FloatArray:  # pragma: no cover
    """Residual capacity of every arc slot given each pair's ``flow``: a forward arc has what its
    capacity leaves, a reverse arc the flow it could cancel."""
    residual = np.empty(len(arc))
    for i in range(len(arc)):
        a = arc[i]
        f = flow[a >> 1]
        residual[i] = f if a & 1 else max(pair_capacity[a >> 1] - f, 0.0)
    return residual


@njit(nogil=True)
def _store_flow(arc: LayoutIds, residual: FloatArray, flow: FloatArray) -> None:  # pragma: no cover - compiled
    """Write each pair's flow back from ``residual``: it is the residual capacity of its reverse arc."""
    for i in range(len(arc)):
        if arc[i] & 1:
            flow[arc[i] >> 1] = residual[i]


@njit(nogil=True)
def _reroute(  # pragma: no cover - compiled
    pair_capacity: FloatArray,
    flow: FloatArray,
    n: int,
    first: LayoutIds,
    head: LayoutIds,
    tail: LayoutIds,
    partner: LayoutIds,
    arc: LayoutIds,
    slot: LayoutIds,
    eps: float,
) -> bool:
    """Clip ``flow`` (per arc pair, in place) to ``pair_capacity`` and send each clipped amount from
    the arc's tail, where it is now in excess, to its head, where it is now missing, along residual
    paths of at most :data:`REROUTE_DEPTH` arcs that avoid the super source and sink. Returns whether
    anything was clipped.

    Dinic's idea on a small scale, from many sources to many sinks: a breadth-first search from
    every vertex still missing flow, backwards along residual arcs, labels each vertex with its
    distance to the nearest one; then depth-first searches from every vertex in excess follow
    arcs one label lower, each carrying as much as the path, the excess and the deficit allow.
    What no short path can carry stays unbalanced for :func:`_repair_flow` to trim. Every push
    stays within a residual capacity, so the flow stays within every capacity.
    """
    num_vertices = 2 * n + 2
    source, sink = 2 * n, 2 * n + 1
    excess = np.zeros(num_vertices)  # inflow minus outflow; negative where flow is missing
    touched = np.zeros(num_vertices, dtype=np.bool_)  # the only vertices that can ever be unbalanced
    clipped = False
    for a in range(len(flow)):
        if flow[a] > pair_capacity[a]:
            i = slot[2 * a]
            excess[tail[i]] += flow[a] - pair_capacity[a]
            excess[head[i]] -= flow[a] - pair_capacity[a]
            touched[tail[i]] = touched[head[i]] = True
            flow[a] = pair_capacity[a]
            clipped = True
    if not clipped:
        return False
    excess[source] = excess[sink] = 0.0  # the super source and sink balance themselves
    unbalanced = np.flatnonzero(touched)  # ascending, so each search seeds in vertex order
    residual = _residuals(pair_capacity, arc, flow)
    level = np.full(num_vertices, -1, dtype=np.int64)  # distance to the nearest deficit; -2: dead end
    queue = np.empty(num_vertices, dtype=np.int64)
    current = np.empty(num_vertices, dtype=np.int64)
    path = np.empty(REROUTE_DEPTH, dtype=np.int64)
    for _ in range(REROUTE_PHASES):
        q_tail = pending = 0
        for v in unbalanced:  # a push moves imbalance only between these
            if excess[v] < -eps:
                level[v] = 0
                queue[q_tail] = v
                q_tail += 1
            elif excess[v] > eps:
                pending += 1
        q_head = 0
        reached = 0
        while q_head < q_tail and reached < pending:
            v = queue[q_head]
            q_head += 1
            if level[v] == REROUTE_DEPTH:
                continue
            for i in range(first[v], first[v + 1]):
                w = head[i]
                if level[w] == -1 and w != source and w != sink and residual[partner[i]] > eps:
                    level[w] = level[v] + 1
                    queue[q_tail] = w
                    q_tail += 1
                    if excess[w] > eps:
                        reached += 1
        for k in range(q_tail):
            current[queue[k]] = first[queue[k]]
        for k in range(q_tail):
            start = queue[k]
            while excess[start] > eps and level[start] > 0:
                depth, v = 0, start
                while level[v] != 0 or excess[v] >= -eps:
                    if level[v] == 0:  # a deficit filled since the search: a dead end now
                        level[v] = -2
                        depth -= 1
                        v = tail[path[depth]]
                        current[v] += 1
                        continue
                    while current[v] < first[v + 1]:
                        i = current[v]
                        if level[head[i]] == level[v] - 1 and residual[i] > eps:
                            break
                        current[v] += 1
                    if current[v] < first[v + 1]:
                        path[depth] = current[v]
                        depth += 1
                        v = head[current[v]]
                        continue
                    level[v] = -2
                    if depth == 0:
                        break
                    depth -= 1
                    v = tail[path[depth]]
                    current[v] += 1
                if depth == 0:
                    break  # ``start`` is a dead end
                amount = min(excess[start], -excess[v])
                for d in range(depth):
                    amount = min(amount, residual[path[d]])
                for d in range(depth):
                    _push(residual, partner, path[d], amount)
                excess[start] -= amount
                excess[v] += amount
        for k in range(q_tail):
            level[queue[k]] = -1
        if reached == 0:
            break
    _store_flow(arc, residual, flow)
    return True


@njit(nogil=True)
def _repair_flow(  # pragma: no cover - compiled
    pair_capacity: FloatArray,
    edges: IntArray,
    out_first: IntArray,
    out_edges: IntArray,
    in_first: IntArray,
    in_edges: IntArray,
    flow: FloatArray,
) -> float:
    """Trim a starting flow (per arc pair, see :class:`ArcLayout`), in place, to a feasible flow of
    the network with ``pair_capacity``; returns its value.

    Forward in topological order, a node passes on at most what reaches it and its capacity
    (each outgoing arc keeping at most its old flow and capacity); backward, it then takes in
    only what it passes on. Every value only shrinks, so the result is a flow within every
    capacity, and it keeps all of the old flow that still fits along unchanged paths.
    """
    n = len(out_first) - 1
    num_edges = len(edges)
    to_edge, from_source, to_sink = n, n + num_edges, 2 * n + num_edges
    for a in range(len(flow)):
        flow[a] = min(flow[a], pair_capacity[a])
    inflow = np.zeros(n)
    for v in range(n):
        inflow[v] += flow[from_source + v]
        remaining = min(inflow[v], pair_capacity[v])
        for i in range(out_first[v], out_first[v + 1]):
            e = out_edges[i]
            f = min(flow[to_edge + e], remaining)
            flow[to_edge + e] = f
            remaining = max(remaining - f, 0.0)
            inflow[edges[e, 1]] += f
        flow[to_sink + v] = min(flow[to_sink + v], remaining)
    value = 0.0
    for v in range(n - 1, -1, -1):
        out = flow[to_sink + v]
        for i in range(out_first[v], out_first[v + 1]):
            out += flow[to_edge + out_edges[i]]
        flow[v] = out
        surplus = flow[from_source + v] - out
        for i in range(in_first[v], in_first[v + 1]):
            surplus += flow[to_edge + in_edges[i]]
        if surplus > 0:
            cut_back = min(flow[from_source + v], surplus)
            flow[from_source + v] -= cut_back
            surplus -= cut_back
        for i in range(in_first[v], in_first[v + 1]):
            if surplus <= 0:
                break
            e = to_edge + in_edges[i]
            cut_back = min(flow[e], surplus)
            flow[e] -= cut_back
            surplus -= cut_back
        value += flow[from_source + v]
    return value
