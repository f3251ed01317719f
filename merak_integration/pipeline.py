"""One rank's share of a pipeline on ``torch.distributed.pipelining``, with per-instruction hooks.

:class:`StagePipeline` builds this rank's stage module(s) from the model zoo and the partition,
wraps them in torch ``PipelineStage`` objects and a torch schedule (1F1B, GPipe, interleaved 1F1B,
or the zero-bubble schedules ZB, ZBV and DualPipeV), and wraps every stage's ``forward_one_chunk``,
``backward_one_chunk`` (fused, or input gradient only) and ``backward_weight_one_chunk`` so that the
hook API is called around every instruction of every microbatch.

At construction it checks that the order in which torch's schedule will run this rank's
instructions equals :func:`perseus.pipeline.schedules.stage_orders` (the order plans are written
in); at run time :class:`~merak_integration.hooks.OrderCheck` re-checks every instruction.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from merak_integration.hooks import InstructionHooks, NullHooks, instruction_name
from merak_integration.models import ModelConfig, build_layers, get_config, loss_fn
from merak_integration.partition import Partition
from merak_integration.pipelinespec import SCHEDULES as SCHEDULES
from merak_integration.pipelinespec import PipelineSpec as PipelineSpec
from merak_integration.pipelinespec import model_partition as model_partition
from merak_integration.pipelinespec import normalize_schedule as normalize_schedule
from perseus.errors import InputError
from perseus.pipeline.instruction import virtual_stage

if TYPE_CHECKING:
    from torch.distributed.pipelining import PipelineStage
    from torch.distributed.pipelining.schedules import PipelineScheduleSingle

#: torch's multi-stage schedule class (in ``torch.distributed.pipelining.schedules``) for each Perseus
#: schedule that runs several chunks per rank; named, not imported, so the launcher starts fast.
MULTI_STAGE_SCHEDULES: dict[str, str] = {
    "interleaved-1f1b": "ScheduleInterleaved1F1B",
    "zb": "ScheduleInterleavedZeroBubble",
    "zbv": "ScheduleZBVZeroBubble",
    "dualpipev": "ScheduleDualPipeV",
}

#: Compute actions of torch's schedule IR and the instruction kinds they are.
_TORCH_KINDS = {"F": "forward", "B": "backward", "I": "backward_input", "W": "backward_weight"}


def build_stage_module(cfg: ModelConfig, part: Partition, virtual_stage: int, seed: int) -> nn.Sequential:
    return nn.Sequential(*build_layers(cfg, seed=seed, only=part.layers(virtual_stage)))


@dataclass
class StagePipeline:
    """This rank's stage(s), the torch schedule that runs them, and the hooks it calls."""

    spec: PipelineSpec
    rank: int
    """Pipeline rank (stage index of this GPU)."""
    group: dist.ProcessGroup | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    hooks: InstructionHooks = field(default_factory=NullHooks)

    def __post_init__(self) -> None:
        # Imported here: torch.distributed.pipelining pulls in dynamo (seconds), which the launcher's
        # checks must not wait for.
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, schedules

        spec = self.spec
        self.config, self.partition, self.kinds = model_partition(spec)
        s, c = spec.num_stages, spec.num_chunks
        self.virtual_stages = [virtual_stage(spec.schedule, s, self.rank, chunk) for chunk in range(c)]
        self.modules = [
            build_stage_module(self.config, self.partition, v, spec.seed).to(self.device)
            for v in self.virtual_stages
        ]
        self.stages = [
            PipelineStage(m, v, spec.num_virtual_stages, self.device, group=self.group)
            for m, v in zip(self.modules, self.virtual_stages, strict=True)
        ]
        for chunk, stage in enumerate(self.stages):
            self._wrap(stage, chunk)
        m = spec.num_microbatches
        if spec.schedule == "1f1b":
            if m < s:
                raise InputError("NUM_MICROBATCHES", f"1F1B needs at least as many microbatches as stages ({s}), got {m}")
            self.schedule: Any = Schedule1F1B(self.stages[0], m, loss_fn=loss_fn)
        elif spec.schedule == "gpipe":
            self.schedule = ScheduleGPipe(self.stages[0], m, loss_fn=loss_fn)
        else:
            # stage_orders raises a clear InputError for shapes the schedule cannot run.
            spec.instruction_names(self.rank)
            schedule_class = getattr(schedules, MULTI_STAGE_SCHEDULES[spec.schedule])
            self.schedule = schedule_class(list[Any](self.stages), m, loss_fn=loss_fn)
        self.expected_order = spec.instruction_names(self.rank)
        torch_order = self.torch_order()
        if torch_order != self.expected_order:
            raise RuntimeError(
                f"stage {self.rank}: torch's {type(self.schedule).__name__} runs {torch_order} but Perseus plans "
                f"for {spec.schedule} list {self.expected_order}; plans would be applied to the wrong instructions"
            )

    @property
    def is_first(self) -> bool:
        """Whether this rank holds the model's first layers (and takes the inputs)."""
        return 0 in self.virtual_stages

    @property
    def is_last(self) -> bool:
        """Whether this rank holds the model's last layers (and computes the loss); in a V, rank 0."""
        return self.spec.num_virtual_stages - 1 in self.virtual_stages

    @property
    def chunk_shares(self) -> tuple[float, ...]:
        """Each chunk's share of this rank's layers: what a simulated GPU charges its instructions."""
        sizes = [len(self.partition.layers(v)) for v in self.virtual_stages]
        return tuple(n / sum(sizes) for n in sizes)

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]

    def named_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters keyed ``<layer index>.<name>`` in whole-model numbering."""
        out: dict[str, nn.Parameter] = {}
        for v, module in zip(self.virtual_stages, self.modules, strict=True):
            first = self.partition.boundaries[v]
            for name, p in module.named_parameters():
                local, _, rest = name.partition(".")
                out[f"{first + int(local)}.{rest}"] = p
        return out

    def torch_order(self) -> list[str]:
        """The instructions torch's schedule runs on this rank, as instruction names.

        Single-stage schedules (1F1B, GPipe) are dry-run: their own ``_step_microbatches`` code runs
        against a stage that only records calls (their ``pipeline_order`` IR is informative only and
        lists microbatch 1 first on the last stage in torch 2.13, unlike what runs). Multi-stage
        schedules (interleaved, zero bubble) execute their ``pipeline_order_with_comms`` list, which is
        read; DualPipeV's overlapped forward-backward pairs run their forward first.
        """
        from torch.distributed.pipelining.schedules import PipelineScheduleSingle

        if isinstance(self.schedule, PipelineScheduleSingle):
            recorded = _dry_run(self.schedule)
            return [instruction_name(kind, mb) for kind, mb in recorded]
        return [instruction_name(*x) for x in _runtime_order(self.schedule, self.rank, self.spec.num_stages)]

    def step(self, inputs: torch.Tensor | None, targets: torch.Tensor | None) -> float | None:
        """Run one iteration's forwards and backwards; returns the mean loss on the last stage."""
        losses: list[torch.Tensor] = []
        args = (inputs.to(self.device),) if self.is_first and inputs is not None else ()
        target = targets.to(self.device) if self.is_last and targets is not None else None
        self.schedule.step(*args, target=target, losses=losses if self.is_last else None)
        if self.is_last and losses:
            return float(torch.stack([x.detach().float() for x in losses]).mean())
        return None

    def _wrap(self, stage: PipelineStage, chunk: int) -> None:
        """Call the hooks around this stage's forward, backward and weight-gradient pass of every microbatch."""
        forward: Callable[..., Any] = stage.forward_one_chunk
        backward: Callable[..., Any] = stage.backward_one_chunk
        backward_weight: Callable[..., Any] = stage.backward_weight_one_chunk

        def hooked(kind: str, run: Callable[..., Any], chunk_id: int, *args: Any, **kwargs: Any) -> Any:
            name = instruction_name(kind, chunk_id, chunk)
            self.hooks.on_instruction_begin(name)
            out = run(chunk_id, *args, **kwargs)
            self.hooks.on_instruction_end(name)
            return out

        def forward_one_chunk(fwd_chunk_id: int, *args: Any, **kwargs: Any) -> Any:
            return hooked("forward", forward, fwd_chunk_id, *args, **kwargs)

        def backward_one_chunk(bwd_chunk_id: int, *args: Any, full_backward: bool = True, **kwargs: Any) -> Any:
            kind = "backward" if full_backward else "backward_input"
            return hooked(kind, backward, bwd_chunk_id, *args, full_backward=full_backward, **kwargs)

        def backward_weight_one_chunk(bwd_chunk_id: int, *args: Any, **kwargs: Any) -> Any:
            return hooked("backward_weight", backward_weight, bwd_chunk_id, *args, **kwargs)

        stage.forward_one_chunk = forward_one_chunk  # type: ignore[method-assign]
        stage.backward_one_chunk = backward_one_chunk  # type: ignore[method-assign]
        stage.backward_weight_one_chunk = backward_weight_one_chunk  # type: ignore[method-assign]


def reference_gradients(spec: PipelineSpec, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of one iteration of the whole model in a single process (no pipeline).

    Splits the batch into the same microbatches and averages their losses, which is what
    torch's schedules compute with ``scale_grads=True``.
    """
    layers = build_layers(get_config(spec.model), seed=spec.seed)
    model = nn.Sequential(*layers)
    m = spec.num_microbatches
    for x, y in zip(inputs.chunk(m), targets.chunk(m), strict=True):
        (loss_fn(model(x), y) / m).backward()
    return {
        name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None
    }


class _RecordingStage:
    """Stands in for a PipelineStage in a dry run: no communication, no compute, records the order."""

    def __init__(self, stage: Any) -> None:
        self.stage_index = stage.stage_index
        self.num_stages = stage.num_stages
        self.is_first = stage.is_first
        self.is_last = stage.is_last
        self.has_backward = True
        self.output_chunks: list[Any] = []
        self.calls: list[tuple[str, int]] = []

    def forward_one_chunk(self, chunk_id: int, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("forward", chunk_id))

    def backward_one_chunk(self, chunk_id: int, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("backward", chunk_id))

    def __getattr__(self, name: str) -> Any:
        # get_*_ops return no P2P ops; everything else (reduce grads, clear states) does nothing.
        if name.startswith("get_") and name.endswith("_ops"):
            return lambda *a, **k: []
        return lambda *a, **k: None


def _dry_run(schedule: PipelineScheduleSingle) -> list[tuple[str, int]]:
    """Run a single-stage torch schedule's own step code on a recording stage."""
    recorder = _RecordingStage(schedule._stage)
    dry = copy.copy(schedule)
    dry._stage = recorder  # type: ignore[assignment]
    for method in ("_initialize_stage", "_maybe_compute_loss", "_update_losses"):
        setattr(dry, method, lambda *a, **k: None)
    dry._maybe_get_loss = lambda *a, **k: None  # type: ignore[method-assign]
    n = schedule._n_microbatches
    type(schedule)._step_microbatches(dry, [()] * n, [{}] * n, None, None)
    return recorder.calls


def _runtime_order(schedule: Any, rank: int, num_stages: int) -> list[tuple[str, int, int]]:
    """``(kind, microbatch, chunk)`` of the compute actions a multi-stage torch schedule runs on ``rank``.

    Virtual stage ``v`` is chunk ``v // S`` in looped and V-shaped placements alike.
    """
    out: list[tuple[str, int, int]] = []
    for action in schedule.pipeline_order_with_comms.get(rank, []):
        for sub in action.sub_actions or (action,):
            kind = _TORCH_KINDS.get(getattr(sub.computation_type, "value", ""))
            if kind is not None:
                out.append((kind, sub.microbatch_index, sub.stage_index // num_stages))
    return out
