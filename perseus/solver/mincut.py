"""Minimum vertex cut on the critical sub-DAG, via igraph's push-relabel max-flow (C core).

Each node ``v`` is split into ``v_in -> v_out`` with capacity equal to the energy it costs
per second of speed-up; dependency edges, and the edges from the super source and to the
super sink, are uncapacitated. The minimum cut is the cheapest set of instructions whose
speed-up shortens every critical path at once (the Phillips-Dessouky step).

igraph takes float capacities, so costs go in exactly. On the near-whole-DAG networks
late in a solve it measured about 5x faster than scipy's int32-only Dinic here.
"""

from __future__ import annotations

import igraph
import numpy as np
import numpy.typing as npt

from perseus.pipeline.dag import FloatArray, IntArray


class CutNetwork:
    """The split network of a whole DAG, built once; each cut only rewrites capacities.

    Non-critical nodes, slack edges and the source/sink arcs of non-terminal nodes get
    capacity 0, which max-flow treats as absent. Building a fresh igraph graph of just the
    critical sub-DAG per cut (and the Python lists it is made from) cost more than the
    max-flow itself; reusing one graph made the whole solve 1.3x (8 x 12) to 1.75x (8 x 96)
    faster.
    """

    def __init__(self, num_nodes: int, edges: IntArray) -> None:
        self.num_nodes = num_nodes
        self.num_edges = len(edges)
        source, sink = 2 * num_nodes, 2 * num_nodes + 1
        ids = np.arange(num_nodes)
        # Arc order: node arcs, dependency edges, source arcs, sink arcs (see `min_cut`).
        tails = np.concatenate([2 * ids, 2 * edges[:, 0] + 1, np.full(num_nodes, source), 2 * ids + 1])
        heads = np.concatenate([2 * ids + 1, 2 * edges[:, 1], 2 * ids, np.full(num_nodes, sink)])
        self.graph = igraph.Graph(n=2 * num_nodes + 2, edges=np.column_stack([tails, heads]).tolist(), directed=True)

    def min_cut(
        self, capacity: FloatArray, tight: npt.NDArray[np.bool_], sources: IntArray, sinks: IntArray
    ) -> IntArray:
        """Node ids of a minimum vertex cut; ``capacity`` is per node (0 = not in the critical
        DAG, ``inf`` = cannot be cut), ``tight`` masks the edges of the critical DAG."""
        n = self.num_nodes
        finite = np.isfinite(capacity)
        infinite = 4.0 * float(capacity[finite].sum()) + 1.0
        caps = np.zeros(3 * n + self.num_edges)
        caps[:n] = np.where(finite, capacity, infinite)
        caps[n : n + self.num_edges][tight] = infinite
        caps[n + self.num_edges + sources] = infinite
        caps[2 * n + self.num_edges + sinks] = infinite
        _, _, _, partition = igraph.GraphBase.maxflow(self.graph, 2 * n, 2 * n + 1, caps.tolist())
        in_partition = np.zeros(2 * n + 2, dtype=bool)
        in_partition[partition] = True
        source_side = in_partition if in_partition[2 * n] else ~in_partition
        return np.flatnonzero(source_side[0 : 2 * n : 2] & ~source_side[1 : 2 * n : 2] & (capacity > 0))
