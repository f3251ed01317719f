"""Perseus hooks for torchtitan's pipeline parallelism (``torch.distributed.pipelining`` schedules).

torchtitan's ``pipeline_llm`` returns the rank's pipeline schedule (``trainer.pp_schedule``);
one call after it is built attaches a Perseus plan::

    from merak_integration.adapters.plan_hooks import PlanHooks
    from merak_integration.adapters.torchtitan import attach_perseus
    hooks = PlanHooks.from_plan("plan.json", stage=pp_rank)
    attach_perseus(trainer.pp_schedule, hooks)

The schedule's ``step`` is wrapped in ``on_step_begin``/``on_step_end`` and every local
stage's ``forward_one_chunk``/``backward_one_chunk`` in the instruction hooks, named by
the microbatch torch passes and the model chunk (``stage_index // pp_degree``), so names
match the plan's exactly instead of being counted. Works for GPipe, 1F1B and interleaved
1F1B; zero-bubble schedules split the backward (``backward_weight_one_chunk``) and are refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from merak_integration.adapters._patch import Attachment
from merak_integration.hooks import InstructionHooks, instruction_name

_SPLIT_BACKWARD_SCHEDULES = ("ScheduleZBVZeroBubble", "ScheduleDualPipeV", "ScheduleInterleavedZeroBubble")


def local_stages(schedule: Any) -> list[Any]:
    """The pipeline stages this rank runs: ``_stages`` of multi-stage schedules, ``_stage`` of single ones."""
    stages = getattr(schedule, "_stages", None)
    if stages is None:
        stage = getattr(schedule, "_stage", None)
        stages = [stage] if stage is not None else None
    if not stages:
        raise TypeError(f"{type(schedule).__name__} has no pipeline stages; is this a torch.distributed.pipelining schedule?")
    return list(stages)


def attach_perseus(schedule: Any, hooks: InstructionHooks) -> Attachment:
    """Make a ``torch.distributed.pipelining`` schedule call ``hooks`` around its steps and instructions."""
    if type(schedule).__name__ in _SPLIT_BACKWARD_SCHEDULES:
        raise TypeError(f"{type(schedule).__name__} splits backward passes; Perseus plans 1F1B, GPipe and interleaved 1F1B")
    stages = local_stages(schedule)
    pp_degree = stages[0].num_stages // len(stages)
    originals: dict[str, Any] = {"step": vars(schedule).get("step")}
    step = schedule.step

    @functools.wraps(step)
    def wrapped_step(*args: Any, **kwargs: Any) -> Any:
        hooks.on_step_begin()
        result = step(*args, **kwargs)
        hooks.on_step_end()
        return result

    schedule.step = wrapped_step
    for stage in stages:
        chunk = stage.stage_index // pp_degree
        stage.forward_one_chunk = _instruction(hooks, "forward", chunk, stage.forward_one_chunk)
        stage.backward_one_chunk = _instruction(hooks, "backward", chunk, stage.backward_one_chunk)
    return _ScheduleAttachment(schedule, originals, stages)


def _instruction(hooks: InstructionHooks, kind: str, chunk: int, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapped(microbatch: int, *args: Any, **kwargs: Any) -> Any:
        name = instruction_name(kind, microbatch, chunk)
        hooks.on_instruction_begin(name)
        result = method(microbatch, *args, **kwargs)
        hooks.on_instruction_end(name)
        return result

    return wrapped


class _ScheduleAttachment(Attachment):
    """Also restores the stages' methods on :meth:`detach`."""

    def __init__(self, schedule: Any, originals: dict[str, Any], stages: list[Any]) -> None:
        super().__init__(schedule, originals)
        self.stages = stages

    def detach(self) -> None:
        super().detach()
        for stage in self.stages:
            for name in ("forward_one_chunk", "backward_one_chunk"):
                vars(stage).pop(name, None)
