"""Aggregation across data-parallel ranks through ``torch.distributed``, when it is initialised.

Every rank of a DDP/FSDP job runs its own optimizer over its local GPU(s). For all of
them to pick the same power limit they must decide on the same numbers: energy is summed
over ranks (the job's energy), time is the slowest rank's (the job waits for it). Without
an initialised process group (or without torch) every function is the identity, so the
single-process path never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

ReduceOp = Literal["sum", "max", "min"]


def _process_group() -> Any | None:
    """``torch.distributed`` if a process group is initialised, else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def is_distributed() -> bool:
    """Whether a torch.distributed process group with more than one rank is initialised."""
    dist = _process_group()
    return dist is not None and dist.get_world_size() > 1


def all_reduce(values: Sequence[float], op: ReduceOp) -> list[float]:
    """Reduce ``values`` element-wise over all ranks (one collective call; every rank must call it)."""
    dist = _process_group()
    if dist is None or dist.get_world_size() == 1 or not values:
        return [float(v) for v in values]
    import torch

    device = torch.device("cpu")
    if dist.get_backend() == "nccl":  # NCCL only reduces CUDA tensors.
        device = torch.device("cuda", torch.cuda.current_device())
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    dist.all_reduce(tensor, op=ops[op])
    return [float(v) for v in tensor.cpu().tolist()]


def is_local_writer() -> bool:
    """Whether this process writes node-local files: local rank 0 (every process when not distributed)."""
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and local_rank.strip().isdigit():
        return int(local_rank) == 0
    dist = _process_group()
    return dist is None or dist.get_rank() == 0
