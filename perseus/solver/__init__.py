"""Frontier solver: graph-cut time-energy tradeoff over pipeline frequency plans."""

from perseus.solver.frontier import Frontier, GraphCutSolver, compute_frontier

__all__ = ["Frontier", "GraphCutSolver", "compute_frontier"]
