"""Instruction orders of the zero-bubble schedules that ``torch.distributed.pipelining`` ships.

Zero-bubble schedules split each backward into its input-gradient part (``backward_input``,
which the upstream stage waits for) and its weight-gradient part (``backward_weight``, which
nothing waits for and is deferred into what would otherwise be idle time). The orders here are
the ones torch 2.13's ``ScheduleInterleavedZeroBubble`` (``zb``), ``ScheduleZBVZeroBubble``
(``zbv``) and ``ScheduleDualPipeV`` (``dualpipev``) run on every rank, without their idle
slots: a worker applies each instruction's frequency by its position in this order, and the
tests compare it with the torch schedule objects' own ``pipeline_order``.

DualPipeV overlaps a forward of one chunk with a fused backward of the other; Perseus plans
the pair as the forward followed by the backward, the order torch runs them in.
"""

from __future__ import annotations

from collections import deque

from perseus.errors import InputError
from perseus.pipeline.instruction import Instruction, StageOrder, check_shape

FORWARD, BACKWARD, INPUT, WEIGHT = "forward", "backward", "backward_input", "backward_weight"


class _RankOrder:
    """One rank's instructions as they are appended, numbering microbatches per (chunk, pass).

    A fused backward and a backward-input pass share one counter: both take the next
    microbatch whose input gradient is due. Weight passes replay input passes first in, first out.
    """

    def __init__(self, stage: int) -> None:
        self.stage = stage
        self.ops: list[Instruction] = []
        self.count: dict[tuple[int, str], int] = {}
        self.pending_weights: deque[Instruction] = deque()

    def add(self, kind: str, chunk: int) -> None:
        key = (chunk, FORWARD if kind == FORWARD else INPUT)
        microbatch = self.count.get(key, 0)
        self.count[key] = microbatch + 1
        self.ops.append(Instruction(self.stage, kind, microbatch, chunk))
        if kind == INPUT:
            self.pending_weights.append(Instruction(self.stage, WEIGHT, microbatch, chunk))

    def add_weight(self, chunk: int | None = None) -> None:
        """The oldest deferred weight pass (of ``chunk``, if given), if any."""
        for weight in self.pending_weights:
            if chunk is None or weight.chunk == chunk:
                self.pending_weights.remove(weight)
                self.ops.append(weight)
                return

    def drain_weights(self, chunk: int | None = None) -> None:
        """Every deferred weight pass (of ``chunk``, if given), oldest first."""
        while any(chunk is None or w.chunk == chunk for w in self.pending_weights):
            self.add_weight(chunk)


def interleaved_zero_bubble(num_stages: int, num_microbatches: int, num_chunks: int = 1) -> StageOrder:
    """ZB-H1 style zero bubble over ``num_chunks`` looped chunks per rank (torch's interleaved ZB).

    Like interleaved 1F1B, microbatches pass the chunks in rounds of ``M // max(1, M // S)``;
    rank ``s`` warms up with one forward fewer per hop from the last rank (instead of two),
    runs forward then input gradient in the steady state, and from its ``s``-th input gradient
    on follows each with the oldest deferred weight gradient; the rest drain at the end.
    """
    check_shape(num_stages, num_microbatches)
    if num_chunks < 1:
        raise InputError("num_chunks", f"must be >= 1, got {num_chunks}")
    rounds = max(1, num_microbatches // num_stages)
    if num_microbatches % rounds:
        raise InputError(
            "num_microbatches",
            f"zero bubble with {num_stages} stages needs a multiple of {rounds} microbatches, got {num_microbatches}",
        )
    per_round = num_microbatches // rounds
    total = num_microbatches * num_chunks
    order: StageOrder = []
    for s in range(num_stages):
        rank = _RankOrder(s)
        warmup = min((num_chunks - 1) * per_round + num_stages - 1 - s, total)
        for k in range(warmup):
            rank.add(FORWARD, (k // per_round) % num_chunks)
        for k in range(total):
            if warmup + k < total:
                rank.add(FORWARD, ((warmup + k) // per_round) % num_chunks)
            rank.add(INPUT, num_chunks - 1 - (k // per_round) % num_chunks)
            if k >= s:
                rank.add_weight()
        rank.drain_weights()
        order.append(rank.ops)
    return order


def zero_bubble_v(num_stages: int, num_microbatches: int) -> StageOrder:
    """ZB-V: two chunks per rank in a V (rank ``s`` holds virtual stages ``s`` and ``2S-1-s``).

    The order is planned for at least ``2S - 1`` microbatches, the number that fills the V, and
    instructions of microbatches beyond ``M`` are dropped, as torch does.
    """
    check_shape(num_stages, num_microbatches)
    S, planned = num_stages, max(2 * num_stages - 1, num_microbatches)
    order: StageOrder = []
    for s in range(S):
        rank = _RankOrder(s)
        for _ in range(2 * (S - s) - 1):
            rank.add(FORWARD, 0)
        for _ in range(s):
            rank.add(FORWARD, 1)
            rank.add(FORWARD, 0)
        for _ in range(S - s):
            _forward_input_weight(rank, 1)
        while rank.count.get((1, FORWARD), 0) < rank.count[(0, FORWARD)] or rank.count[(0, FORWARD)] < planned:
            if rank.count[(0, FORWARD)] < planned:
                rank.add(FORWARD, 0)
            rank.add(INPUT, 0)
            rank.add_weight()
            _forward_input_weight(rank, 1)
        # Cool-down: input gradients of both chunks first, chunk 0's weights interleaved with its
        # last S - s input gradients, then every weight still deferred, chunk 1's before chunk 0's.
        for _ in range(s):
            rank.add(INPUT, 0)
            rank.add(INPUT, 1)
        for _ in range(S - s):
            rank.add(INPUT, 0)
            rank.add_weight(0)
        rank.drain_weights(1)
        rank.drain_weights(0)
        order.append([i for i in rank.ops if i.microbatch < num_microbatches])
    return order


def _forward_input_weight(rank: _RankOrder, chunk: int) -> None:
    """Forward, input gradient and weight gradient of the same microbatch, back to back."""
    rank.add(FORWARD, chunk)
    rank.add(INPUT, chunk)
    rank.add_weight()


def dual_pipe_v(num_stages: int, num_microbatches: int) -> StageOrder:
    """DualPipeV (DeepSeek's DualPipe folded into a V over ``S`` ranks); needs ``M >= 2S``.

    After warm-up every rank pairs a forward of one chunk with a fused backward of the other.
    Rank ``s`` splits its last backwards (from the middle of its final ``s + 1`` pairs on) into
    input and weight gradient and defers the weight parts into the drain.
    """
    check_shape(num_stages, num_microbatches)
    S, M = num_stages, num_microbatches
    if M < 2 * S:
        raise InputError(
            "num_microbatches", f"DualPipeV over {S} stages needs at least {2 * S} microbatches, got {M}"
        )
    order: StageOrder = []
    for s in range(S):
        rank = _RankOrder(s)
        for _ in range(2 * (S - s - 1)):
            rank.add(FORWARD, 0)
        for _ in range(s + 1):
            rank.add(FORWARD, 0)
            rank.add(FORWARD, 1)
        for _ in range(S - s - 1):
            rank.add(INPUT, 1)
            rank.add_weight()
            rank.add(FORWARD, 1)
        for _ in range(M - 2 * S + s + 1):
            rank.add(FORWARD, 0)
            rank.add(BACKWARD, 1)
            rank.add(FORWARD, 1)
            rank.add(BACKWARD, 0)
        for _ in range(S - s - 1):
            rank.add(BACKWARD, 1)
            rank.add(FORWARD, 1)
            rank.add(BACKWARD, 0)
        # The split starts at pair (s + 1) // 2: on odd ranks with that pair's chunk-1 backward,
        # on even ranks with its chunk-0 backward.
        split = False
        for i in range(s + 1):
            split = split or (i == (s + 1) // 2 and s % 2 == 1)
            rank.add(INPUT if split else BACKWARD, 1)
            split = split or (i == (s + 1) // 2 and s % 2 == 0)
            rank.add(INPUT if split else BACKWARD, 0)
        for _ in range(S - s - 1):
            rank.add_weight()
            rank.add(INPUT, 0)
        rank.drain_weights()
        order.append(rank.ops)
    return order
