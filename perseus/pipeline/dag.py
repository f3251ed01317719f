"""The dependency DAG of one pipeline iteration.

Nodes are instructions; an edge ``u -> v`` means ``v`` cannot start before ``u`` finishes.
Two kinds of edges exist: consecutive instructions on the same stage (a GPU runs one at a
time), and data dependencies between virtual stages (activations flow forward, input
gradients flow backward, and a weight gradient needs its microbatch's input gradient).
Communication is taken as instantaneous, as in the Perseus paper; time a
stage spends waiting is charged at blocking power by the evaluator.

The arrays here are laid out for vectorised longest-path passes: nodes are numbered in
topological order and grouped into *levels* (a node's level is one more than its deepest
predecessor's), so each pass is one numpy gather-max per level. Pipelines are narrow (a level
holds at most about one node per stage), and below :data:`SCALAR_MAX_WIDTH` nodes per level a
plain Python loop over nodes beats the per-level numpy calls, so small DAGs use that instead.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from perseus.errors import InputError
from perseus.pipeline.instruction import Instruction, placement, virtual_stage
from perseus.pipeline.schedules import stage_orders

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

SCALAR_MAX_WIDTH = 12.0
"""Mean nodes per level below which the longest-path passes run as scalar Python loops.

Measured on 1F1B with the solver's reclaim step (two sweeps and two passes): scalar 1.8x
faster at 8 stages x 96 microbatches (7.5 nodes per level), even at 16 x 256 (15 per level),
numpy 1.4x faster at 32 x 64 (22 per level)."""


@dataclass(frozen=True, eq=False)
class PipelineDAG:
    """Instructions of one iteration of ``schedule`` and their dependencies."""

    schedule: str
    num_stages: int
    num_microbatches: int
    num_chunks: int
    nodes: tuple[Instruction, ...]
    """All instructions, in a topological order (node id = position)."""
    stage_nodes: tuple[tuple[int, ...], ...]
    """Per stage, node ids in execution order."""
    edges: IntArray
    """``(E, 2)`` array of ``(src, dst)`` node ids."""

    @classmethod
    def build(cls, schedule: str, num_stages: int, num_microbatches: int, num_chunks: int = 1) -> PipelineDAG:
        """The DAG of ``schedule`` for ``num_stages`` stages and ``num_microbatches`` microbatches."""
        orders = stage_orders(schedule, num_stages, num_microbatches, num_chunks)
        chunks = 1 + max(i.chunk for stage in orders for i in stage)
        deps: dict[Instruction, list[Instruction]] = {i: [] for stage in orders for i in stage}
        for stage in orders:
            for prev, cur in itertools.pairwise(stage):
                deps[cur].append(prev)
        num_virtual = num_stages * chunks
        position = {i: k for stage in orders for k, i in enumerate(stage)}
        # The pass that sends microbatch m's input gradient upstream: fused or input-only backward.
        gradient = {
            (i.stage, i.chunk, i.microbatch): i for i in deps if i.kind in ("backward", "backward_input")
        }
        for inst in deps:
            virtual = virtual_stage(schedule, num_stages, inst.stage, inst.chunk)
            if inst.kind == "forward" and virtual > 0:
                up_stage, up_chunk = placement(schedule, num_stages, virtual - 1)
                deps[inst].append(Instruction(up_stage, "forward", inst.microbatch, up_chunk))
            elif inst.kind == "backward_weight":
                _check_after_input(inst, position, schedule)
            elif inst.kind != "forward":
                if virtual < num_virtual - 1:
                    down_stage, down_chunk = placement(schedule, num_stages, virtual + 1)
                    down = gradient.get((down_stage, down_chunk, inst.microbatch))
                    deps[inst].append(down or Instruction(down_stage, "backward", inst.microbatch, down_chunk))
                else:
                    deps[inst].append(Instruction(inst.stage, "forward", inst.microbatch, inst.chunk))
        topo = _by_level(_topological_order(deps, schedule), deps)
        node_id = {inst: k for k, inst in enumerate(topo)}
        edge_list = sorted({(node_id[p], node_id[i]) for i, ps in deps.items() for p in ps})
        return cls(
            schedule=schedule,
            num_stages=num_stages,
            num_microbatches=num_microbatches,
            num_chunks=chunks,
            nodes=tuple(topo),
            stage_nodes=tuple(tuple(node_id[i] for i in stage) for stage in orders),
            edges=np.asarray(edge_list, dtype=np.int64).reshape(-1, 2),
        )

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @cached_property
    def node_stage(self) -> IntArray:
        return np.fromiter((i.stage for i in self.nodes), dtype=np.int64, count=self.num_nodes)

    @cached_property
    def predecessors(self) -> IntArray:
        """``(N, P)`` predecessor ids padded with ``N`` (a virtual node that finishes at 0)."""
        return _padded_adjacency(self.edges[:, 1], self.edges[:, 0], self.num_nodes)

    @cached_property
    def successors(self) -> IntArray:
        """``(N, Q)`` successor ids padded with ``N``."""
        return _padded_adjacency(self.edges[:, 0], self.edges[:, 1], self.num_nodes)

    @cached_property
    def levels(self) -> tuple[slice, ...]:
        """Node id ranges by depth; every predecessor of a level lies in an earlier one.

        Nodes are numbered level by level, so each level is a contiguous slice and the
        vectorised passes index with cheap views instead of gathers.
        """
        depth = np.zeros(self.num_nodes, dtype=np.int64)
        for src, dst in self.edges:  # edges are sorted by src and ids are topological
            depth[dst] = max(depth[dst], depth[src] + 1)
        bounds = [0, *(np.flatnonzero(np.diff(depth)) + 1).tolist(), self.num_nodes]
        return tuple(slice(a, b) for a, b in itertools.pairwise(bounds))

    @cached_property
    def level_predecessors(self) -> tuple[tuple[IntArray, ...], ...]:
        """Per level, the columns of ``predecessors`` (one array per padded slot).

        Taking ``np.maximum`` over a couple of gathered columns is several times cheaper
        than a 2-D gather plus ``max(axis=1)``, and these passes run thousands of times.
        """
        return tuple(tuple(self.predecessors[level].T.copy()) for level in self.levels)

    @cached_property
    def level_successors(self) -> tuple[tuple[IntArray, ...], ...]:
        return tuple(tuple(self.successors[level].T.copy()) for level in self.levels)

    @cached_property
    def scalar_passes(self) -> bool:
        """Whether passes run as per-node Python loops (narrow DAG, at most two predecessors
        and two successors per node) rather than per-level numpy calls."""
        narrow = self.num_nodes < SCALAR_MAX_WIDTH * len(self.levels)
        return narrow and self.predecessors.shape[1] <= 2 and self.successors.shape[1] <= 2

    @cached_property
    def predecessor_pairs(self) -> tuple[tuple[int, int], ...]:
        """Per node, two predecessor ids padded with ``N`` (for the scalar passes)."""
        return _pairs(self.predecessors, self.num_nodes)

    @cached_property
    def successor_pairs(self) -> tuple[tuple[int, int], ...]:
        """Per node, two successor ids padded with ``N`` (for the scalar passes)."""
        return _pairs(self.successors, self.num_nodes)

    def finish_times(self, durations: FloatArray) -> FloatArray:
        """Earliest finish time of every node when each runs for ``durations[node]`` seconds."""
        if self.scalar_passes:
            finish_list = [0.0] * (self.num_nodes + 1)  # the padding node N finishes at 0
            for v, ((a, b), d) in enumerate(zip(self.predecessor_pairs, durations.tolist(), strict=True)):
                x, y = finish_list[a], finish_list[b]
                finish_list[v] = (x if x > y else y) + d
            return np.array(finish_list[:-1])
        finish = np.zeros(self.num_nodes + 1)
        for level, preds in zip(self.levels, self.level_predecessors, strict=True):
            finish[level] = gather_max(finish, preds) + durations[level]
        return finish[:-1]

    def latest_finish_times(self, durations: FloatArray, deadline: float) -> FloatArray:
        """Latest finish time of every node that still lets the iteration end by ``deadline``."""
        if self.scalar_passes:
            n = self.num_nodes
            start_list = [deadline] * (n + 1)  # the padding node N starts at the deadline
            finish_list = [0.0] * n
            d = durations.tolist()
            pairs = self.successor_pairs
            for v in range(n - 1, -1, -1):
                a, b = pairs[v]
                x, y = start_list[a], start_list[b]
                end = x if x < y else y
                finish_list[v] = end
                start_list[v] = end - d[v]
            return np.array(finish_list)
        latest_start = np.full(self.num_nodes + 1, deadline)
        latest_finish = np.empty(self.num_nodes)
        for level, succs in zip(reversed(self.levels), reversed(self.level_successors), strict=True):
            latest_finish[level] = gather_min(latest_start, succs)
            latest_start[level] = latest_finish[level] - durations[level]
        return latest_finish


def gather_max(values: FloatArray, columns: tuple[IntArray, ...]) -> FloatArray:
    """``max`` over ``values[column]`` for each padded adjacency column."""
    out = values[columns[0]]
    for column in columns[1:]:
        np.maximum(out, values[column], out=out)
    return out


def gather_min(values: FloatArray, columns: tuple[IntArray, ...]) -> FloatArray:
    """``min`` over ``values[column]`` for each padded adjacency column."""
    out = values[columns[0]]
    for column in columns[1:]:
        np.minimum(out, values[column], out=out)
    return out


def _topological_order(deps: dict[Instruction, list[Instruction]], schedule: str) -> list[Instruction]:
    """Kahn's algorithm; preferring earlier stages keeps ids readable. A cycle is a schedule bug."""
    indegree = {i: len(ps) for i, ps in deps.items()}
    users: dict[Instruction, list[Instruction]] = {i: [] for i in deps}
    for i, ps in deps.items():
        for p in ps:
            if p not in users:
                raise InputError("schedule", f"{schedule}: {i.name} on stage {i.stage} depends on missing {p.name}")
            users[p].append(i)
    ready = deque(sorted(i for i, d in indegree.items() if d == 0))
    order: list[Instruction] = []
    while ready:
        inst = ready.popleft()
        order.append(inst)
        for user in users[inst]:
            indegree[user] -= 1
            if indegree[user] == 0:
                ready.append(user)
    if len(order) != len(deps):
        raise InputError("schedule", f"{schedule}: instruction order deadlocks (dependency cycle)")
    return order


def _check_after_input(weight: Instruction, position: dict[Instruction, int], schedule: str) -> None:
    """A weight gradient needs its input gradient, run earlier on the same stage (an edge of the
    stage's chain already, so the DAG needs no extra edge and nodes keep at most two successors)."""
    needed = Instruction(weight.stage, "backward_input", weight.microbatch, weight.chunk)
    if needed not in position or position[needed] > position[weight]:
        raise InputError("schedule", f"{schedule}: {weight.name} on stage {weight.stage} runs before {needed.name}")


def _by_level(order: list[Instruction], deps: dict[Instruction, list[Instruction]]) -> list[Instruction]:
    """Reorder a topological order by depth (longest chain of predecessors), keeping ties stable."""
    depth: dict[Instruction, int] = {}
    for inst in order:
        depth[inst] = 1 + max((depth[p] for p in deps[inst]), default=-1)
    return sorted(order, key=lambda inst: depth[inst])


def _pairs(padded: IntArray, num_nodes: int) -> tuple[tuple[int, int], ...]:
    if padded.shape[1] > 2:
        raise ValueError("scalar passes need at most two neighbours per node; use the level passes")
    if padded.shape[1] == 1:
        padded = np.column_stack([padded[:, 0], np.full(num_nodes, num_nodes)])
    return tuple((int(a), int(b)) for a, b in padded[:, :2].tolist())


def _padded_adjacency(keys: IntArray, values: IntArray, num_nodes: int) -> IntArray:
    counts = np.bincount(keys, minlength=num_nodes)
    width = max(1, int(counts.max(initial=0)))
    table = np.full((num_nodes, width), num_nodes, dtype=np.int64)
    fill = np.zeros(num_nodes, dtype=np.int64)
    for k, v in zip(keys.tolist(), values.tolist(), strict=True):
        table[k, fill[k]] = v
        fill[k] += 1
    return table
