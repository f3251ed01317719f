"""A lower bound on iteration energy at a given iteration time: the convex relaxation.

Each instruction may take any duration on the lower convex hull of its options (a convex
combination of two neighbouring hull points), at the interpolated effective energy. The
minimum over such relaxed plans that meet the deadline is a linear program, solved with
HiGHS; no discrete plan can do better, so ``plan.energy - bound`` bounds how far a plan is
from optimal.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from perseus.errors import PerseusError
from perseus.pipeline.costs import OptionTable
from perseus.profile.model import Measurement
from perseus.profile.pareto import lower_convex_hull


class LowerBound:
    """Energy lower bounds for one pipeline's option table, at any iteration time."""

    def __init__(self, table: OptionTable) -> None:
        self.table = table
        dag = table.dag
        hulls: list[list[Measurement]] = []
        for c in range(table.time.shape[0]):
            options = [
                Measurement(int(table.frequency[c, k]), float(table.time[c, k]), float(table.energy[c, k]))
                for k in range(int(table.count[c]))
            ]
            hulls.append(lower_convex_hull(options, table.blocking_power))
        # Variables: one weight per (node, hull point), then one start time per node.
        n = dag.num_nodes
        self._weight_node: list[int] = []
        self._weight_time: list[float] = []
        self._weight_cost: list[float] = []
        for node in range(n):
            for m in hulls[int(table.node_class[node])]:
                self._weight_node.append(node)
                self._weight_time.append(m.time)
                self._weight_cost.append(m.effective_energy(table.blocking_power))
        self._num_weights = len(self._weight_node)
        w_node = np.array(self._weight_node)
        w_time = np.array(self._weight_time)
        w_ids = np.arange(self._num_weights)
        start_ids = self._num_weights + np.arange(n)
        # Convexity: the weights of each node sum to one.
        self._a_eq = sp.csr_array((np.ones(self._num_weights), (w_node, w_ids)), shape=(n, self._num_weights + n))
        # Precedence: start_u + duration_u - start_v <= 0 for every edge (u, v).
        rows, cols, vals = [], [], []
        for e, (u, v) in enumerate(dag.edges.tolist()):
            mine = np.flatnonzero(w_node == u)
            rows += [e] * (len(mine) + 2)
            cols += [*w_ids[mine].tolist(), int(start_ids[u]), int(start_ids[v])]
            vals += [*w_time[mine].tolist(), 1.0, -1.0]
        # Deadline: start_u + duration_u <= T for every node.
        base = len(dag.edges)
        for u in range(n):
            mine = np.flatnonzero(w_node == u)
            rows += [base + u] * (len(mine) + 1)
            cols += [*w_ids[mine].tolist(), int(start_ids[u])]
            vals += [*w_time[mine].tolist(), 1.0]
        self._a_ub = sp.csr_array((vals, (rows, cols)), shape=(base + n, self._num_weights + n))
        self._b_ub_edges = np.zeros(base)
        self._cost = np.concatenate([np.array(self._weight_cost), np.zeros(n)])

    def energy_at(self, iteration_time: float) -> float:
        """The least energy any relaxed plan can use while finishing within ``iteration_time``."""
        n = self.table.dag.num_nodes
        b_ub = np.concatenate([self._b_ub_edges, np.full(n, iteration_time)])
        result = linprog(
            self._cost,
            A_ub=self._a_ub,
            b_ub=b_ub,
            A_eq=self._a_eq,
            b_eq=np.ones(n),
            bounds=(0, None),
            method="highs",
        )
        if result.status == 2:
            return float("inf")  # faster than any plan can go
        if result.status != 0:
            raise PerseusError(f"lower bound LP failed at T={iteration_time:.6f}s: {result.message}")
        return float(result.fun) + self.table.blocking_power * self.table.dag.num_stages * iteration_time
