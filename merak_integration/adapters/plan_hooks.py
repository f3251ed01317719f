"""``PlanHooks``: apply one stage's share of a Perseus plan and measure every iteration.

The object every framework adapter plugs in (``attach_perseus(..., PlanHooks.from_plan(...))``).
It chains three hook objects:

- :class:`~merak_integration.hooks.OrderCheck`: the framework must run this stage's
  instructions in the plan's order; the first mismatch raises (a frequency applied to the
  wrong instruction would be a silent wrong answer);
- :class:`~merak_integration.devicehooks.LocalPerseus`: asks the non-blocking frequency
  controller for each instruction's planned clock and measures time and energy;
- :class:`~merak_integration.devicehooks.GPUInstructionHooks`: marks instruction boundaries
  on the GPU (a simulated GPU takes the profiled time there; a real one synchronises).

With ``report_path`` every iteration is appended as one JSON line (time, energy, plan name),
written at once so a crash keeps what was measured.
"""

from __future__ import annotations

import json
from pathlib import Path

from merak_integration.devicehooks import GPUInstructionHooks, IterationMeasurement, LocalPerseus
from merak_integration.hooks import HookChain, OrderCheck
from perseus.device import GPU, FrequencyController, get_gpus
from perseus.plan import FrequencyPlan


class PlanHooks:
    """Hooks that run ``stage``'s instructions at the frequencies of ``plan`` and measure them."""

    def __init__(self, plan: FrequencyPlan, stage: int, gpu: GPU, *, report_path: str | Path | None = None) -> None:
        self.plan = plan
        self.stage = stage
        self.gpu = gpu
        self.schedule = plan.stage_schedule(stage)
        self.controller = FrequencyController(gpu)
        self.local = LocalPerseus(gpu, self.controller, schedule=self.schedule)
        self._chain = HookChain(
            [OrderCheck([p.name for p in self.schedule.instructions], stage), self.local,
             # The framework's partition is its own: a simulated GPU charges each chunk an equal share.
             GPUInstructionHooks(gpu, stage, (1 / plan.num_chunks,) * plan.num_chunks)]
        )
        self.report_path = Path(report_path) if report_path is not None else None

    @classmethod
    def from_plan(
        cls, plan: str | Path | FrequencyPlan, stage: int, *, gpu_index: int = 0, report_path: str | Path | None = None
    ) -> PlanHooks:
        """Load ``plan`` (a plan file or object) for pipeline stage ``stage`` on visible GPU ``gpu_index``.

        Without an NVIDIA GPU the GPU is simulated (modelled on ``stage`` of the shipped profile).
        """
        loaded = plan if isinstance(plan, FrequencyPlan) else FrequencyPlan.load(plan)
        (gpu,) = get_gpus(stage=stage, indices=[gpu_index])
        return cls(loaded, stage, gpu, report_path=report_path)

    @property
    def iterations(self) -> list[IterationMeasurement]:
        """Every measured iteration so far (time, energy, and each instruction's)."""
        return self.local.iterations

    def on_step_begin(self) -> None:
        self._chain.on_step_begin()

    def on_step_end(self) -> None:
        self._chain.on_step_end()
        if self.report_path is not None:
            last = self.local.iterations[-1]
            record = {"stage": self.stage, "plan": self.plan.name, "time": last.time, "energy": last.energy}
            with self.report_path.open("a") as report:  # once per iteration: cheap, and a crash keeps it
                report.write(json.dumps(record) + "\n")

    def on_instruction_begin(self, name: str) -> None:
        self._chain.on_instruction_begin(name)

    def on_instruction_end(self, name: str) -> None:
        self._chain.on_instruction_end(name)

    def close(self) -> None:
        """Stop the controller and give the GPU its default clocks back."""
        self.controller.close()
        self.gpu.unlock_frequency()

    def __enter__(self) -> PlanHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
