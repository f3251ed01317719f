"""Workers and a Perseus server: register, profile through the server's sweep, fetch and apply plans.

- Rank 0 makes sure the job exists (``--job_name``, or a name derived from the run): it registers
  it with the local profile ``profiles/<model>+<partition>+pp<N>+mbs<MB>/`` when there is one (the
  server then optimizes at once), else without (the server starts a profiling sweep).
- Every rank registers itself (stage, pipeline id, supported clocks) and gets its schedule.
- Profiling mode: every rank locks the clock the server asks for, warms up until the clock read
  back from its GPU is the one asked for (at least one iteration), runs the measured iterations,
  reports its mean forward/backward time and energy over the instructions that held that clock,
  and goes on with the next clock the server returns, until every stage is done. A window in which
  an instruction kind never held the clock is discarded and measured again (up to ``MAX_WINDOWS``
  times; then the rank tells the server it could not hold that clock, and the server drops it from
  the stage's sweep, which goes on with the other clocks, or fails the job when too few are left:
  then training goes on at default clocks, saying so once). Ranks keep
  iterating together (a pipeline cannot run one stage alone), so a stage whose sweep ended early
  runs unmeasured iterations meanwhile.
- Serving: each rank applies its stage's frequencies instruction by instruction (or a power
  limit). The training thread only queues each iteration's report and, at iteration boundaries,
  picks up a schedule the watch stream delivered meanwhile (new target, straggler): both happen
  on background threads (:mod:`perseus.client.reporter`, :mod:`perseus.client.follower`), so a
  slow, restarting or absent server never slows or stops training. Every launch is one run (run
  id) of the job; reports the server could not take in time are kept under ``--out_dir`` in
  ``perseus-unsent/`` and sent by the next run of the job there, or with ``perseus upload``.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from merak_integration.config import RunConfig
from merak_integration.devicehooks import GPUInstructionHooks, IterationMeasurement, LocalPerseus
from merak_integration.hooks import HookChain, NullHooks
from merak_integration.plans import check_schedule
from perseus.client import PerseusClient, PerseusRpcError
from perseus.client.follower import ScheduleFollower
from perseus.client.health import TRANSIENT, LinkHealth
from perseus.client.reporter import BackgroundReporter
from perseus.client.types import ProfilingStep, ServedSchedule
from perseus.errors import PerseusError
from perseus.reports import IterationReport

_Measured = tuple[int, dict[str, tuple[float, float]], tuple[int, ...], float]
"""(frequency, {instruction kind: (mean time, mean energy)}, read-back clocks, flat seconds); no kinds:
the frequency did not hold (the read-back clocks are what the GPU ran at instead), or with flat seconds
> 0 it held but the energy counter did not advance over a window that long."""

#: Seconds a finished run keeps trying to deliver its last reports before it spills them.
FLUSH_TIMEOUT = 10.0


def default_job_id(trainer: Any) -> str:
    """``<model>_<partition>_pp<N>_mbs<MB>_nmb<M>[_<schedule>]``, in the server's job id alphabet."""
    return job_id_for(trainer.cfg, trainer.pipe.partition.tag)


def job_id_for(cfg: RunConfig, partition_tag: str) -> str:
    """The job name a run uses at the server: ``--job_name``, or one derived from the run's shape."""
    if cfg.job_name:
        return cfg.job_name
    name = f"{cfg.model}_{partition_tag}_pp{cfg.pp}_mbs{cfg.microbatch_size}_nmb{cfg.num_microbatches}"
    if cfg.schedule != "1f1b":
        name += f"_{cfg.schedule}"
    if cfg.dp != 1:
        name += f"_dp{cfg.dp}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:64]


class ServerSession:
    """One rank's connection to the server for one job."""

    def __init__(self, trainer: Any, gpu: Any, controller: Any, *, with_profile: bool) -> None:
        self.trainer, self.gpu = trainer, gpu
        cfg, ctx = trainer.cfg, trainer.ctx
        self.client = PerseusClient(cfg.server, retry_timeout=60.0)
        self.job_id = default_job_id(trainer)
        self._link: _Link | None = None
        # Rank 0 decides what to do: ("use"|"profile"|"sweep"|"error", detail), and names the run.
        decision: list[Any] = [None, None]
        if ctx.rank == 0:
            decision[1] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
            try:
                decision[0] = self._lookup(with_profile)
            except PerseusError as exc:
                decision[0] = ("error", str(exc))
        dist.broadcast_object_list(decision, src=0)
        (action, detail), self.run_id = decision
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
        """Follow the server's sweep until every stage is done; returns this rank's rows.

        While the server is unreachable the sweep pauses (the measurement waits to be reported) and
        training goes on at default clocks; the sweep resumes when the server answers.
        """
        from merak_integration.profiler import FLAT_GROWTH, MAX_WINDOWS, measure_at
        from merak_integration.trainer import gpu_stage

        trainer, ctx = self.trainer, self.trainer.ctx
        step = self.served.profiling if self.served.mode == "profiling" else None
        rows: list[tuple[int, str, int, float, float]] = []
        pending: _Measured | None = None  # a measurement the server has not acknowledged yet
        sweep_size = len(trainer.cfg.profile_frequencies or self.gpu.supported_frequencies())
        cfg_window = trainer.cfg.profile_window
        counter_window = cfg_window if cfg_window is not None else self.gpu.min_measurement_window
        swept = failed = 0
        client = PerseusClient(trainer.cfg.server, retry_timeout=2.0, timeout=10.0)
        health = LinkHealth(client.target, (lambda line: print(line, flush=True)) if ctx.rank == 0 else None)
        start = time.perf_counter()
        if step is not None and not step.done:
            for _ in range(2):  # connection set-up must not land on the first measured frequency
                trainer.iteration(NullHooks())
        while True:
            done = (step is None or step.done) and pending is None
            counts = torch.tensor(
                [0 if done else 1, step.warmup_iterations if step else 0, step.measure_iterations if step else 0]
            )
            dist.all_reduce(counts, op=dist.ReduceOp.MAX)
            if int(counts[0]) == 0:
                break
            warmup, measure = int(counts[1]), max(1, int(counts[2]))
            freq = None
            if pending is None and step is not None and not step.done:
                freq = self.gpu.nearest_frequency(step.frequency)  # the clock the GPU locks and reads back
            local = LocalPerseus(self.gpu, controller, fixed_frequency=freq)
            hooks = HookChain([local, GPUInstructionHooks(self.gpu, gpu_stage(self.gpu, ctx), trainer.pipe.chunk_shares)])
            # The clock is confirmed (read back) before the window; instructions that did not hold it
            # are left out, and a window in which some kind never held it is measured again.
            window = measure_at(trainer, hooks, local, freq, warmup, measure, counter_window)
            if freq is not None and window is not None and window.complete:
                failed = 0
                rows += [(ctx.pp_rank, k, freq, t, e) for k, (t, e) in sorted(window.means.items())]
                pending, swept = (freq, window.means, (), 0.0), swept + 1
                if window.held < window.total:
                    print(f"perseus: rank {ctx.rank}: {window.total - window.held} of {window.total} instructions "
                          f"did not hold {freq} MHz (read back {list(window.seen)} MHz); measured without them",
                          flush=True)
                if ctx.rank == 0:
                    print(f"profiled {freq} MHz: frequency {swept}/{sweep_size} "
                          f"({time.perf_counter() - start:.1f} s)", flush=True)
            elif freq is not None and window is not None and window.only_flat:
                # The clock held; the counter did not move. Not a clock to drop: measure longer, and if the
                # counter never moves its energy cannot be measured at any clock (the server says so).
                failed += 1
                what = (f"perseus: rank {ctx.rank} GPU {self.gpu.index}: at {freq} MHz the energy counter did not "
                        f"advance over {window.flat_s:.2f} s of {', '.join(sorted(window.flat))} at that clock "
                        "(NVML updates it in steps; a window shorter than its update period reads 0 J)")
                if failed < MAX_WINDOWS:
                    counter_window = max(counter_window, window.flat_s) * FLAT_GROWTH
                    print(f"{what}; window discarded, measuring again over {counter_window:.2f} s", flush=True)
                else:
                    print(f"{what} in {failed} windows, each longer: this GPU's energy cannot be measured; telling "
                          "the server, which stops the sweep (training goes on at default clocks)", flush=True)
                    pending, failed = (freq, {}, (), window.flat_s), 0
            elif freq is not None and window is not None:
                failed += 1
                what = (f"perseus: rank {ctx.rank} GPU {self.gpu.index}: {freq} MHz did not hold during the "
                        f"measured window ({window.held} of {window.total} instructions read it back; also read "
                        f"{list(window.seen)} MHz); window discarded")
                if failed < MAX_WINDOWS:
                    print(f"{what}, measuring again", flush=True)
                else:  # never report a clock that did not apply: the server drops it from the stage's sweep
                    print(f"{what} {failed} times; telling the server this stage cannot hold {freq} MHz (a power "
                          "cap or thermal limit? see nvidia-smi -q -d PERFORMANCE)", flush=True)
                    pending, failed = (freq, {}, window.seen, 0.0), 0
            if pending is not None:
                step, pending = self._report_profile(client, health, pending, step)
        client.close()
        controller.reset()
        return rows

    def _report_profile(
        self, client: PerseusClient, health: LinkHealth, pending: _Measured, step: ProfilingStep | None
    ) -> tuple[ProfilingStep | None, _Measured | None]:
        """(next step, None) once the server took the measurement; (step, pending) while it is away."""
        freq, means, read_back, flat_s = pending
        try:
            ack = client.report_profile(self.job_id, self.trainer.ctx.rank, freq, means,
                                        not_held=not means and not flat_s, read_back=read_back, counter_flat_s=flat_s)
        except PerseusRpcError as exc:
            if exc.code not in TRANSIENT:
                raise
            health.failed(f"{exc.code.name}; the profiling sweep pauses")
            return step, pending
        health.ok()
        return ack.next, None

    # --- serving ----------------------------------------------------------------------------

    def wait_for_plan(self, timeout: float = 600.0) -> None:
        """Wait until the job serves a plan; a job that failed (or never gets there) leaves this rank
        at default clocks, said once: training does not stop because Perseus cannot plan it."""
        rank = self.trainer.ctx.rank
        try:
            job = self.client.wait_for_phase(self.job_id, ("serving",), timeout=timeout)
            self.served = self.client.get_schedule(self.job_id, rank)
        except PerseusError as exc:
            self.served = ServedSchedule(stage=self.trainer.ctx.pp_rank, instructions=(), job_id=self.job_id,
                                         rank=rank, mode="default")
            if rank == 0:
                print(f"perseus: warning: {exc}; training goes on at default clocks without a plan", flush=True)
            return
        if rank == 0:
            print(f"perseus: job {job.job_id} serving plan {job.plan_name or '-'} (target {job.target})", flush=True)

    def apply(self, local: LocalPerseus) -> None:
        """Make ``local`` apply the current served schedule (raises if it does not fit the pipeline).

        A measure-only run applies nothing: clocks and power limits stay as they are.
        """
        served = self.served
        if self.trainer.cfg.measure_only:
            local.set_schedule(None)
        elif served.mode == "plan":
            check_schedule(served, self.trainer.pipe.expected_order, f"server {self.client.target} job {self.job_id}")
            local.set_schedule(served)
        elif served.mode == "power_limit":
            local.set_schedule(None)
            self.gpu.set_power_limit(served.power_limit)
        else:
            local.set_schedule(None)

    def report(self, step: int, it: IterationMeasurement, local: LocalPerseus) -> None:
        """Queue this iteration's report and apply a schedule that arrived meanwhile (no network here)."""
        if self._link is None:  # the first report starts the background threads
            self._link = _Link(self)
            if self.trainer.ctx.rank == 0:
                print(f"perseus: run {self.run_id} of job {self.job_id}", flush=True)
        self._link.reporter.put(self.iteration_report(step, it))
        newer = self._link.follower.take()
        if newer is not None and _key(newer) != _key(self.served):
            self._switch(newer, local)

    def iteration_report(self, step: int, it: IterationMeasurement) -> IterationReport:
        """What the server stores of one iteration: time, energy, and what the GPU did (read back).

        A measure-only rank applies no plan, so it names none; its planned-clock counts are 0.
        """
        measure_only = self.trainer.cfg.measure_only
        planned, held, clock = it.clock_counts()
        return IterationReport(
            self.trainer.ctx.rank, step, it.time, it.energy, "" if measure_only else self.served.plan_name,
            busy_time=it.busy_time, busy_energy=it.busy_energy,
            measure_only=measure_only, clock_mhz=clock, planned_instructions=planned, at_planned_clock=held,
        )

    def _switch(self, newer: ServedSchedule, local: LocalPerseus) -> None:
        old = self.served
        self.served = newer
        try:
            self.apply(local)
        except PerseusError as exc:
            # A schedule that does not fit must not stop training: keep the one that runs, say so once.
            self.served = old
            print(f"perseus: warning: rank {self.trainer.ctx.rank}: ignoring the new schedule: {exc}", flush=True)
            return
        if old.mode == "power_limit" and newer.mode != "power_limit" and not self.trainer.cfg.measure_only:
            self.gpu.reset_power_limit()

    def close(self) -> None:
        if self._link is not None:
            self._link.close(self.trainer.ctx.rank)
        if self.served.mode == "power_limit" and not self.trainer.cfg.measure_only:
            self.gpu.reset_power_limit()
        self.client.close()


def _key(s: ServedSchedule) -> tuple[Any, ...]:
    return (s.mode, s.plan_id, s.plan_name, s.instructions, s.power_limit)


def spill_path(out_dir: str | Path, job_id: str, rank: int) -> Path:
    """Where one rank of a job keeps the reports the server could not take in time."""
    return Path(out_dir) / "perseus-unsent" / f"{job_id}.rank{rank}.jsonl"


class _Link:
    """One rank's background connection while training: report sender and schedule follower."""

    def __init__(self, session: ServerSession) -> None:
        cfg, rank = session.trainer.cfg, session.trainer.ctx.rank
        # Rank 0 speaks for all ranks: one warning per outage, not one per rank.
        say = (lambda line: print(line, flush=True)) if rank == 0 else None
        self.client = PerseusClient(cfg.server, retry_timeout=0.0, timeout=5.0)
        self.health = LinkHealth(self.client.target, say)
        self.reporter = BackgroundReporter(
            self.client, session.job_id, session.run_id, spill_path(cfg.out_dir, session.job_id, rank),
            health=self.health, flush_timeout=FLUSH_TIMEOUT, warn=say,
        )
        self.follower = ScheduleFollower(self.client, session.job_id, rank, self.health)

    def close(self, rank: int) -> None:
        delivery = self.reporter.close()
        self.follower.stop()
        self.client.close()
        if delivery.pending and rank == 0:
            print(f"perseus: warning: server {self.client.target} did not take every report before training "
                  f"ended; unsent reports are kept in {delivery.spill_path.parent} (rank 0: {delivery.pending}) "
                  f"and sent by the next run of this job with this --out_dir, or now with "
                  f"`perseus upload {delivery.spill_path.parent}`", flush=True)
        if self.follower.error and rank == 0:
            print(f"perseus: warning: schedule updates stopped: {self.follower.error}", flush=True)
