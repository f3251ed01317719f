"""Perseus hooks for DeepSpeed's ``deepspeed.runtime.pipe.engine.PipelineEngine``.

Usage (after ``deepspeed.initialize`` returned a pipeline engine)::

    from merak_integration.adapters.deepspeed import attach_perseus
    attachment = attach_perseus(engine, hooks)   # hooks: the Perseus client's hook object
    engine.train_batch(data_iter)                # each forward/backward now calls the hooks
    attachment.detach()                          # optional: restore the original methods

``PipelineEngine.train_batch`` runs one iteration; its instruction interpreter calls
``_exec_forward_pass(buffer_id)`` and ``_exec_backward_pass(buffer_id)`` once per microbatch.
Those three methods are wrapped on the engine *instance* (the class is untouched).

Tested only against a minimal fake engine class with the same method names
(``tests/workers/test_workers_adapters.py``), not against DeepSpeed itself.
"""

from __future__ import annotations

from typing import Any

from merak_integration.adapters._patch import Attachment, attach
from merak_integration.hooks import InstructionHooks

STEP_METHOD = "train_batch"
FORWARD_METHOD = "_exec_forward_pass"
BACKWARD_METHOD = "_exec_backward_pass"


def attach_perseus(engine: Any, hooks: InstructionHooks) -> Attachment:
    """Make a DeepSpeed pipeline engine call ``hooks`` around its steps and instructions."""
    return attach(engine, hooks, step_method=STEP_METHOD, forward_method=FORWARD_METHOD, backward_method=BACKWARD_METHOD)
