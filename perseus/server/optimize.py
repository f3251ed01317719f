"""Frontier computation, run in a worker process so the server's event loop keeps serving."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from perseus.profile import parse_profile


def compute_frontier_plans(
    profile_csv: str,
    blocking_power: float,
    schedule: str,
    num_stages: int,
    num_microbatches: int,
    num_chunks: int,
) -> list[dict[str, Any]]:
    """The frontier's plans as JSON-ready dicts (plain data crosses the process boundary)."""
    from perseus.solver import compute_frontier

    profile = parse_profile(profile_csv, source="profile", blocking_power=blocking_power, num_stages=num_stages)
    frontier = compute_frontier(profile, schedule, num_stages, num_microbatches, num_chunks)
    return [plan.to_dict() for plan in frontier.plans]


def make_pool(workers: int = 1) -> Executor:
    """A process pool started with ``spawn``: forking a process that runs gRPC threads is unsafe."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
