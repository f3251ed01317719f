"""Hook objects that drive one GPU: instruction timing on simulated GPUs, and a local Perseus client.

- :class:`GPUInstructionHooks` tells the GPU object where instructions begin and end. A simulated
  GPU makes the instruction take its profiled time at the current clock there; on a real GPU it
  only synchronises so measurements cover the queued kernels.
- :class:`LocalPerseus` does what the Perseus client does, without a server: it asks the frequency
  controller for each instruction's frequency (from a plan's :class:`~perseus.plan.PowerStateSchedule`,
  or one fixed frequency while profiling) as soon as the previous instruction ended, so the 10-20 ms
  a clock change takes overlap the gap between instructions, and it measures every instruction's
  and every iteration's time and energy, labelled with the clock read back from the GPU.

Chain them as ``HookChain([LocalPerseus(...), GPUInstructionHooks(...)])`` so the frequency is
requested before the instruction starts and measured after the GPU finished it.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from merak_integration.hooks import parse_instruction_name
from perseus.plan import PowerStateSchedule


class GPULike(Protocol):
    """The part of :class:`perseus.device.GPU` the hooks use."""

    def energy(self) -> float: ...

    def current_frequency(self) -> int | None: ...

    def on_instruction_begin(self, stage: int, kind: str, share: float = 1.0) -> None: ...

    def on_instruction_end(self) -> None: ...

    def synchronize(self) -> None: ...


class ControllerLike(Protocol):
    def set_frequency(self, mhz: int) -> None: ...


class GPUInstructionHooks:
    """Marks instruction boundaries on the GPU object (simulated GPUs model the time there)."""

    def __init__(self, gpu: GPULike, stage: int, chunk_shares: Sequence[float] = (1.0,)) -> None:
        self.gpu = gpu
        self.stage = stage
        self.chunk_shares = tuple(chunk_shares)
        """Each model chunk's share of the stage's layers (a simulated GPU charges that share)."""

    def on_step_begin(self) -> None:
        pass

    def on_step_end(self) -> None:
        pass

    def on_instruction_begin(self, name: str) -> None:
        kind, _, chunk = parse_instruction_name(name)
        self.gpu.on_instruction_begin(self.stage, kind, self.chunk_shares[chunk])

    def on_instruction_end(self, name: str) -> None:
        self.gpu.synchronize()
        self.gpu.on_instruction_end()


@dataclass
class InstructionMeasurement:
    name: str
    frequency: int | None
    """Planned frequency (MHz); ``None`` when the plan sets none."""
    applied: int | None
    """Clock read back from the GPU when the instruction finished."""
    time: float
    energy: float
    began_at: int | None = None
    """Clock read back when the instruction began."""

    @property
    def at_planned_clock(self) -> bool:
        """Whether the GPU read back the planned clock at both ends of the instruction."""
        return self.frequency is not None and self.began_at == self.applied == self.frequency


@dataclass
class IterationMeasurement:
    time: float
    energy: float
    instructions: list[InstructionMeasurement] = field(default_factory=list)

    @property
    def busy_time(self) -> float:
        return sum(i.time for i in self.instructions)

    @property
    def busy_energy(self) -> float:
        return sum(i.energy for i in self.instructions)

    @property
    def planned(self) -> list[InstructionMeasurement]:
        return [i for i in self.instructions if i.frequency is not None]

    def clock_counts(self) -> tuple[int, int, float]:
        """(planned instructions, those that read back their planned clock at both ends, time-weighted
        mean clock read back over all instructions in MHz, 0 when none was read), in one pass.

        Each instruction counts the mean of its two readings (begin and end): the clock in effect,
        not the one requested. Runs on the training thread once per iteration, hence one loop.
        """
        planned = held = 0
        total = weighted = 0.0
        for i in self.instructions:
            f, a, b = i.frequency, i.applied, i.began_at
            if f is not None:
                planned += 1
                held += a == f and b == f
            if a and b:
                total += i.time
                weighted += i.time * (a + b) * 0.5
            elif a or b:
                total += i.time
                weighted += i.time * (a or b or 0)
        return planned, held, weighted / total if total > 0 else 0.0


class LocalPerseus:
    """Applies a per-instruction frequency schedule and measures time and energy, without a server.

    ``schedule`` gives the frequency of every instruction in execution order (matched by name);
    ``fixed_frequency`` locks one clock for the whole iteration (profiling sweeps). With neither,
    clocks are left alone (the all-max-frequency baseline on an unlocked GPU).
    """

    def __init__(
        self,
        gpu: GPULike,
        controller: ControllerLike | None,
        *,
        schedule: PowerStateSchedule | None = None,
        fixed_frequency: int | None = None,
    ) -> None:
        self.gpu = gpu
        self.controller = controller
        self.fixed_frequency = fixed_frequency
        self.frequencies: dict[str, int] = {}
        self.next_name: dict[str, str] = {}
        self.first_name: str | None = None
        self.set_schedule(schedule)
        self.iterations: list[IterationMeasurement] = []
        self._step: tuple[float, float] | None = None
        self._open: dict[str, tuple[float, float, int | None, int | None]] = {}
        self._current: list[InstructionMeasurement] = []

    def set_schedule(self, schedule: PowerStateSchedule | None) -> None:
        """Apply ``schedule`` from the next instruction on (``None``: leave clocks alone)."""
        names = [p.name for p in schedule.instructions] if schedule is not None else []
        self.frequencies = {p.name: p.frequency for p in schedule.instructions} if schedule is not None else {}
        self.next_name = dict(itertools.pairwise(names))
        self.first_name = names[0] if names else None
        self.plan_name = schedule.plan_name if schedule is not None else ""

    def _now(self) -> tuple[float, float]:
        self.gpu.synchronize()
        return time.perf_counter(), self.gpu.energy()

    def _request(self, name: str | None) -> None:
        if name is not None and name in self.frequencies and self.controller is not None:
            self.controller.set_frequency(self.frequencies[name])

    def on_step_begin(self) -> None:
        if self.fixed_frequency is not None and self.controller is not None:
            self.controller.set_frequency(self.fixed_frequency)
        self._request(self.first_name)
        self._current = []
        self._step = self._now()

    def on_step_end(self) -> None:
        assert self._step is not None, "on_step_end without on_step_begin"
        t, e = self._now()
        self.iterations.append(IterationMeasurement(t - self._step[0], e - self._step[1], self._current))
        self._step = None

    def on_instruction_begin(self, name: str) -> None:
        # Normally requested when the previous instruction ended; then this one is coalesced.
        self._request(name)
        freq = self.frequencies.get(name, self.fixed_frequency)
        t, e = self._now()
        self._open[name] = (t, e, freq, self.gpu.current_frequency())

    def on_instruction_end(self, name: str) -> None:
        t0, e0, freq, began_at = self._open.pop(name)
        applied = self.gpu.current_frequency()
        t, e = self._now()
        self._current.append(InstructionMeasurement(name, freq, applied, t - t0, e - e0, began_at))
        # The next instruction's clock, now: a change takes 10-20 ms, the gap between two
        # instructions is often shorter, so waiting until it begins would run part of it at this clock.
        self._request(self.next_name.get(name))

    # --- summaries ------------------------------------------------------------------------
    def per_kind_means(self, skip: int = 0, *, held_only: bool = False) -> dict[str, tuple[float, float]]:
        """Mean ``(time, energy)`` of each instruction kind over the whole stage, after ``skip`` iterations.

        With several model chunks per GPU a microbatch's pass over the stage is one instruction per
        chunk, so the chunks' means add up (one chunk: the plain mean). ``held_only``: only
        instructions that read back their planned clock at both ends count.
        """
        out: dict[str, tuple[float, float]] = {}
        for (_, kind), (t, e) in self.per_chunk_kind_means(skip, held_only=held_only).items():
            t0, e0 = out.get(kind, (0.0, 0.0))
            out[kind] = (t0 + t, e0 + e)
        return out

    def per_chunk_kind_means(
        self, skip: int = 0, *, held_only: bool = False
    ) -> dict[tuple[int, str], tuple[float, float]]:
        """Mean ``(time, energy)`` of each (model chunk, instruction kind) over the iterations after ``skip``.

        The energy of many instructions is summed before dividing, so the counter's steps average
        out over the window. ``held_only``: see :meth:`per_kind_means`.
        """
        sums: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for it in self.iterations[skip:]:
            for m in it.instructions:
                if held_only and not m.at_planned_clock:
                    continue
                kind, _, chunk = parse_instruction_name(m.name)
                s = sums[(chunk, kind)]
                s[0] += m.time
                s[1] += m.energy
                s[2] += 1
        return {k: (v[0] / v[2], v[1] / v[2]) for k, v in sums.items() if v[2]}

    def time_at_clock(self, skip: int = 0) -> dict[str, float]:
        """Seconds of instructions per kind that ran at their requested clock, after ``skip`` iterations."""
        totals: dict[str, float] = defaultdict(float)
        for it in self.iterations[skip:]:
            for m in it.instructions:
                if m.at_planned_clock:
                    totals[parse_instruction_name(m.name)[0]] += m.time
        return dict(totals)

    def idle_power(self, skip: int = 0) -> float | None:
        """Average power outside instructions (P2P waits, mostly): the blocking power."""
        its = self.iterations[skip:]
        idle_t = sum(it.time - it.busy_time for it in its)
        idle_e = sum(it.energy - it.busy_energy for it in its)
        return idle_e / idle_t if idle_t > 0 else None

    def fraction_at_planned_clock(self, skip: int = 0) -> float | None:
        """Share of planned instructions that ran at their planned clock (read back); ``None``: no plan."""
        planned = [m for it in self.iterations[skip:] for m in it.planned]
        return sum(m.at_planned_clock for m in planned) / len(planned) if planned else None

    def summary(self) -> dict[str, Any]:
        return {
            "fraction_at_planned_clock": self.fraction_at_planned_clock(),
            "iterations": [
                {
                    "time": it.time,
                    "energy": it.energy,
                    "instructions": [[m.name, m.frequency, m.applied, m.time, m.energy] for m in it.instructions],
                }
                for it in self.iterations
            ]
        }
