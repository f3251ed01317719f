"""``HFGlobalPowerLimitOptimizer``: the power-limit optimizer as a Hugging Face ``TrainerCallback``.

``Trainer(..., callbacks=[HFGlobalPowerLimitOptimizer(monitor)])`` profiles and applies the
power limit while the Trainer runs; nothing else changes in the script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:  # pragma: no cover - transformers is in requirements.lock
    raise ImportError(
        "HFGlobalPowerLimitOptimizer needs the transformers package (pip install transformers)"
    ) from exc

from perseus.compat.zeus.monitor import ZeusMonitor
from perseus.compat.zeus.power_limit import GlobalPowerLimitOptimizer, OptimumSelector


class HFGlobalPowerLimitOptimizer(TrainerCallback):
    """:class:`GlobalPowerLimitOptimizer` driven by the Trainer's step and epoch events (same arguments)."""

    def __init__(
        self,
        monitor: ZeusMonitor,
        optimum_selector: OptimumSelector | None = None,
        wait_steps: int = 1,
        warmup_steps: int = 10,
        profile_steps: int = 40,
        pl_step: int = 25,
        profile_path: str | Path | None = None,
    ) -> None:
        self.optimizer = GlobalPowerLimitOptimizer(
            monitor,
            optimum_selector=optimum_selector,
            wait_steps=wait_steps,
            warmup_steps=warmup_steps,
            profile_steps=profile_steps,
            pl_step=pl_step,
            profile_path=profile_path,
        )

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.optimizer.on_step_begin()

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.optimizer.on_epoch_end()
