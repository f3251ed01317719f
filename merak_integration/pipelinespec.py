"""What every rank of a pipeline must agree on, and the model's partition, without torch.

:class:`PipelineSpec` names the model, batch shape, schedule and partition; :func:`model_partition`
cuts the model into virtual stages from the torch-free layer counts of
:mod:`merak_integration.modelspec`. The launcher checks a run with these before any worker starts,
without paying for importing torch; :mod:`merak_integration.pipeline` (re-exporting them) builds
the stages.
"""

from __future__ import annotations

from dataclasses import dataclass

from merak_integration.hooks import instruction_name
from merak_integration.modelspec import ModelConfig, get_config, layer_specs
from merak_integration.partition import Partition, partition
from perseus.errors import InputError
from perseus.pipeline.instruction import schedule_chunks
from perseus.pipeline.schedules import stage_orders

#: ``--train_schedule`` spellings and the schedule names Perseus plans use.
SCHEDULES: dict[str, str] = {
    "1f1b": "1f1b",
    "gpipe": "gpipe",
    "interleaved": "interleaved-1f1b",
    "interleaved-1f1b": "interleaved-1f1b",
    "zb": "zb",
    "zbv": "zbv",
    "dualpipev": "dualpipev",
}

@dataclass(frozen=True)
class PipelineSpec:
    """What every rank must agree on to run the same pipeline."""

    model: str
    microbatch_size: int
    num_microbatches: int
    num_stages: int
    schedule: str = "1f1b"
    """Perseus schedule name: ``1f1b``, ``gpipe``, ``interleaved-1f1b``, ``zb``, ``zbv`` or ``dualpipev``."""
    num_chunks: int = 1
    """Model chunks per rank; 2 or more for interleaved 1F1B, 2 for ZBV and DualPipeV, any for ZB."""
    partition_method: str = "uniform"
    seed: int = 0

    @property
    def num_virtual_stages(self) -> int:
        return self.num_stages * self.num_chunks

    def instruction_names(self, stage: int) -> list[str]:
        """This stage's instructions in the order plans list them."""
        order = stage_orders(self.schedule, self.num_stages, self.num_microbatches, self.num_chunks)[stage]
        return [instruction_name(i.kind, i.microbatch, i.chunk) for i in order]


def normalize_schedule(name: str, num_chunks: int | None) -> tuple[str, int]:
    """``(perseus schedule name, chunks per rank)`` for a ``--train_schedule`` value (None: its default)."""
    if name not in SCHEDULES:
        raise InputError("--train_schedule", f"must be one of 1f1b, gpipe, interleaved, zb, zbv, dualpipev; got {name!r}")
    schedule = SCHEDULES[name]
    try:
        return schedule, schedule_chunks(schedule, num_chunks)
    except InputError as exc:
        raise InputError("--num_chunks", exc.problem) from None


def model_partition(spec: PipelineSpec) -> tuple[ModelConfig, Partition, list[str]]:
    """The model config, its partition into virtual stages and every layer's kind (cheap: counted, nothing is built)."""
    cfg = get_config(spec.model)
    layers = layer_specs(cfg)
    kinds = [kind for kind, _ in layers]
    part = partition(spec.partition_method, [count for _, count in layers], kinds, spec.num_virtual_stages)
    return cfg, part, kinds
