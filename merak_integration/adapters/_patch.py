"""Shared engine patching: wrap an engine's step, forward-pass and backward-pass methods with hooks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from merak_integration.hooks import InstructionHooks, instruction_name


@dataclass
class Attachment:
    """What :func:`attach` changed on an engine; :meth:`detach` puts the original methods back."""

    engine: Any
    originals: dict[str, Any]

    def detach(self) -> None:
        for name, original in self.originals.items():
            if original is None:
                vars(self.engine).pop(name, None)
            else:
                setattr(self.engine, name, original)


def attach(
    engine: Any,
    hooks: InstructionHooks,
    *,
    step_method: str,
    forward_method: str,
    backward_method: str,
) -> Attachment:
    """Patch ``engine`` (an instance) so its training steps call ``hooks``.

    - ``step_method`` (e.g. ``train_batch``) is wrapped in ``on_step_begin`` / ``on_step_end``.
    - ``forward_method`` / ``backward_method`` (one microbatch each) are wrapped in
      ``on_instruction_begin/end("forward:<k>")`` / ``("backward:<k>")``, where ``k`` counts that
      kind's calls since the step began: DeepSpeed's and Merak's 1F1B and GPipe schedules run each
      kind in microbatch order, so the k-th forward is microbatch k.
    - Forward passes outside a training step (``eval_batch``) do not call the hooks.
    """
    for name in (step_method, forward_method, backward_method):
        if not callable(getattr(engine, name, None)):
            raise TypeError(f"{type(engine).__name__} has no method {name!r}; is this a pipeline engine?")
    originals = {name: vars(engine).get(name) for name in (step_method, forward_method, backward_method)}
    state = {"in_step": False, "forward": 0, "backward": 0}

    step = getattr(engine, step_method)

    @functools.wraps(step)
    def wrapped_step(*args: Any, **kwargs: Any) -> Any:
        state.update(in_step=True, forward=0, backward=0)
        hooks.on_step_begin()
        try:
            result = step(*args, **kwargs)
        finally:
            state["in_step"] = False
        hooks.on_step_end()
        return result

    def instruction(kind: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not state["in_step"]:
                return method(*args, **kwargs)
            name = instruction_name(kind, int(state[kind]))
            state[kind] = int(state[kind]) + 1
            hooks.on_instruction_begin(name)
            result = method(*args, **kwargs)
            hooks.on_instruction_end(name)
            return result

        return wrapped

    setattr(engine, step_method, wrapped_step)
    setattr(engine, forward_method, instruction("forward", getattr(engine, forward_method)))
    setattr(engine, backward_method, instruction("backward", getattr(engine, backward_method)))
    return Attachment(engine, originals)
