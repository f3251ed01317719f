"""Merak/DeepSpeed adapters, against minimal fake engines with the real engines' method names only."""

from __future__ import annotations

import pytest

from merak_integration.adapters import deepspeed, merak
from merak_integration.hooks import HookChain, OrderCheck, Recorder
from perseus.pipeline.schedules import stage_orders


class FakePipelineEngine:
    """Runs a 1F1B stage the way DeepSpeed's instruction interpreter calls the engine's methods."""

    def __init__(self, stage: int, num_stages: int, num_microbatches: int) -> None:
        self.order = stage_orders("1f1b", num_stages, num_microbatches)[stage]
        self.calls: list[tuple[str, int]] = []

    def _exec_forward_pass(self, buffer_id: int) -> None:
        self.calls.append(("forward", buffer_id))

    def _exec_backward_pass(self, buffer_id: int) -> None:
        self.calls.append(("backward", buffer_id))

    def train_batch(self, data_iter: object = None) -> float:
        for ins in self.order:  # buffer ids cycle like DeepSpeed's pipeline buffers
            (self._exec_forward_pass if ins.kind == "forward" else self._exec_backward_pass)(ins.microbatch % 2)
        return 0.5

    def eval_batch(self, data_iter: object = None) -> None:
        self._exec_forward_pass(0)


@pytest.mark.parametrize("adapter", [deepspeed, merak])
def test_adapter_calls_hooks_in_schedule_order(adapter: object) -> None:
    engine = FakePipelineEngine(stage=1, num_stages=4, num_microbatches=6)
    expected = [f"{i.kind}:{i.microbatch}" for i in engine.order]
    rec = Recorder()
    attachment = adapter.attach_perseus(engine, HookChain([OrderCheck(expected, 1), rec]))  # type: ignore[attr-defined]
    assert engine.train_batch() == 0.5
    assert engine.train_batch() == 0.5
    assert rec.names(0) == rec.names(1) == expected
    assert len(rec.steps) == 2
    engine.eval_batch()  # evaluation passes do not reach the training hooks
    assert len(rec.steps) == 2 and rec.names(-1) == expected
    assert len(engine.calls) == 2 * len(expected) + 1  # the engine's own methods still ran
    attachment.detach()
    engine.train_batch()
    assert len(rec.steps) == 2


def test_adapter_rejects_non_engines() -> None:
    with pytest.raises(TypeError, match="no method 'train_batch'"):
        deepspeed.attach_perseus(object(), Recorder())
