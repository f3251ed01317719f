"""Profiling sweep: every (stage, instruction)'s time and energy at every GPU frequency.

For each frequency, highest first, every rank locks its GPU to it, runs ``num_warmup_steps``
iterations that are discarded and ``num_prof_steps`` measured ones, and averages each instruction
kind's time and energy: forward and backward, or with a zero-bubble schedule the input- and the
weight-gradient pass separately. With several model chunks per GPU each chunk is measured on its
own and written as its virtual stage (model order), so the profile has ``pp * chunks`` stages.
The blocking power is the average power drawn outside instructions (waiting on P2P receives,
mostly) over all measured iterations. Rank 0 writes
``profiles/<model>+<partition>+pp<N>+mbs<MB>/profile.csv`` and ``meta.json``, ready for
``perseus optimize``. On simulated GPUs the measured profile reproduces the device's profile.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from merak_integration.devicehooks import GPUInstructionHooks, LocalPerseus
from merak_integration.hooks import HookChain, NullHooks
from perseus.pipeline.instruction import virtual_stage

Row = tuple[int, str, int, float, float]


def profile_dir(trainer: Any) -> Path:
    cfg = trainer.cfg
    name = f"{cfg.model}+{trainer.pipe.partition.tag}+pp{cfg.pp}+mbs{cfg.microbatch_size}"
    if cfg.schedule != "1f1b":
        name += f"+{cfg.schedule}"
    return Path(cfg.profile_dir) / name


def profile(trainer: Any, gpu: Any, controller: Any) -> Path | None:
    """Profile through the server's sweep (``--server``) or locally; rank 0 writes the profile folder."""
    if trainer.cfg.server:
        from merak_integration.serverlink import ServerSession

        session = ServerSession(trainer, gpu, controller, with_profile=False)
        try:
            rows = session.run_profiling(controller)
            job = session.client.get_job(session.job_id)
        finally:
            session.close()
        return _gather_and_write(trainer, rows, [], job.blocking_power)
    return profile_locally(trainer, gpu, controller)


def profile_locally(trainer: Any, gpu: Any, controller: Any) -> Path | None:
    """Run the sweep on every rank without a server."""
    from merak_integration.trainer import gpu_stage

    cfg, ctx = trainer.cfg, trainer.ctx
    freqs = sorted(cfg.profile_frequencies or gpu.supported_frequencies(), reverse=True)
    rows: list[Row] = []
    idle: list[float] = []
    start = time.perf_counter()
    # Unmeasured iterations first: connection set-up and allocator warm-up must not land on the
    # first (highest) frequency.
    for _ in range(max(2, cfg.num_warmup_steps)):
        trainer.iteration(NullHooks())
    for i, f in enumerate(freqs):
        local = LocalPerseus(gpu, controller, fixed_frequency=f)
        hooks = HookChain([local, GPUInstructionHooks(gpu, gpu_stage(gpu, ctx), trainer.pipe.chunk_shares)])
        for _ in range(cfg.num_warmup_steps + cfg.num_prof_steps):
            trainer.iteration(hooks)
        for (chunk, kind), (t, e) in sorted(local.per_chunk_kind_means(skip=cfg.num_warmup_steps).items()):
            rows.append((virtual_stage(cfg.schedule, cfg.pp, ctx.pp_rank, chunk), kind, f, t, e))
        p = local.idle_power(skip=cfg.num_warmup_steps)
        if p is not None:
            idle.append(p)
        if ctx.rank == 0:
            print(f"profiled {f} MHz ({i + 1}/{len(freqs)}, {time.perf_counter() - start:.1f} s)", flush=True)
    controller.reset()
    return _gather_and_write(trainer, rows, idle)


def _gather_and_write(
    trainer: Any, rows: list[Row], idle: list[float], blocking_power: float | None = None
) -> Path | None:
    ctx = trainer.ctx
    gathered: list[Any] = [None] * ctx.world
    dist.all_gather_object(gathered, (ctx.dp_rank, rows, idle))
    if ctx.rank != 0 or not any(g[1] for g in gathered):
        return None
    return write_profile(trainer, [g for g in gathered if g[0] == 0], blocking_power)


def measure_blocking_power(trainer: Any, gpu: Any, controller: Any) -> float:
    """Average power outside instructions (P2P waits) over a few iterations, across all ranks."""
    from merak_integration.trainer import gpu_stage

    cfg, ctx = trainer.cfg, trainer.ctx
    local = LocalPerseus(gpu, controller)
    hooks = HookChain([local, GPUInstructionHooks(gpu, gpu_stage(gpu, ctx), trainer.pipe.chunk_shares)])
    for _ in range(cfg.num_warmup_steps + cfg.num_prof_steps):
        trainer.iteration(hooks)
    power = local.idle_power(skip=cfg.num_warmup_steps)
    sums = torch.tensor([power or 0.0, 1.0 if power is not None else 0.0], dtype=torch.float64)
    dist.all_reduce(sums)
    watts = float(sums[0] / sums[1]) if sums[1] > 0 else 0.0
    if ctx.rank == 0:
        print(f"blocking power (average power while waiting on P2P): {watts:.2f} W", flush=True)
    return watts


def write_profile(
    trainer: Any, per_rank: list[tuple[int, list[Row], list[float]]], blocking_power: float | None = None
) -> Path:
    from perseus.profile import InstructionProfile, Measurement, PipelineProfile, save_profile

    cfg = trainer.cfg
    by_key: dict[tuple[int, str], list[Measurement]] = {}
    for _, rows, _ in per_rank:
        for stage, kind, f, t, e in rows:
            by_key.setdefault((stage, kind), []).append(Measurement(f, t, e))
    idle = [p for _, _, powers in per_rank for p in powers]
    blocking = blocking_power if blocking_power is not None else statistics.fmean(idle) if idle else 0.0
    profile = PipelineProfile(
        {k: InstructionProfile(k[0], k[1], tuple(v)) for k, v in by_key.items()}, blocking_power=blocking
    )
    out = profile_dir(trainer)
    save_profile(
        profile,
        out,
        model=cfg.model,
        num_stages=cfg.pp * cfg.num_chunks,
        microbatch_size=cfg.microbatch_size,
        num_microbatches=cfg.num_microbatches,
        schedule=cfg.schedule,
        partition=list(trainer.pipe.partition.boundaries),
        partition_method=cfg.partition_method,
        source="bash run.sh --profile true (merak_integration.profiler)",
    )
    print(f"profile written to {out / 'profile.csv'} (blocking power {blocking:.2f} W)", flush=True)
    return out
