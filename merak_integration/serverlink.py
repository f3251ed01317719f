"""Workers and a Perseus server: register, profile through the server's sweep, fetch and apply plans.

- Rank 0 makes sure the job exists (``--job_name``, or a name derived from the run): it registers
  it with the local profile ``profiles/<model>+<partition>+pp<N>+mbs<MB>/`` when there is one (the
  server then optimizes at once), else without (the server starts a profiling sweep).
- Every rank registers itself (stage, pipeline id, supported clocks) and gets its schedule.
- Profiling mode: every rank locks the clock the server asks for, runs the warm-up and measured
  iterations, reports its mean forward/backward time and energy, and goes on with the next clock
  the server returns, until every stage is done. Ranks keep iterating together (a pipeline cannot
  run one stage alone), so a stage whose sweep ended early runs unmeasured iterations meanwhile.
- Serving: each rank applies its stage's frequencies instruction by instruction (or a power
  limit), reports every iteration's time and energy, and refetches its schedule when the job's
  version changes (new target, straggler).
"""

from __future__ import annotations

import re
import time
from typing import Any

import torch
import torch.distributed as dist

from merak_integration.devicehooks import GPUInstructionHooks, IterationMeasurement, LocalPerseus
from merak_integration.hooks import HookChain, NullHooks
from merak_integration.plans import check_schedule
from perseus.errors import PerseusError


def default_job_id(trainer: Any) -> str:
    """``<model>_<partition>_pp<N>_mbs<MB>_nmb<M>[_<schedule>]``, in the server's job id alphabet."""
    cfg = trainer.cfg
    name = f"{cfg.model}_{trainer.pipe.partition.tag}_pp{cfg.pp}_mbs{cfg.microbatch_size}_nmb{cfg.num_microbatches}"
    if cfg.schedule != "1f1b":
        name += f"_{cfg.schedule}"
    if cfg.dp != 1:
        name += f"_dp{cfg.dp}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:64]


class ServerSession:
    """One rank's connection to the server for one job."""

    def __init__(self, trainer: Any, gpu: Any, controller: Any, *, with_profile: bool) -> None:
        from perseus.client import PerseusClient

        self.trainer, self.gpu = trainer, gpu
        cfg, ctx = trainer.cfg, trainer.ctx
        self.client = PerseusClient(cfg.server, retry_timeout=60.0)
        self.job_id = cfg.job_name or default_job_id(trainer)
        # Rank 0 decides what to do: ("use"|"profile"|"sweep"|"error", detail).
        decision: list[Any] = [None]
        if ctx.rank == 0:
            try:
                decision[0] = self._lookup(with_profile)
            except PerseusError as exc:
                decision[0] = ("error", str(exc))
        dist.broadcast_object_list(decision, src=0)
        action, detail = decision[0]
        blocking_power = 0.0
        if action == "sweep":
            # The server's sweep measures instructions only; the blocking power is measured here.
            from merak_integration.profiler import measure_blocking_power

            blocking_power = measure_blocking_power(trainer, gpu, controller)
        error: list[str | None] = [detail if action == "error" else None]
        if ctx.rank == 0 and action in ("profile", "sweep"):
            try:
                self._register(detail, blocking_power)
            except PerseusError as exc:
                error[0] = str(exc)
        dist.broadcast_object_list(error, src=0)
        if error[0] is not None:
            raise PerseusError(error[0])
        self.served = self.client.register_rank(
            self.job_id,
            ctx.rank,
            ctx.pp_rank,
            gpu.supported_frequencies(),
            pipeline_id=ctx.dp_rank,
            gpu_name=gpu.name,
            schedule=cfg.schedule,
            num_microbatches=cfg.num_microbatches,
        )

    def _lookup(self, with_profile: bool) -> tuple[str, str]:
        from perseus.client import PerseusRpcError

        try:
            job = self.client.get_job(self.job_id)
        except PerseusRpcError as exc:
            if exc.code.name != "NOT_FOUND":
                raise
            job = None
        if job is not None:
            print(f"perseus: using job {self.job_id} ({job.phase}) at {self.client.target}", flush=True)
            return "use", ""
        if with_profile:
            from merak_integration.profiler import profile_dir

            path = profile_dir(self.trainer) / "profile.csv"
            if path.is_file():
                print(f"perseus: registering job {self.job_id} with profile {path}", flush=True)
                return "profile", str(path)
        print(f"perseus: registering job {self.job_id}; the server runs a profiling sweep", flush=True)
        return "sweep", ""

    def _register(self, profile_path: str, blocking_power: float) -> None:
        cfg, pipe = self.trainer.cfg, self.trainer.pipe
        profile = None
        if profile_path:
            from perseus.profile import load_profile

            profile = load_profile(profile_path)
            blocking_power = profile.blocking_power
        self.client.register_job(
            job_id=self.job_id,
            model=cfg.model,
            partition=pipe.partition.tag,
            schedule=cfg.schedule,
            num_stages=cfg.pp,
            num_microbatches=cfg.num_microbatches,
            num_chunks=cfg.num_chunks,
            dp_degree=cfg.dp,
            blocking_power=blocking_power,
            profile=profile,
            warmup_iterations=cfg.num_warmup_steps,
            measure_iterations=cfg.num_prof_steps,
            frequencies=cfg.profile_frequencies or (),
        )

    # --- profiling --------------------------------------------------------------------------

    def run_profiling(self, controller: Any) -> list[tuple[int, str, int, float, float]]:
        """Follow the server's sweep until every stage is done; returns this rank's rows."""
        from merak_integration.trainer import gpu_stage

        trainer, ctx = self.trainer, self.trainer.ctx
        step = self.served.profiling if self.served.mode == "profiling" else None
        rows: list[tuple[int, str, int, float, float]] = []
        start = time.perf_counter()
        if step is not None and not step.done:
            for _ in range(2):  # connection set-up must not land on the first measured frequency
                trainer.iteration(NullHooks())
        while True:
            done = step is None or step.done
            counts = torch.tensor(
                [0 if done else 1, step.warmup_iterations if step else 0, step.measure_iterations if step else 0]
            )
            dist.all_reduce(counts, op=dist.ReduceOp.MAX)
            if int(counts[0]) == 0:
                break
            warmup, measure = int(counts[1]), max(1, int(counts[2]))
            freq = None if done or step is None else step.frequency
            local = LocalPerseus(self.gpu, controller, fixed_frequency=freq)
            hooks = HookChain([local, GPUInstructionHooks(self.gpu, gpu_stage(self.gpu, ctx), trainer.pipe.chunk_shares)])
            for _ in range(warmup + measure):
                trainer.iteration(hooks)
            if freq is not None:
                means = local.per_kind_means(skip=warmup)
                rows += [(ctx.pp_rank, k, freq, t, e) for k, (t, e) in sorted(means.items())]
                step = self.client.report_profile(self.job_id, ctx.rank, freq, means).next
                if ctx.rank == 0:
                    print(f"profiled {freq} MHz ({time.perf_counter() - start:.1f} s)", flush=True)
        controller.reset()
        return rows

    # --- serving ----------------------------------------------------------------------------

    def wait_for_plan(self, timeout: float = 600.0) -> None:
        job = self.client.wait_for_phase(self.job_id, ("serving",), timeout=timeout)
        self.served = self.client.get_schedule(self.job_id, self.trainer.ctx.rank)
        if self.trainer.ctx.rank == 0:
            print(f"perseus: job {job.job_id} serving plan {job.plan_name or '-'} (target {job.target})", flush=True)

    def apply(self, local: LocalPerseus) -> None:
        """Make ``local`` apply the current served schedule."""
        served = self.served
        if served.mode == "plan":
            check_schedule(served, self.trainer.pipe.expected_order, f"server {self.client.target} job {self.job_id}")
            local.set_schedule(served)
        elif served.mode == "power_limit":
            local.set_schedule(None)
            self.gpu.set_power_limit(served.power_limit)
        else:
            local.set_schedule(None)

    def report(self, step: int, it: IterationMeasurement, local: LocalPerseus) -> None:
        version = self.client.report_iteration(
            self.job_id, self.trainer.ctx.rank, step, it.time, it.energy, self.served.plan_name
        )
        if version != self.served.version:
            self.served = self.client.get_schedule(self.job_id, self.trainer.ctx.rank)
            self.apply(local)

    def close(self) -> None:
        if self.served.mode == "power_limit":
            self.gpu.reset_power_limit()
        self.client.close()

