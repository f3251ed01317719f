"""Perseus hooks for DeepSpeed's ``deepspeed.runtime.pipe.engine.PipelineEngine``.

Usage (after ``deepspeed.initialize`` returned a pipeline engine)::

    from merak_integration.adapters.deepspeed import attach_perseus
    attachment = attach_perseus(engine, hooks)   # hooks: the Perseus client's hook object
    engine.train_batch(data_iter)                # each forward/backward now calls the hooks
    attachment.detach()                          # optional: restore the original methods

``PipelineEngine.train_batch`` runs one iteration; its instruction interpreter calls
``_exec_forward_pass(buffer_id)`` and ``_exec_backward_pass(buffer_id)`` once per microbatch.
Those three methods are wrapped on the engine *instance* (the class is untouched). The
interpreter does not look the methods up on the instance: it binds the functions of the
class-level ``_INSTRUCTION_MAP`` (instruction class -> function). So the instance also
gets its own copy of that map in which forward and backward passes go through the
instance's (wrapped) methods.

Tested against DeepSpeed 0.19.8's real ``PipelineEngine`` on CPU with gloo when DeepSpeed
is installed (``tests/adapters/test_adapters_deepspeed.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from merak_integration.adapters._patch import Attachment, attach
from merak_integration.hooks import InstructionHooks

STEP_METHOD = "train_batch"
FORWARD_METHOD = "_exec_forward_pass"
BACKWARD_METHOD = "_exec_backward_pass"


def attach_perseus(engine: Any, hooks: InstructionHooks) -> Attachment:
    """Make a DeepSpeed pipeline engine call ``hooks`` around its steps and instructions."""
    attachment = attach(
        engine, hooks, step_method=STEP_METHOD, forward_method=FORWARD_METHOD, backward_method=BACKWARD_METHOD
    )
    class_map = getattr(type(engine), "_INSTRUCTION_MAP", None)
    if isinstance(class_map, dict):
        attachment.originals["_INSTRUCTION_MAP"] = vars(engine).get("_INSTRUCTION_MAP")
        engine._INSTRUCTION_MAP = {kind: _through_instance(function) for kind, function in class_map.items()}
    return attachment


def _through_instance(function: Callable[..., Any]) -> Callable[..., Any]:
    """The map entry for ``function``: forward and backward passes call the instance's (wrapped) method."""
    name = getattr(function, "__name__", "")
    if name not in (FORWARD_METHOD, BACKWARD_METHOD):
        return function

    def dispatch(engine: Any, **kwargs: Any) -> Any:
        return getattr(engine, name)(**kwargs)

    return dispatch
