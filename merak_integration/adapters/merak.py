"""Perseus hooks for Merak's pipeline engine (``Merak.runtime.pipe_engine.PipelineEngine``).

Merak's engine is derived from DeepSpeed's and runs an iteration in ``train_batch``, calling
``_exec_forward_pass(buffer_id)`` and ``_exec_backward_pass(buffer_id)`` per microbatch; the
Merak fork used by the Perseus paper called its client from exactly these methods. Usage::

    from merak_integration.adapters.merak import attach_perseus
    attachment = attach_perseus(trainer.engine, hooks)   # hooks: the Perseus client's hook object
    trainer.train()

Tested only against a minimal fake engine class with the same method names
(``tests/workers/test_workers_adapters.py``), not against Merak itself.
"""

from __future__ import annotations

from typing import Any

from merak_integration.adapters._patch import Attachment, attach
from merak_integration.hooks import InstructionHooks

STEP_METHOD = "train_batch"
FORWARD_METHOD = "_exec_forward_pass"
BACKWARD_METHOD = "_exec_backward_pass"


def attach_perseus(engine: Any, hooks: InstructionHooks) -> Attachment:
    """Make a Merak pipeline engine call ``hooks`` around its steps and instructions."""
    return attach(engine, hooks, step_method=STEP_METHOD, forward_method=FORWARD_METHOD, backward_method=BACKWARD_METHOD)
