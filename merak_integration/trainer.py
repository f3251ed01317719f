"""The worker process torchrun starts once per GPU: profile, or train with a plan applied.

``python -m merak_integration.trainer CONFIG.json`` (the launcher writes the file). Ranks are laid
out ``rank = dp_rank * pp + pp_rank``: the ``pp`` ranks of one data-parallel replica form a
pipeline, and the ``dp`` ranks holding the same stage average their gradients after each iteration.

Every iteration is measured over a common window on all ranks (a barrier starts and ends it), so
each stage's energy includes the blocking power it draws while waiting for the others, exactly
as the planner's model counts it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from merak_integration import collectives, runlog
from merak_integration.config import CONFIG_ENV, RunConfig
from merak_integration.data import batches
from merak_integration.devicehooks import GPUInstructionHooks, LocalPerseus
from merak_integration.hooks import HookChain, InstructionHooks, NullHooks, OrderCheck
from merak_integration.peerloss import PeerRegistry, lost_peer_cause
from merak_integration.pipeline import StagePipeline
from merak_integration.stallwatch import StallWatch
from merak_integration.supervisor import die_with_parent, mark_done, report_error
from perseus.device import safety
from perseus.errors import DeviceError, InputError, PerseusError


@dataclass
class Context:
    rank: int
    world: int
    local_rank: int
    pp_rank: int
    dp_rank: int
    pp_group: dist.ProcessGroup | None
    dp_group: dist.ProcessGroup | None
    device: torch.device


def init_distributed(cfg: RunConfig) -> Context:
    """Join the process group and build the pipeline/data-parallel groups.

    On GPUs the group is ``cpu:gloo,cuda:nccl`` (see :mod:`merak_integration.collectives`), so the
    host-side collectives (iteration totals, profiling counts) work beside NCCL's CUDA traffic.
    """
    use_cuda = torch.cuda.is_available() and cfg.device != "sim"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    collectives.init_process_group(use_cuda)
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != cfg.world_size:
        raise InputError("torchrun", f"world size {world} != pp*dp = {cfg.world_size}")
    pp_rank, dp_rank = rank % cfg.pp, rank // cfg.pp
    pp_group = dp_group = None
    # Every rank must create every group, in the same order.
    for d in range(cfg.dp):
        g = dist.new_group([d * cfg.pp + s for s in range(cfg.pp)])
        if d == dp_rank:
            pp_group = g
    for s in range(cfg.pp):
        g = dist.new_group([d * cfg.pp + s for d in range(cfg.dp)])
        if s == pp_rank:
            dp_group = g
    return Context(rank, world, local_rank, pp_rank, dp_rank, pp_group, dp_group, device)


def make_gpu(cfg: RunConfig, ctx: Context) -> Any:
    """This rank's GPU: via NVML, or simulated (modelling stage ``pp_rank`` of the sim profile)."""
    from perseus.device import get_gpus

    backend = cfg.device
    if backend == "auto" and cfg.sim_profile:
        backend = "sim"
    time_scale = cfg.sim_time_scale if cfg.sim_time_scale != 1.0 else None  # None: env or 1.0
    return get_gpus(
        backend,
        sim_profile=cfg.sim_profile,
        stage=ctx.pp_rank,
        indices=[ctx.local_rank],
        time_scale=time_scale,
        mode="measure" if cfg.measure_only else None,
        cuda=ctx.device.type == "cuda",
        announce_measure_only=False,  # check_control decides: an error, or a measure-only notice
    )[0]


def check_control(cfg: RunConfig, gpu: Any) -> None:
    """Refuse to profile or apply a plan on a GPU whose clocks cannot be set, before any iteration.

    A run that sets no clock anyway (no profile, plan or server) trains measure-only on such a GPU
    and says so once; a run that needs clocks gets only the error, never a notice before it.
    """
    if cfg.profile and cfg.measure_only:
        raise DeviceError("--profile true sweeps GPU clocks, --measure_only forbids changing them; drop one")
    wants_clocks = cfg.profile or cfg.plan or cfg.server
    if wants_clocks and not cfg.measure_only and not gpu.can_control:
        raise DeviceError(
            f"cannot set GPU clocks: {gpu.control_problem}; profiling and plans need clock control "
            "(pass --measure_only to train at default clocks and only measure)"
        )
    if not cfg.measure_only and not gpu.can_control:
        print(f"perseus: GPU {gpu.index} is measure-only: {gpu.control_problem}", file=sys.stderr, flush=True)


def make_controller(gpu: Any) -> Any:
    from perseus.device import FrequencyController

    return FrequencyController(gpu)


class Trainer:
    """Runs iterations of one rank's pipeline with the given hooks and measures them."""

    def __init__(self, cfg: RunConfig, ctx: Context) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.pipe = StagePipeline(cfg.pipeline_spec(), ctx.pp_rank, ctx.pp_group, ctx.device)
        self.order = OrderCheck(self.pipe.expected_order, ctx.pp_rank)
        batch = cfg.microbatch_size * cfg.num_microbatches
        self.data: Iterator[tuple[torch.Tensor, torch.Tensor]] = batches(
            self.pipe.config, batch, seed=cfg.seed + 7919 * ctx.dp_rank, data_path=cfg.data
        )
        self.optimizer = torch.optim.SGD(self.pipe.parameters(), lr=cfg.lr)

    def iteration(self, hooks: InstructionHooks, *, optimizer_step: bool = True) -> float | None:
        """One training iteration between two barriers, with ``hooks`` called around it."""
        self.pipe.hooks = HookChain([self.order, hooks])
        inputs, targets = next(self.data)
        self.optimizer.zero_grad(set_to_none=True)
        dist.barrier()
        self.pipe.hooks.on_step_begin()
        loss = self.pipe.step(inputs, targets)
        if self.cfg.dp > 1:
            for p in self.pipe.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, group=self.ctx.dp_group)
                    p.grad /= self.cfg.dp
        if optimizer_step:
            self.optimizer.step()
        dist.barrier()
        self.pipe.hooks.on_step_end()
        return loss


def run_grad_dump(trainer: Trainer, out: Path) -> None:
    """One iteration without an optimizer step; save this stage's gradients (dp replica 0 only)."""
    trainer.iteration(NullHooks(), optimizer_step=False)
    if trainer.ctx.dp_rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        grads = {n: p.grad.detach().cpu() for n, p in trainer.pipe.named_parameters().items() if p.grad is not None}
        torch.save(grads, out / f"grads-stage{trainer.ctx.pp_rank}.pt")


def main(argv: list[str] | None = None) -> int:
    """``python -m merak_integration.trainer [CONFIG.json]`` (default: the launcher's ``PERSEUS_RUN_CONFIG``)."""
    argv = sys.argv[1:] if argv is None else argv
    # Before any thread starts: signals are then handled by a thread of their own, which restores
    # the GPU even while the main thread is blocked inside a collective.
    die_with_parent()
    safety.handle_signals_in_thread()
    cfg = RunConfig.load(argv[0]) if argv else RunConfig.from_json(os.environ[CONFIG_ENV])
    peers: PeerRegistry | None = None
    lost: RuntimeError | None = None
    try:
        ctx = init_distributed(cfg)
        try:
            peers = PeerRegistry.join(ctx.rank, ctx.world, cfg.pp)
            _run(cfg, ctx)
        except RuntimeError as exc:  # a backend error: a vanished peer is said in one line, anything else raises
            if lost_peer_cause(exc) is None:
                raise
            lost = exc
        finally:
            if lost is None:  # not after a lost peer: it would talk to the rank that is gone (NCCL can hang)
                dist.destroy_process_group()
    except PerseusError as exc:
        report_error(f"perseus: error: {exc}")
        return 2
    except RuntimeError as exc:
        if lost_peer_cause(exc) is None:
            raise
        lost = exc  # while joining the process group
    if lost is not None:
        report_error(peers.describe(lost) if peers is not None else
                     f"perseus: error: lost a peer while joining the process group ({lost_peer_cause(lost)})",
                     lost_peer=True)
        return 1
    mark_done()
    return 0


def _run(cfg: RunConfig, ctx: Context) -> None:
    trainer = Trainer(cfg, ctx)
    if cfg.grad_dump:
        run_grad_dump(trainer, Path(cfg.grad_dump))
        return
    gpu = make_gpu(cfg, ctx)
    check_control(cfg, gpu)
    if cfg.measure_only and ctx.rank == 0:
        print("perseus: measure-only: no GPU clock or power limit is changed; reports carry read-back clocks",
              flush=True)
    controller = make_controller(gpu)
    try:
        if cfg.profile:
            from merak_integration.profiler import profile

            profile(trainer, gpu, controller)
        else:
            train(trainer, gpu, controller)
    finally:
        controller.close()


def train(trainer: Trainer, gpu: Any, controller: Any) -> None:
    """Train ``max_steps`` iterations with the plan (server, file or none) applied; report each one."""
    cfg, ctx = trainer.cfg, trainer.ctx
    local = LocalPerseus(gpu, None if cfg.measure_only else controller)
    session = None
    if cfg.server:
        from merak_integration.serverlink import ServerSession

        session = ServerSession(trainer, gpu, controller, with_profile=True)
        if cfg.measure_only:
            # Sweeping or applying a plan changes clocks: neither happens; reports say measure-only.
            if ctx.rank == 0:
                print(f"perseus: measure-only: job {session.job_id} ({session.served.mode}) gets reports at default "
                      "clocks; its profiling sweep and plans are not applied", flush=True)
        else:
            if session.served.mode == "profiling":
                session.run_profiling(controller)
            session.wait_for_plan()
        session.apply(local)
    elif cfg.plan:
        from merak_integration.plans import load_plan_schedule

        schedule = load_plan_schedule(cfg, ctx.pp_rank, trainer.pipe.expected_order)  # checked either way
        if not cfg.measure_only:
            local.set_schedule(schedule)
        elif ctx.rank == 0:  # a plan that is not applied names no row, report or instruction
            print(f"perseus: measure-only: plan {schedule.plan_name or cfg.plan} is not applied; iterations run at "
                  "default clocks and name no plan", flush=True)
    hooks = HookChain([local, GPUInstructionHooks(gpu, gpu_stage(gpu, ctx), trainer.pipe.chunk_shares)])
    rows: list[dict[str, Any]] = []
    logs = runlog.open_logs(cfg.log_to, cfg) if ctx.rank == 0 else []
    watch = StallWatch.start(ctx.rank, ctx.world, cfg.pp, say=lambda line: print(line, flush=True))
    try:
        for step in range(cfg.max_steps):
            t0 = time.perf_counter()
            slow_down(cfg, ctx, gpu, step)
            loss = trainer.iteration(hooks)
            if watch is not None:
                watch.progress(step)
            it = local.iterations[-1]
            if session is not None:
                session.report(step, it, local)
            at_planned = sum(m.at_planned_clock for m in it.planned)
            rows.append(_summarize(step, it.time, it.energy, loss, cfg.dp, (len(it.planned), at_planned)))
            rows[-1]["measure_only"] = cfg.measure_only
            rows[-1]["plan"] = local.plan_name
            for log in logs:
                log.log(step, rows[-1])
            if ctx.rank == 0:
                row = rows[-1]
                clocks = "" if row["at_planned_clock"] is None else f", {100 * row['at_planned_clock']:.0f}% at planned clock"
                print(
                    f"iteration {step}: {row['time']:.4f} s, {row['energy']:.2f} J, loss {row['loss']:.4f}{clocks}"
                    f"{' (measure-only)' if cfg.measure_only else ''} (wall {time.perf_counter() - t0:.3f} s)",
                    flush=True,
                )
    finally:
        for log in logs:
            log.close()
        if watch is not None:
            watch.stop()
        if session is not None:
            session.close()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{ctx.rank}.json").write_text(
        json.dumps({"rank": ctx.rank, "stage": ctx.pp_rank, "measure_only": cfg.measure_only, **local.summary()})
    )
    if ctx.rank == 0:
        (out / "iterations.json").write_text(json.dumps(rows, indent=1))


def _summarize(
    step: int, t: float, e: float, loss: float | None, dp: int, planned: tuple[int, int] = (0, 0)
) -> dict[str, Any]:
    """Iteration totals over all ranks: the longest time, the summed energy, the mean loss, and the
    share of planned instructions that ran at their planned clock (``planned``: this rank's counts).

    Host tensors: the process group serves them (gloo beside NCCL, see ``collectives``).
    """
    times = torch.tensor([t], dtype=torch.float64)
    sums = torch.tensor([e, loss if loss is not None else 0.0, *planned], dtype=torch.float64)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    fraction = float(sums[3] / sums[2]) if sums[2] > 0 else None
    return {"step": step, "time": float(times[0]), "energy": float(sums[0]), "loss": float(sums[1]) / dp,
            "at_planned_clock": fraction}


def slow_down(cfg: RunConfig, ctx: Context, gpu: Any, step: int) -> None:
    """``--sim_slowdown``: from its step on, this pipeline's simulated GPU runs every instruction slower."""
    if cfg.sim_slowdown is None:
        return
    pipeline, factor, start = cfg.sim_slowdown
    if ctx.dp_rank != pipeline or step != start:
        return
    if not hasattr(gpu, "time_scale"):
        raise DeviceError("--sim_slowdown slows simulated GPUs only, this rank runs on a real one")
    gpu.time_scale *= factor  # time and energy alike: the same power for longer, as a throttled GPU
    if ctx.pp_rank == 0:
        print(f"perseus: sim: pipeline {pipeline} runs {factor:g}x slower from step {step}", flush=True)


def gpu_stage(gpu: Any, ctx: Context) -> int:
    """Stage index the GPU object models (simulated GPUs); the pipeline rank otherwise."""
    return int(getattr(gpu, "stage", ctx.pp_rank))


if __name__ == "__main__":
    raise SystemExit(main())
