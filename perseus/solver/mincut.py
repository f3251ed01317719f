"""Minimum vertex cut on the critical sub-DAG, via scipy's Dinic max-flow (C implementation).

Each critical node ``v`` is split into ``v_in -> v_out`` with capacity equal to the energy
it costs per second of speed-up; dependency edges, and the edges from the super source and
to the super sink, are uncapacitated. The minimum cut is the cheapest set of instructions
whose speed-up shortens every critical path at once (the Phillips-Dessouky step).

scipy's max-flow takes int32 capacities only, so costs are scaled into integers with the
whole cut bounded by 2**30; relative precision stays well below measurement noise.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from perseus.pipeline.dag import FloatArray, IntArray

_INFINITE = 2**31 - 1
_CUT_BUDGET = 2**30


def min_vertex_cut(
    num_nodes: int,
    capacity: FloatArray,
    edges: IntArray,
    sources: IntArray,
    sinks: IntArray,
) -> IntArray:
    """Nodes (local ids ``0..num_nodes-1``) of a minimum-capacity vertex cut separating sources from sinks.

    ``capacity`` must be finite and positive for every node; the caller guarantees a finite
    cut exists (some node on every source-sink path can be sped up) by giving the others
    ``inf`` and checking beforehand with :func:`has_uncuttable_path`.
    """
    finite = np.isfinite(capacity)
    scale = (_CUT_BUDGET / max(1, int(finite.sum()))) / float(capacity[finite].max(initial=1.0))
    node_cap = np.where(finite, np.maximum(1, np.rint(np.where(finite, capacity, 0) * scale)), _INFINITE)
    source, sink = 2 * num_nodes, 2 * num_nodes + 1
    size = 2 * num_nodes + 2
    ids = np.arange(num_nodes)
    rows = np.concatenate([2 * ids, 2 * edges[:, 0] + 1, np.full(len(sources), source), 2 * sinks + 1])
    cols = np.concatenate([2 * ids + 1, 2 * edges[:, 1], 2 * sources, np.full(len(sinks), sink)])
    caps = np.concatenate([node_cap, np.full(len(edges) + len(sources) + len(sinks), _INFINITE)]).astype(np.int32)
    # Build the CSR arrays directly (every arc is unique), skipping COO conversion and dedup.
    order = np.lexsort((cols, rows))
    indptr = np.zeros(size + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=size), out=indptr[1:])
    graph = sp.csr_array((caps[order], cols[order].astype(np.int32), indptr), shape=(size, size))
    flow = maximum_flow(graph, source, sink, method="dinic").flow
    # Residual arcs: forward arcs with spare capacity, and reverse arcs carrying flow.
    residual = (graph - flow).tocsr()
    residual.data = np.maximum(residual.data, 0)
    residual.eliminate_zeros()
    reached = np.zeros(size, dtype=bool)
    reached[breadth_first_order(residual, source, directed=True, return_predecessors=False)] = True
    return np.flatnonzero(reached[2 * ids] & ~reached[2 * ids + 1])
