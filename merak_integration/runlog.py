"""Per-iteration time, energy and plan to TensorBoard or Weights & Biases (``--log_to``).

Rank 0 logs the iteration totals every rank agreed on (longest time, summed energy, mean loss,
share of instructions at their planned clock) and the plan it runs, beside the training curves
the user already watches. W&B honours its own settings (``WANDB_MODE=offline``, ``WANDB_PROJECT``);
runs go to project ``perseus`` unless told otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from merak_integration.config import RunConfig
from perseus.errors import InputError

SINKS = ("tensorboard", "wandb")
#: Row keys logged as numbers, and their names on the dashboards.
SCALARS = {"time": "perseus/iteration_time_s", "energy": "perseus/iteration_energy_j", "loss": "perseus/loss",
           "at_planned_clock": "perseus/at_planned_clock"}


class IterationLog(Protocol):
    """Somewhere iteration rows go."""

    def log(self, step: int, row: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def parse_sinks(text: str) -> tuple[str, ...]:
    """``tensorboard``, ``wandb`` or both comma-separated; InputError naming ``--log_to`` otherwise."""
    sinks = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in sinks if s not in SINKS]
    if bad or not sinks:
        raise InputError("--log_to", f"expected tensorboard, wandb or both comma-separated, got {text!r}")
    return sinks


def _numbers(row: Mapping[str, Any]) -> dict[str, float]:
    return {SCALARS[k]: float(v) for k, v in row.items() if k in SCALARS and v is not None}


class TensorBoardLog:
    """Scalars per iteration and the plan as text whenever it changes, under ``OUT_DIR/tensorboard``."""

    def __init__(self, out_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        self._plan: str | None = None

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        for name, value in _numbers(row).items():
            self._writer.add_scalar(name, value, step)
        plan = str(row.get("plan", ""))
        if plan != self._plan:
            self._writer.add_text("perseus/plan", plan or "(default clocks)", step)
            self._plan = plan

    def close(self) -> None:
        self._writer.close()


class WandbLog:
    """One W&B run with the run configuration; one ``wandb.log`` per iteration."""

    def __init__(self, out_dir: Path, cfg: RunConfig) -> None:
        import wandb

        out_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "perseus"), dir=str(out_dir),
                               name=cfg.job_name or None, config=asdict(cfg))

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        self._run.log({**_numbers(row), "perseus/plan": str(row.get("plan", ""))}, step=step, commit=True)

    def close(self) -> None:
        self._run.finish()


def open_logs(sinks: Sequence[str], cfg: RunConfig) -> list[IterationLog]:
    """The logs ``sinks`` name, writing under ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    return [TensorBoardLog(out) if sink == "tensorboard" else WandbLog(out, cfg) for sink in sinks]
