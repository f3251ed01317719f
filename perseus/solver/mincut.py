"""Minimum vertex cut on the critical sub-DAG, via igraph's push-relabel max-flow (C core).

Each critical node ``v`` is split into ``v_in -> v_out`` with capacity equal to the energy
it costs per second of speed-up; dependency edges, and the edges from the super source and
to the super sink, are uncapacitated. The minimum cut is the cheapest set of instructions
whose speed-up shortens every critical path at once (the Phillips-Dessouky step).

igraph takes float capacities, so costs go in exactly. On the near-whole-DAG networks
late in a solve it measured about 5x faster than scipy's int32-only Dinic here.
"""

from __future__ import annotations

import igraph
import numpy as np

from perseus.pipeline.dag import FloatArray, IntArray


def min_vertex_cut(
    num_nodes: int,
    capacity: FloatArray,
    edges: IntArray,
    sources: IntArray,
    sinks: IntArray,
) -> IntArray:
    """Nodes (local ids ``0..num_nodes-1``) of a minimum-capacity vertex cut separating sources from sinks.

    ``capacity`` is the cost of cutting each node, ``inf`` for nodes that cannot be cut; the
    caller guarantees a finite cut exists (checked beforehand with ``_has_uncuttable_path``).
    """
    finite = np.isfinite(capacity)
    # Larger than any finite cut, so an "infinite" arc is never worth cutting.
    infinite = 4.0 * float(capacity[finite].sum()) + 1.0
    source, sink = 2 * num_nodes, 2 * num_nodes + 1
    ids = np.arange(num_nodes)
    tails = np.concatenate([2 * ids, 2 * edges[:, 0] + 1, np.full(len(sources), source), 2 * sinks + 1])
    heads = np.concatenate([2 * ids + 1, 2 * edges[:, 1], 2 * sources, np.full(len(sinks), sink)])
    caps = np.concatenate([np.where(finite, capacity, infinite), np.full(len(tails) - num_nodes, infinite)])
    graph = igraph.Graph(n=2 * num_nodes + 2, edges=np.column_stack([tails, heads]).tolist(), directed=True)
    # The raw C-level call: Graph.maxflow wraps it in a Flow object whose Python-side
    # bookkeeping cost more than the max-flow itself on small networks.
    _, _, _, partition = igraph.GraphBase.maxflow(graph, source, sink, caps.tolist())
    in_partition = np.zeros(2 * num_nodes + 2, dtype=bool)
    in_partition[partition] = True
    # `partition` is one side of the cut; which one igraph returns is not documented.
    source_side = in_partition if in_partition[source] else ~in_partition
    return np.flatnonzero(source_side[2 * ids] & ~source_side[2 * ids + 1])
