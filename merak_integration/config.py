"""The run configuration the launcher hands to every worker process (as a JSON file)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from merak_integration.pipelinespec import PipelineSpec

CONFIG_ENV = "PERSEUS_RUN_CONFIG"
"""The launcher hands the run configuration to its workers as JSON in this environment variable."""


@dataclass
class RunConfig:
    """Everything a worker needs; the launcher validates it before starting any process."""

    model: str
    microbatch_size: int
    num_microbatches: int
    pp: int = 1
    dp: int = 1
    schedule: str = "1f1b"
    """Perseus schedule name (``1f1b``, ``gpipe``, ``interleaved-1f1b``)."""
    num_chunks: int = 1
    partition_method: str = "uniform"
    max_steps: int = 10
    num_warmup_steps: int = 2
    num_prof_steps: int = 3
    profile: bool = False
    server: str | None = None
    job_name: str = ""
    plan: str | None = None
    """A plan JSON file to apply without a server (``perseus optimize`` output)."""
    out_dir: str = "out"
    profile_dir: str = "profiles"
    data: str | None = None
    seed: int = 0
    lr: float = 1e-3
    device: str = "auto"
    """``auto`` (NVML if an NVIDIA GPU is found, else simulated), ``sim`` or ``nvml``."""
    measure_only: bool = False
    """Never change a GPU setting: train at default clocks, measure, and say so in every report."""
    log_to: tuple[str, ...] = ()
    """Where rank 0 also logs each iteration: ``tensorboard`` and/or ``wandb``."""
    sim_profile: str | None = None
    sim_time_scale: float = 1.0
    sim_slowdown: tuple[int, float, int] | None = None
    """(pipeline, factor, from step): that data-parallel pipeline's simulated GPUs run FACTOR times slower."""
    profile_frequencies: list[int] | None = None
    """Frequencies to sweep when profiling (default: every supported one)."""
    profile_window: float | None = None
    """Seconds of instructions per kind and frequency a profile mean needs (default: the GPU's)."""
    grad_dump: str | None = None
    """Run one iteration and save this rank's gradients under this folder (correctness checks)."""
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    """Node 0's address for runs over several nodes (``None``: one standalone node)."""
    master_port: int = 29500
    nproc_per_node: int | None = None

    @property
    def world_size(self) -> int:
        return self.pp * self.dp

    def pipeline_spec(self) -> PipelineSpec:
        return PipelineSpec(
            model=self.model,
            microbatch_size=self.microbatch_size,
            num_microbatches=self.num_microbatches,
            num_stages=self.pp,
            schedule=self.schedule,
            num_chunks=self.num_chunks,
            partition_method=self.partition_method,
            seed=self.seed,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_json(Path(path).read_text())
