"""The max-flow network of a pipeline DAG, laid out once: every arc of every possible cut network.

See :mod:`perseus.solver.mincut` for how a cut uses it. Plain NumPy, so the solver can lay out
its network without importing numba (the compiled code that runs on it is loaded as machine
code, see :mod:`perseus.solver.native`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from perseus.pipeline.dag import IntArray

LayoutIds = npt.NDArray[np.int32]
"""Vertex and arc-slot ids of an :class:`ArcLayout` (32-bit)."""


class ArcLayout:
    """The max-flow network of a whole DAG of ``num_nodes`` nodes and ``edges`` (sorted by source).

    Vertices: ``2v`` and ``2v + 1`` are node ``v``'s in- and out-vertex, ``2N`` the super
    source, ``2N + 1`` the super sink. Arc pairs: ``a = v`` is node ``v``'s arc, ``a = N + e``
    edge ``e``'s, ``a = N + E + v`` the source's arc into ``v`` and ``a = 2N + E + v`` the arc from
    ``v`` to the sink; arc ``2a`` is the pair's forward arc and ``2a + 1`` its reverse. Arcs are
    stored grouped by tail vertex (CSR, ``first``), each slot with its ``head``, ``tail``, the slot
    of its ``partner`` and its arc id; ``slot[arc]`` is an arc's position.
    """

    def __init__(self, num_nodes: int, edges: IntArray) -> None:
        self.num_nodes = num_nodes
        self.edges = np.ascontiguousarray(edges, dtype=np.int64).reshape(-1, 2)
        self.num_pairs = 3 * num_nodes + len(self.edges)
        # 32-bit ids: half the memory traffic of the max-flow's arc scans (16 x 256: 82,000 arc slots).
        self.first, self.head, self.tail, self.partner, self.arc, self.slot = (
            ids.astype(np.int32) for ids in _layout(num_nodes, self.edges)
        )
        self.out_first, self.out_edges = _grouped(self.edges[:, 0], num_nodes)
        """Per node, its outgoing edges' ids (in id order)..."""
        self.in_first, self.in_edges = _grouped(self.edges[:, 1], num_nodes)
        """...and its incoming ones'."""


def _grouped(keys: IntArray, num_groups: int) -> tuple[IntArray, IntArray]:
    """CSR of ids ``0..len(keys)`` grouped by ``keys[id]`` (ids ascending within a group)."""
    first = np.zeros(num_groups + 1, dtype=np.int64)
    first[1:] = np.cumsum(np.bincount(keys, minlength=num_groups))
    return first, np.argsort(keys, kind="stable").astype(np.int64)


def _layout(n: int, edges: IntArray) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray, IntArray]:
    """:class:`ArcLayout`'s arrays: ``first``, and per slot ``head``, ``tail``, ``partner``, ``arc``;
    then ``slot`` per arc."""
    num_edges = len(edges)
    pairs = 3 * n + num_edges
    source, sink = 2 * n, 2 * n + 1
    tail = np.empty(2 * pairs, dtype=np.int64)
    head = np.empty(2 * pairs, dtype=np.int64)
    nodes = np.arange(n, dtype=np.int64)
    tail[2 * nodes], head[2 * nodes] = 2 * nodes, 2 * nodes + 1  # node arcs
    from_source = 2 * (n + num_edges + nodes)
    tail[from_source], head[from_source] = source, 2 * nodes
    to_sink = 2 * (2 * n + num_edges + nodes)
    tail[to_sink], head[to_sink] = 2 * nodes + 1, sink
    edge_arcs = 2 * (n + np.arange(num_edges, dtype=np.int64))
    tail[edge_arcs], head[edge_arcs] = 2 * edges[:, 0] + 1, 2 * edges[:, 1]
    tail[1::2], head[1::2] = head[0::2], tail[0::2]  # reverse arcs
    first, arc = _grouped(tail, 2 * n + 2)
    slot = np.empty(2 * pairs, dtype=np.int64)
    slot[arc] = np.arange(2 * pairs, dtype=np.int64)
    return first, head[arc], tail[arc], slot[arc ^ 1], arc, slot
