"""Memory a training run needs, estimated from the model's shape before anything is built.

A run that does not fit used to load for minutes and then exhaust the machine with no word. The
launcher now estimates, per rank, what training keeps resident and compares it with what the
device has: each GPU's memory, or on a machine without CUDA (simulated GPUs) the RAM all of this
node's ranks share.

Per rank, in fp32 (4 bytes a value):

* weights and gradients: 2 x parameters (plain SGD keeps no optimizer state);
* activations saved for the backward pass: for a transformer block about
  ``microbatch x seq x hidden x (34 + 5 x heads x seq / hidden)`` values (Korthikanti et al.,
  "Reducing Activation Recomputation in Large Transformer Models", counted there in 16-bit
  bytes; the same count of 32-bit values here), times the microbatches a stage holds at once:
  all of them under GPipe, at most ``stages - rank`` under 1F1B and the schedules built on it;
* a fixed 1 GiB per process for the framework (PyTorch, its allocator, communication buffers).

Wide ResNets' activations are not estimated (their weights are); the estimate says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from merak_integration.modelspec import ModelConfig, TransformerConfig
from merak_integration.partition import Partition
from perseus.errors import InputError
from perseus.pipeline.instruction import virtual_stage

BYTES_PER_VALUE = 4
"""fp32 weights, gradients and activations."""
FRAMEWORK_BYTES = 2**30
"""PyTorch's own resident memory per worker process, measured at about 0.5-1 GiB on CPU."""
WARN_SHARE = 0.8
"""Above this share of the available memory, the run is warned about instead of started silently."""


@dataclass(frozen=True)
class RankMemory:
    """What one rank keeps resident during training, in bytes."""

    rank: int
    weights_and_grads: int
    activations: int | None
    """None when not estimated (ResNets)."""

    @property
    def total(self) -> int:
        return self.weights_and_grads + (self.activations or 0) + FRAMEWORK_BYTES


def in_flight(schedule: str, num_stages: int, rank: int, num_microbatches: int) -> int:
    """Microbatches whose activations a rank holds at once (see the module docstring)."""
    if schedule == "gpipe":
        return num_microbatches
    return min(num_microbatches, num_stages - rank)


def estimate(
    model: ModelConfig, part: Partition, kinds: list[str], schedule: str, num_stages: int,
    microbatch_size: int, num_microbatches: int,
) -> list[RankMemory]:
    """Per pipeline rank (every virtual stage it holds counted), what training keeps resident."""
    per_rank: list[RankMemory] = []
    chunks = part.num_stages // num_stages
    for rank in range(num_stages):
        stages = [virtual_stage(schedule, num_stages, rank, chunk) for chunk in range(chunks)]
        params = sum(part.parameters[v] for v in stages)
        activations: int | None = None
        if isinstance(model, TransformerConfig):
            blocks = sum(1 for v in stages for i in part.layers(v) if kinds[i] == "block")
            per_block = microbatch_size * model.seq_len * model.hidden * (
                34 + 5 * model.heads * model.seq_len / model.hidden)
            held = in_flight(schedule, num_stages, rank, num_microbatches)
            activations = int(per_block * blocks * held * BYTES_PER_VALUE)
        per_rank.append(RankMemory(rank, 2 * params * BYTES_PER_VALUE, activations))
    return per_rank


def describe(need: int, have: int, where: str) -> str:
    """``about 30.2 GiB needed, 22.9 GiB available (RAM of this node)``."""
    return f"about {need / 2**30:.1f} GiB needed, {have / 2**30:.1f} GiB available ({where})"


def available_ram() -> int | None:
    """MemAvailable of this machine in bytes (None where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check(per_rank: list[RankMemory], *, ranks_per_node: int, gpu_bytes: int | None) -> str | None:
    """Raise InputError when the run cannot fit; a warning line when it barely fits; else None.

    ``gpu_bytes``: the smallest GPU's memory (each rank has its own); None: the ranks of this node
    share its RAM (simulated GPUs), the heaviest ranks first.
    """
    partial = any(r.activations is None for r in per_rank)
    note = " (weights only: activations not estimated for this model)" if partial else ""
    if gpu_bytes is not None:
        need, have, where = max(r.total for r in per_rank), gpu_bytes, "the smallest GPU"
    else:
        ram = available_ram()
        if ram is None:
            return None
        heaviest = sorted((r.total for r in per_rank), reverse=True)
        need = sum(heaviest[i % len(heaviest)] for i in range(ranks_per_node))
        have, where = ram, f"RAM this node's {ranks_per_node} ranks share"
    if need > have:
        raise InputError("MODEL", f"will not fit: {describe(need, have, where)}{note}; use more stages (--pp), "
                                  "a smaller microbatch or a smaller model")
    if need > WARN_SHARE * have:
        return f"perseus: warning: memory is tight: {describe(need, have, where)}{note}"
    return None
