"""Perseus hooks for Megatron-Core's pipeline schedules.

One call replaces ``get_forward_backward_func()`` in the training script::

    from merak_integration.adapters.megatron import perseus_forward_backward_func
    from merak_integration.adapters.plan_hooks import PlanHooks
    hooks = PlanHooks.from_plan("plan.json", stage=parallel_state.get_pipeline_model_parallel_rank())
    forward_backward_func = perseus_forward_backward_func(hooks)
    losses = forward_backward_func(forward_step_func=..., data_iterator=..., model=..., ...)

Both ``forward_backward_pipelining_without_interleaving`` and the interleaved schedule call
the module-level ``forward_step`` and ``backward_step`` of
``megatron.core.pipeline_parallel.schedules`` once per microbatch. For the duration of one
training call they are wrapped: a forward is named by the ``current_microbatch`` and
``vp_stage`` (model chunk) Megatron passes it; a backward by the output tensor it
differentiates, which that forward returned, so names are exact rather than counted.
``forward_only=True`` calls (evaluation) run unwrapped and never reach the hooks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from merak_integration.hooks import InstructionHooks, instruction_name


def perseus_forward_backward_func(
    hooks: InstructionHooks, forward_backward_func: Callable[..., Any] | None = None
) -> Callable[..., Any]:
    """Megatron's forward-backward function (default: ``get_forward_backward_func()``) calling ``hooks``."""
    from megatron.core.pipeline_parallel import schedules

    inner = (
        forward_backward_func if forward_backward_func is not None else schedules.get_forward_backward_func()
    )

    @functools.wraps(inner)
    def forward_backward(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("forward_only", False):
            return inner(*args, **kwargs)
        hooks.on_step_begin()
        with _instruction_hooks(schedules, hooks):
            result = inner(*args, **kwargs)
        hooks.on_step_end()
        return result

    return forward_backward


@contextmanager
def _instruction_hooks(schedules: Any, hooks: InstructionHooks) -> Iterator[None]:
    forward_step, backward_step = schedules.forward_step, schedules.backward_step
    names: dict[int, str] = {}  # id(output tensor) -> the forward that produced it

    @functools.wraps(forward_step)
    def hooked_forward(*args: Any, **kwargs: Any) -> Any:
        name = instruction_name(
            "forward", int(kwargs["current_microbatch"]), int(kwargs.get("vp_stage") or 0)
        )
        hooks.on_instruction_begin(name)
        result = forward_step(*args, **kwargs)
        hooks.on_instruction_end(name)
        names[id(result[0])] = name.replace("forward", "backward", 1)
        return result

    @functools.wraps(backward_step)
    def hooked_backward(input_tensor: Any, output_tensor: Any, *args: Any, **kwargs: Any) -> Any:
        name = names.pop(id(output_tensor))
        hooks.on_instruction_begin(name)
        result = backward_step(input_tensor, output_tensor, *args, **kwargs)
        hooks.on_instruction_end(name)
        return result

    schedules.forward_step, schedules.backward_step = hooked_forward, hooked_backward
    try:
        yield
    finally:
        schedules.forward_step, schedules.backward_step = forward_step, backward_step
