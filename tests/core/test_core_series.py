"""The compiled series-tie batching picks exactly what the Python loop it replaced picked."""

from __future__ import annotations

import numpy as np

from perseus.solver.kernels import batch_series_ties


def series_ties(cut: np.ndarray, rate: np.ndarray, edges: np.ndarray, num_nodes: int, step: np.ndarray,
                resolution: float) -> np.ndarray:
    """The kernel on a network whose every edge is tight (the reference's critical sub-DAG)."""
    return batch_series_ties(cut, rate, edges, np.ones(len(edges), dtype=np.bool_), step, resolution)


def reference(cut: np.ndarray, rate: np.ndarray, edges: np.ndarray, num_nodes: int, step: np.ndarray,
              resolution: float) -> np.ndarray:
    """The Python loop of ``frontier._batch_series_ties`` before it was compiled."""
    if len(edges) == 0:
        return cut
    out_deg = np.bincount(edges[:, 0], minlength=num_nodes)
    in_deg = np.bincount(edges[:, 1], minlength=num_nodes)
    series = (out_deg[edges[:, 0]] == 1) & (in_deg[edges[:, 1]] == 1)
    nxt = np.full(num_nodes, -1, dtype=np.int64)
    prv = np.full(num_nodes, -1, dtype=np.int64)
    nxt[edges[series, 0]] = edges[series, 1]
    prv[edges[series, 1]] = edges[series, 0]
    chosen = set(cut.tolist())
    for node in cut.tolist():
        budget = resolution - step[node]
        target = rate[node]
        for direction in (nxt, prv):
            cur = int(direction[node])
            while cur >= 0 and budget > 0:
                if abs(rate[cur] - target) <= 1e-9 * target and cur not in chosen and step[cur] <= budget:
                    chosen.add(cur)
                    budget -= step[cur]
                cur = int(direction[cur])
    return np.array(sorted(chosen), dtype=np.int64)


def test_series_ties_match_the_python_loop_on_random_dags() -> None:
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(1000):
        n = int(rng.integers(2, 30))
        pairs = {(int(a), int(b)) for a, b in rng.integers(0, n, size=(int(rng.integers(1, n + 2)), 2)) if a < b}
        edges = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
        rate = rng.choice([2.0, 2.0, 2.0 + 1e-12, 1.0, np.inf], size=n)  # ties, near ties and uncuttable nodes
        step = rng.choice([0.001, 0.002, 0.005], size=n)
        cut = np.unique(rng.integers(0, n, size=int(rng.integers(1, 4)))).astype(np.int64)
        resolution = float(rng.choice([0.0, 0.004, 0.01, 0.05]))
        got = series_ties(cut, rate, edges, n, step, resolution)
        with np.errstate(invalid="ignore"):  # inf - inf: not a tie, in both
            assert np.array_equal(got, reference(cut, rate, edges, n, step, resolution))
        checked += len(got) > len(cut)
    assert checked > 80, "too few draws batched a tie to test anything"
    empty = np.zeros((0, 2), dtype=np.int64)
    assert np.array_equal(series_ties(np.array([3, 1]), np.ones(4), empty, 4, np.ones(4), 1.0), [1, 3])
