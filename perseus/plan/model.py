"""Frequency plans: one GPU frequency for every instruction of every stage, in execution order.

A :class:`FrequencyPlan` is one point of the time-energy frontier. What a single rank (one
pipeline stage) needs of it is its :class:`PowerStateSchedule`: the ordered list of
(instruction, microbatch, frequency) it applies during an iteration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perseus.errors import InputError
from perseus.pipeline.instruction import instruction_name
from perseus.profile.model import ALL_KINDS

#: Pipeline schedules Perseus plans for; ``zb``, ``zbv`` and ``dualpipev`` split backwards.
SCHEDULES: tuple[str, ...] = ("1f1b", "gpipe", "interleaved-1f1b", "zb", "zbv", "dualpipev")


@dataclass(frozen=True)
class PlannedInstruction:
    """One instruction of a stage and the frequency (MHz) to run it at."""

    instruction: str
    microbatch: int
    frequency: int
    chunk: int = 0
    """Model chunk (virtual stage) on this GPU; 0 unless the schedule puts several chunks on a GPU."""

    @property
    def name(self) -> str:
        """Stable identifier, e.g. ``forward:3`` or ``backward:5@1`` (chunk 1)."""
        return instruction_name(self.instruction, self.microbatch, self.chunk)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "instruction": self.instruction,
            "microbatch": self.microbatch,
            "frequency": self.frequency,
        }
        if self.chunk:
            out["chunk"] = self.chunk
        return out


@dataclass(frozen=True)
class PowerStateSchedule:
    """The frequencies one rank applies, in the order it executes its instructions."""

    stage: int
    instructions: tuple[PlannedInstruction, ...]
    plan_name: str = ""

    def frequencies(self) -> list[int]:
        return [p.frequency for p in self.instructions]


@dataclass(frozen=True)
class FrequencyPlan:
    """A whole-pipeline frequency assignment with its exactly evaluated time and energy."""

    schedule: str
    num_stages: int
    num_microbatches: int
    iteration_time: float
    """Seconds per iteration (longest path through the pipeline DAG)."""
    energy: float
    """Joules per iteration, including blocking power while stages wait."""
    stages: tuple[tuple[PlannedInstruction, ...], ...]
    num_chunks: int = 1
    name: str = ""

    def stage_schedule(self, stage: int) -> PowerStateSchedule:
        if not 0 <= stage < self.num_stages:
            raise IndexError(f"stage {stage} out of range for a {self.num_stages}-stage plan")
        return PowerStateSchedule(stage, self.stages[stage], self.name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schedule": self.schedule,
            "num_stages": self.num_stages,
            "num_microbatches": self.num_microbatches,
            "iteration_time": self.iteration_time,
            "energy": self.energy,
            "stages": [[p.to_dict() for p in stage] for stage in self.stages],
        }
        if self.num_chunks != 1:
            out["num_chunks"] = self.num_chunks
        if self.name:
            out["name"] = self.name
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<plan>") -> FrequencyPlan:
        """Build a plan from its JSON form; a bad field raises InputError naming it."""
        if not isinstance(data, Mapping):
            raise InputError(source, "plan must be a JSON object")
        schedule = _field(data, "schedule", str, source)
        if schedule not in SCHEDULES:
            raise InputError(source, f"field 'schedule' must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        num_stages = _field(data, "num_stages", int, source)
        num_microbatches = _field(data, "num_microbatches", int, source)
        num_chunks = int(data.get("num_chunks", 1))
        if num_stages < 1 or num_microbatches < 1 or num_chunks < 1:
            raise InputError(source, "fields 'num_stages', 'num_microbatches', 'num_chunks' must be >= 1")
        iteration_time = float(_field(data, "iteration_time", (int, float), source))
        energy = float(_field(data, "energy", (int, float), source))
        if not (math.isfinite(iteration_time) and math.isfinite(energy)):
            raise InputError(source, "fields 'iteration_time' and 'energy' must be finite numbers")
        raw_stages = _field(data, "stages", list, source)
        if len(raw_stages) != num_stages:
            raise InputError(source, f"field 'stages' has {len(raw_stages)} entries, expected num_stages={num_stages}")
        stages: list[tuple[PlannedInstruction, ...]] = []
        for s, raw in enumerate(raw_stages):
            if not isinstance(raw, Sequence):
                raise InputError(source, f"field 'stages[{s}]' must be a list")
            stages.append(tuple(_planned(item, f"stages[{s}][{i}]", source) for i, item in enumerate(raw)))
        return cls(
            schedule=schedule,
            num_stages=num_stages,
            num_microbatches=num_microbatches,
            iteration_time=iteration_time,
            energy=energy,
            stages=tuple(stages),
            num_chunks=num_chunks,
            name=str(data.get("name", "")),
        )

    @classmethod
    def from_json(cls, text: str, *, source: str = "<plan>") -> FrequencyPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(source, f"not valid JSON: {exc.msg}", line=exc.lineno) from None
        return cls.from_dict(data, source=source)

    @classmethod
    def load(cls, path: str | Path) -> FrequencyPlan:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(str(path), f"cannot read plan: {exc.strerror}") from None
        plan = cls.from_json(text, source=str(path))
        return plan if plan.name else _with_name(plan, path.stem)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def _with_name(plan: FrequencyPlan, name: str) -> FrequencyPlan:
    from dataclasses import replace

    return replace(plan, name=name)


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], source: str) -> Any:
    if name not in data:
        raise InputError(source, f"missing field {name!r}")
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(source, f"field {name!r} has the wrong type ({type(value).__name__})")
    return value


def _planned(item: Any, where: str, source: str) -> PlannedInstruction:
    if not isinstance(item, Mapping):
        raise InputError(source, f"field '{where}' must be an object")
    instruction = _field(item, "instruction", str, f"{source}: {where}")
    if instruction not in ALL_KINDS:
        raise InputError(source, f"field '{where}.instruction' must be one of {', '.join(ALL_KINDS)}, got {instruction!r}")
    microbatch = _field(item, "microbatch", int, f"{source}: {where}")
    frequency = _field(item, "frequency", int, f"{source}: {where}")
    chunk = item.get("chunk", 0)
    if microbatch < 0 or frequency <= 0 or not isinstance(chunk, int) or chunk < 0:
        raise InputError(source, f"field '{where}' needs microbatch >= 0, frequency > 0 and chunk >= 0")
    return PlannedInstruction(instruction, microbatch, frequency, chunk)
