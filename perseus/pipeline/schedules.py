"""Per-stage instruction order of the pipeline schedules Perseus plans for.

Each function returns, for every stage (GPU), the list of instructions it executes in one
training iteration, in order. The DAG (:mod:`perseus.pipeline.dag`) adds the cross-stage
dependencies; workers use the same order to match served frequencies to instructions.
"""

from __future__ import annotations

from perseus.errors import InputError
from perseus.pipeline.instruction import Instruction, StageOrder, check_shape
from perseus.pipeline.zero_bubble import dual_pipe_v, interleaved_zero_bubble, zero_bubble_v

__all__ = ["Instruction", "StageOrder", "gpipe", "interleaved_one_f_one_b", "one_f_one_b", "stage_orders"]


def one_f_one_b(num_stages: int, num_microbatches: int) -> StageOrder:
    """Synchronous 1F1B (PipeDream-Flush), the schedule of the Perseus paper.

    Stage ``s`` runs ``min(S - s - 1, M)`` warm-up forwards, then alternates one forward and
    one backward, then drains the remaining backwards.
    """
    check_shape(num_stages, num_microbatches)
    order: StageOrder = []
    for s in range(num_stages):
        warmup = min(num_stages - s - 1, num_microbatches)
        ops = [Instruction(s, "forward", m) for m in range(warmup)]
        next_fwd, next_bwd = warmup, 0
        while next_bwd < num_microbatches:
            if next_fwd < num_microbatches:
                ops.append(Instruction(s, "forward", next_fwd))
                next_fwd += 1
            ops.append(Instruction(s, "backward", next_bwd))
            next_bwd += 1
        order.append(ops)
    return order


def gpipe(num_stages: int, num_microbatches: int) -> StageOrder:
    """GPipe: every forward, then every backward, in microbatch order."""
    check_shape(num_stages, num_microbatches)
    return [
        [Instruction(s, "forward", m) for m in range(num_microbatches)]
        + [Instruction(s, "backward", m) for m in range(num_microbatches)]
        for s in range(num_stages)
    ]


def interleaved_one_f_one_b(num_stages: int, num_microbatches: int, num_chunks: int = 2) -> StageOrder:
    """Interleaved 1F1B (Megatron-LM) with ``num_chunks`` model chunks per stage.

    Microbatches go through the chunks in groups of ``num_stages``; the number of microbatches
    must be a multiple of the number of stages, as in Megatron-LM and torch's
    ``ScheduleInterleaved1F1B``.
    """
    check_shape(num_stages, num_microbatches)
    if num_chunks < 1:
        raise InputError("num_chunks", f"must be >= 1, got {num_chunks}")
    if num_chunks == 1:
        return one_f_one_b(num_stages, num_microbatches)
    if num_microbatches % num_stages:
        raise InputError(
            "num_microbatches",
            f"interleaved 1F1B needs a multiple of the number of stages ({num_stages}), got {num_microbatches}",
        )
    total = num_microbatches * num_chunks
    group = num_stages * num_chunks

    def forward(s: int, k: int) -> Instruction:
        chunk = (k // num_stages) % num_chunks
        return Instruction(s, "forward", (k // group) * num_stages + k % num_stages, chunk)

    def backward(s: int, k: int) -> Instruction:
        chunk = num_chunks - 1 - (k // num_stages) % num_chunks
        return Instruction(s, "backward", (k // group) * num_stages + k % num_stages, chunk)

    order: StageOrder = []
    for s in range(num_stages):
        warmup = min((num_stages - s - 1) * 2 + (num_chunks - 1) * num_stages, total)
        ops = [forward(s, k) for k in range(warmup)]
        next_fwd, next_bwd = warmup, 0
        while next_bwd < total:
            if next_fwd < total:
                ops.append(forward(s, next_fwd))
                next_fwd += 1
            ops.append(backward(s, next_bwd))
            next_bwd += 1
        order.append(ops)
    return order


def stage_orders(schedule: str, num_stages: int, num_microbatches: int, num_chunks: int = 1) -> StageOrder:
    """The instruction order of ``schedule``.

    ``1f1b``, ``gpipe``, ``interleaved-1f1b`` (at least 2 chunks), ``zb`` (torch's interleaved
    zero bubble, ``num_chunks`` chunks, 1 is ZB-H1), ``zbv`` and ``dualpipev`` (2 chunks in a V).
    """
    if schedule == "1f1b":
        return one_f_one_b(num_stages, num_microbatches)
    if schedule == "gpipe":
        return gpipe(num_stages, num_microbatches)
    if schedule == "interleaved-1f1b":
        return interleaved_one_f_one_b(num_stages, num_microbatches, max(num_chunks, 2))
    if schedule == "zb":
        return interleaved_zero_bubble(num_stages, num_microbatches, num_chunks)
    if schedule == "zbv":
        return zero_bubble_v(num_stages, num_microbatches)
    if schedule == "dualpipev":
        return dual_pipe_v(num_stages, num_microbatches)
    raise InputError(
        "schedule", f"must be one of 1f1b, gpipe, interleaved-1f1b, zb, zbv, dualpipev; got {schedule!r}"
    )
