"""The framework-neutral hook API a pipeline engine calls, and small hook objects built on it.

Any object with these four methods can be plugged into the workers or the Merak/DeepSpeed
adapters; the Perseus client implements them to set each instruction's GPU frequency and
measure its time and energy::

    on_step_begin()                    # before the first instruction of a training iteration
    on_instruction_begin(name)         # before one forward/backward of one microbatch
    on_instruction_end(name)           # after it (the implementation synchronises the GPU if it measures)
    on_step_end()                      # after the optimizer step

``name`` is the instruction's stable identifier as in :class:`perseus.plan.PlannedInstruction`:
``forward:3`` (microbatch 3) or ``backward:5@1`` (microbatch 5 of model chunk 1, interleaved only).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@runtime_checkable
class InstructionHooks(Protocol):
    """What an engine calls around every training iteration and every pipeline instruction."""

    def on_step_begin(self) -> None: ...

    def on_step_end(self) -> None: ...

    def on_instruction_begin(self, name: str) -> None: ...

    def on_instruction_end(self, name: str) -> None: ...


def instruction_name(kind: str, microbatch: int, chunk: int = 0) -> str:
    """``forward:3`` / ``backward:5@1``: the same spelling as ``PlannedInstruction.name``."""
    return f"{kind}:{microbatch}{f'@{chunk}' if chunk else ''}"


def parse_instruction_name(name: str) -> tuple[str, int, int]:
    """``(kind, microbatch, chunk)`` of an instruction name; inverse of :func:`instruction_name`."""
    kind, _, rest = name.partition(":")
    mb, _, chunk = rest.partition("@")
    return kind, int(mb or 0), int(chunk or 0)


class NullHooks:
    """Does nothing (plain training without Perseus)."""

    def on_step_begin(self) -> None:
        pass

    def on_step_end(self) -> None:
        pass

    def on_instruction_begin(self, name: str) -> None:
        pass

    def on_instruction_end(self, name: str) -> None:
        pass


class HookChain:
    """Calls several hook objects: ``begin`` in order, ``end`` in reverse (like nested contexts)."""

    def __init__(self, hooks: Sequence[InstructionHooks]) -> None:
        self.hooks = list(hooks)

    def on_step_begin(self) -> None:
        for h in self.hooks:
            h.on_step_begin()

    def on_step_end(self) -> None:
        for h in reversed(self.hooks):
            h.on_step_end()

    def on_instruction_begin(self, name: str) -> None:
        for h in self.hooks:
            h.on_instruction_begin(name)

    def on_instruction_end(self, name: str) -> None:
        for h in reversed(self.hooks):
            h.on_instruction_end(name)


class InstructionOrderError(RuntimeError):
    """The engine executed instructions in a different order than the plan expects."""


class OrderCheck:
    """Fails fast when the engine's instruction order differs from the expected one.

    Frequencies are matched to instructions by position, so a silent order mismatch would apply
    every frequency to the wrong instruction; this raises on the first one instead.
    """

    def __init__(self, expected: Sequence[str], stage: int = 0) -> None:
        self.expected = list(expected)
        self.stage = stage
        self._next = 0

    def on_step_begin(self) -> None:
        self._next = 0

    def on_step_end(self) -> None:
        if self._next != len(self.expected):
            raise InstructionOrderError(
                f"stage {self.stage}: iteration ended after {self._next} of {len(self.expected)} instructions"
            )

    def on_instruction_begin(self, name: str) -> None:
        want = self.expected[self._next] if self._next < len(self.expected) else "<end of iteration>"
        if name != want:
            raise InstructionOrderError(
                f"stage {self.stage}: instruction #{self._next} is {name!r}, the schedule expects {want!r}"
            )
        self._next += 1

    def on_instruction_end(self, name: str) -> None:
        pass


@dataclass
class StepRecord:
    """Wall-clock timeline of one iteration: ``(name, begin, end)`` per instruction."""

    begin: float
    end: float = 0.0
    instructions: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def time(self) -> float:
        return self.end - self.begin


class Recorder:
    """Records every iteration's instruction timeline (names and wall-clock times)."""

    def __init__(self) -> None:
        self.steps: list[StepRecord] = []
        self._open: dict[str, float] = {}

    def on_step_begin(self) -> None:
        self.steps.append(StepRecord(time.perf_counter()))

    def on_step_end(self) -> None:
        self.steps[-1].end = time.perf_counter()

    def on_instruction_begin(self, name: str) -> None:
        self._open[name] = time.perf_counter()

    def on_instruction_end(self, name: str) -> None:
        self.steps[-1].instructions.append((name, self._open.pop(name), time.perf_counter()))

    def names(self, step: int = -1) -> list[str]:
        return [n for n, _, _ in self.steps[step].instructions]
