"""Profiling sweep: every (stage, instruction)'s time and energy at every GPU frequency.

Real energy counters advance in steps and sample power only part of the time (HARDWARE.md), so a
single instruction's counter delta is no measurement. For each frequency, highest first, every
rank:

1. requests the clock and runs warm-up iterations (at least one, ``num_warmup_steps`` normally)
   until the clock read back from the GPU at both ends of every instruction is the requested one;
   a clock the GPU never reaches (a power cap, no permission) is reported and not recorded;
2. measures ``num_prof_steps`` iterations or more, until every instruction kind has accumulated
   the GPU's trustworthy window (:attr:`perseus.device.GPU.min_measurement_window`, or
   ``--profile_window``) of instructions that read back that clock, and averages all of them;
3. rejects a kind whose counter did not move over the whole window instead of recording 0 J.

Kinds are forward and backward, or with a zero-bubble schedule the input- and the weight-gradient
pass separately. With several model chunks per GPU each chunk is measured on its own and written as
its virtual stage (model order), so the profile has ``pp * chunks`` stages.

Ranks decide together (one all-reduce per iteration) when to move on, since a pipeline cannot run
one stage alone. The blocking power is the average power drawn outside instructions (waiting on
P2P receives, mostly) over all measured iterations. Rank 0 writes
``profiles/<model>+<partition>+pp<N>+mbs<MB>/profile.csv`` and ``meta.json``, ready for
``perseus optimize``. On simulated GPUs the measured profile reproduces the device's profile.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from merak_integration.devicehooks import GPUInstructionHooks, LocalPerseus
from merak_integration.hooks import HookChain, NullHooks, parse_instruction_name
from perseus.pipeline.instruction import virtual_stage

Row = tuple[int, str, int, float, float]
MAX_EXTRA_WARMUP = 10
"""Warm-up iterations beyond ``num_warmup_steps`` a clock gets to show up in the read-back."""
MAX_MEASURE_FACTOR = 100
"""Measured iterations stop at this multiple of ``num_prof_steps`` even if the window is not full."""
MAX_WINDOWS = 3
"""Windows a frequency of the server's sweep gets measured in before a rank gives up on it (a clock
the GPU does not hold under load: a power cap, a thermal limit; or an energy counter that does not
advance, each window twice as long as the one before: see :data:`FLAT_GROWTH`)."""
FLAT_GROWTH = 2.0
"""A window whose energy counter did not move is measured again this many times longer: NVML's counter
advances in steps (HARDWARE.md), so a window shorter than its update period can read 0 J."""


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
        if job.phase == "failed" and trainer.ctx.rank == 0:
            print(f"perseus: warning: job {job.job_id} failed: {job.error}; the profile written holds only the "
                  "clocks that were measured", flush=True)
        return _gather_and_write(trainer, rows, [], job.blocking_power)
    return profile_locally(trainer, gpu, controller)


def profile_locally(trainer: Any, gpu: Any, controller: Any) -> Path | None:
    """Run the sweep on every rank without a server."""
    from merak_integration.trainer import gpu_stage

    cfg, ctx = trainer.cfg, trainer.ctx
    freqs = sorted(cfg.profile_frequencies or gpu.supported_frequencies(), reverse=True)
    window = cfg.profile_window if cfg.profile_window is not None else gpu.min_measurement_window
    rows: list[Row] = []
    idle: list[float] = []
    start = time.perf_counter()
    # Unmeasured iterations first: connection set-up and allocator warm-up must not land on the
    # first (highest) frequency.
    for _ in range(2):
        trainer.iteration(NullHooks())
    for i, f in enumerate(freqs):
        target = gpu.nearest_frequency(f)
        local = LocalPerseus(gpu, controller, fixed_frequency=target)
        hooks = HookChain([local, GPUInstructionHooks(gpu, gpu_stage(gpu, ctx), trainer.pipe.chunk_shares)])
        if not _warm_up(trainer, hooks, local, target, cfg.num_warmup_steps):
            seen = sorted({m.applied for m in local.iterations[-1].instructions if m.applied is not None})
            print(f"perseus: stage {ctx.pp_rank} GPU {gpu.index} did not run at {target} MHz after "
                  f"{len(local.iterations)} warm-up iterations (read back {seen} MHz); not recorded", flush=True)
            continue
        skip = len(local.iterations)
        _measure(trainer, hooks, local, skip, cfg.num_prof_steps, window)
        means = local.per_chunk_kind_means(skip=skip)
        rows += [(virtual_stage(cfg.schedule, cfg.pp, ctx.pp_rank, chunk), kind, target, t, e)
                 for (chunk, kind), (t, e) in sorted(means.items()) if e > 0]
        for chunk, kind in sorted(k for k, (_, e) in means.items() if e <= 0):
            stage = virtual_stage(cfg.schedule, cfg.pp, ctx.pp_rank, chunk)
            print(f"perseus: stage {stage} {kind} at {target} MHz rejected: the energy counter did not "
                  "change over the measured window; measure longer (--num_prof_steps, --profile_window)", flush=True)
        p = local.idle_power(skip=skip)
        if p is not None:
            idle.append(p)
        if ctx.rank == 0:
            print(f"profiled {target} MHz ({i + 1}/{len(freqs)}, {time.perf_counter() - start:.1f} s)", flush=True)
    controller.reset()
    return _gather_and_write(trainer, rows, idle)


def _all_ranks(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (a host tensor: the group has a CPU backend)."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value[0])


def _warm_up(trainer: Any, hooks: HookChain, local: LocalPerseus, target: int | None, steps: int) -> bool:
    """Iterate until the clock is confirmed at ``target`` on every rank (at least ``max(1, steps)``
    iterations, at most ``steps + MAX_EXTRA_WARMUP``); ``False`` if this rank's never was.
    A rank with no ``target`` (it measures nothing now) iterates along, confirmed."""
    done = 0
    while True:
        trainer.iteration(hooks)
        done += 1
        confirmed = target is None or all(m.at_planned_clock for m in local.iterations[-1].instructions)
        if _all_ranks(confirmed and done >= max(1, steps)) or done >= max(1, steps) + MAX_EXTRA_WARMUP:
            return confirmed


@dataclass(frozen=True)
class Window:
    """One measured window at a locked clock, judged by the clock read back from the GPU."""

    means: dict[str, tuple[float, float]]
    """Mean (time, energy) per instruction kind, over the instructions that held the clock."""
    held: int
    """Instructions that read back the locked clock when they began and when they ended."""
    total: int
    kinds: frozenset[str]
    """Instruction kinds that ran in the window."""
    seen: tuple[int, ...]
    """Other clocks read back (MHz), by the instructions that did not hold."""
    flat: frozenset[str] = frozenset()
    """Kinds that held the clock but whose energy counter did not move over the window (left out of
    ``means``: a reading that did not change is no 0 J measurement)."""
    flat_s: float = 0.0
    """Seconds at the clock of the longest-measured flat kind: how long the counter was seen not to move."""

    @property
    def only_flat(self) -> bool:
        """Every kind held the clock and those missing from ``means`` are flat: the clock held, the
        energy counter did not advance (no clock the GPU cannot hold)."""
        return bool(self.flat) and set(self.means) | self.flat == set(self.kinds)

    @property
    def complete(self) -> bool:
        """Every kind that ran has instructions at the clock: the window measures that clock."""
        return self.total > 0 and set(self.means) == set(self.kinds)


def judge_window(local: LocalPerseus, skip: int) -> Window:
    """The iterations of ``local`` after ``skip`` as a :class:`Window` (see there)."""
    measured = [m for it in local.iterations[skip:] for m in it.instructions]
    seen = {c for m in measured if not m.at_planned_clock for c in (m.began_at, m.applied)
            if c is not None and c != m.frequency}
    means = local.per_kind_means(skip, held_only=True)
    flat = frozenset(k for k, (_, e) in means.items() if e <= 0)
    at_clock = local.time_at_clock(skip)
    return Window({k: v for k, v in means.items() if k not in flat}, sum(m.at_planned_clock for m in measured),
                  len(measured), frozenset(parse_instruction_name(m.name)[0] for m in measured), tuple(sorted(seen)),
                  flat, max((at_clock.get(k, 0.0) for k in flat), default=0.0))


def measure_at(
    trainer: Any, hooks: HookChain, local: LocalPerseus, target: int | None, warmup: int, measure: int,
    window: float = 0.0,
) -> Window | None:
    """Warm up until every rank's clock is confirmed, then measure (all ranks together) at least
    ``measure`` iterations and until every kind accumulated ``window`` seconds at the clock (the
    GPU's trustworthy counter window; at most ``MAX_MEASURE_FACTOR`` times ``measure``; a kind that
    never held the clock ends the window early, it is measured again). This rank's window at
    ``target``, judged by the read-back clock (``None``: no target)."""
    _warm_up(trainer, hooks, local, target, warmup)
    skip = len(local.iterations)
    done = 0
    while True:
        trainer.iteration(hooks)
        done += 1
        enough = target is None
        if not enough:
            covered = local.time_at_clock(skip=skip)
            ran = {parse_instruction_name(m.name)[0] for it in local.iterations[skip:] for m in it.instructions}
            enough = not ran <= set(covered) or min(covered.values(), default=0.0) >= window
        if _all_ranks(done >= measure and enough) or done >= MAX_MEASURE_FACTOR * max(measure, 1):
            break
    return None if target is None else judge_window(local, skip)


def _measure(trainer: Any, hooks: HookChain, local: LocalPerseus, skip: int, steps: int, window: float) -> None:
    """Iterate until ``steps`` iterations ran and every kind accumulated ``window`` seconds at the clock."""
    done = 0
    while True:
        trainer.iteration(hooks)
        done += 1
        covered = local.time_at_clock(skip=skip)
        enough = done >= steps and bool(covered) and min(covered.values()) >= window
        if _all_ranks(enough) or done >= MAX_MEASURE_FACTOR * max(steps, 1):
            return


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
