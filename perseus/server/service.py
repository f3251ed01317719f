"""The ``perseus.v1.Scheduler`` gRPC service: protobuf in, :class:`SchedulerCore` calls, protobuf out.

Core calls run in a thread pool so the asyncio event loop keeps serving (and streaming
schedule updates) while calls wait on the database; it is large enough that many iteration
reports wait for one group commit together (:mod:`perseus.server.reports`). Errors become status codes:
a bad field is INVALID_ARGUMENT naming it, an unknown job or rank NOT_FOUND, a different job
under an existing id ALREADY_EXISTS, a request too early for the job's phase FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from perseus.errors import InputError, PerseusError
from perseus.reports import IterationReport
from perseus.server import paging
from perseus.server.capping import CapView
from perseus.server.core import SchedulerCore
from perseus.server.limits import LimitExceeded
from perseus.server.sweep import MAX_READ_BACK, ProfilingSettings
from perseus.server.targets import TargetSpec
from perseus.server.types import (
    Conflict,
    JobSpec,
    JobView,
    NotFound,
    NotReady,
    ScheduleView,
)
from perseus.server.wakeups import LoopWaker
from perseus.v1 import scheduler_pb2 as pb
from perseus.v1 import scheduler_pb2_grpc as pb_grpc

log = logging.getLogger("perseus.server")
T = TypeVar("T")

PHASES = {
    "profiling": pb.JOB_PHASE_PROFILING,
    "optimizing": pb.JOB_PHASE_OPTIMIZING,
    "serving": pb.JOB_PHASE_SERVING,
    "failed": pb.JOB_PHASE_FAILED,
}
MODES = {
    "plan": pb.SCHEDULE_MODE_PLAN,
    "power_limit": pb.SCHEDULE_MODE_POWER_LIMIT,
    "profiling": pb.SCHEDULE_MODE_PROFILING,
    "default": pb.SCHEDULE_MODE_DEFAULT,
}
BASELINE_KINDS = {
    pb.BASELINE_KIND_MAX_FREQUENCY: "max-frequency",
    pb.BASELINE_KIND_GLOBAL_POWER_LIMIT: "global-power-limit",
    pb.BASELINE_KIND_PER_STAGE_POWER_LIMIT: "per-stage-power-limit",
}
BASELINE_ENUMS = {name: kind for kind, name in BASELINE_KINDS.items()}


def target_from_proto(target: pb.Target) -> tuple[TargetSpec, str]:
    """(TargetSpec, user plan JSON) of a Target message; unset means fastest."""
    which = target.WhichOneof("kind")
    if which is None or which == "fastest":
        return TargetSpec(), ""
    if which == "plan_json":
        return TargetSpec("plan"), target.plan_json
    if which == "baseline":
        b = target.baseline
        if b.kind not in BASELINE_KINDS:
            raise InputError("target.baseline.kind", "must be set (max-frequency, global or per-stage power limit)")
        return TargetSpec("baseline", b.max_slowdown or 1.0, BASELINE_KINDS[b.kind], tuple(b.power_limits)), ""
    return TargetSpec(which, float(getattr(target, which))), ""


def target_to_proto(spec: TargetSpec) -> pb.Target:
    if spec.kind == "fastest":
        return pb.Target(fastest=pb.Fastest())
    if spec.kind == "plan":
        return pb.Target(plan_json="")
    if spec.kind == "baseline":
        return pb.Target(baseline=pb.Baseline(kind=BASELINE_ENUMS[spec.baseline], max_slowdown=spec.value,
                                              power_limits=list(spec.power_limits)))
    msg = pb.Target()
    setattr(msg, spec.kind, spec.value)
    return msg


def job_to_proto(view: JobView) -> pb.JobInfo:
    s = view.spec
    return pb.JobInfo(
        job_id=s.job_id, model=s.model, partition=s.partition, schedule=s.schedule, num_stages=s.num_stages,
        num_microbatches=s.num_microbatches, num_chunks=s.num_chunks, dp_degree=s.dp_degree,
        tp_degree=s.tp_degree, blocking_power=s.blocking_power, phase=PHASES[view.phase],
        target=target_to_proto(view.target), plan_name=view.plan_name, version=view.version,
        num_ranks=view.num_ranks, num_profile_reports=view.num_profile_reports,
        num_iteration_reports=view.num_iteration_reports, frontier_size=view.frontier_size, error=view.error,
        stragglers=view.stragglers, created_at=view.created_at, stages_profiled=view.stages_profiled,
        num_iterations=view.num_iterations,
        runs=[pb.RunInfo(run_id=r.run_id, num_ranks=r.num_ranks, num_iterations=r.num_iterations,
                         num_reports=r.num_reports, first_report_at=r.first_report_at,
                         last_report_at=r.last_report_at, measure_only_reports=r.measure_only_reports,
                         planned_instructions=r.planned_instructions, at_planned_clock=r.at_planned_clock,
                         mean_clock_mhz=r.mean_clock_mhz) for r in view.runs],
        target_note=view.target_note, plan_iteration_time=view.plan_iteration_time, plan_energy=view.plan_energy,
        drift=view.drift, drift_note=view.drift_note, sweep_note=view.sweep_note,
        auto_stragglers=list(view.auto_stragglers),
        weight=view.weight, planned_power=view.planned_power, measured_power=view.measured_power,
        power_capped=view.power_capped,
    )


def cap_to_proto(view: CapView) -> pb.PowerCapInfo:
    st = view.status
    return pb.PowerCapInfo(
        set=view.watts is not None, watts=view.watts or 0.0, feasible=st.feasible, note=st.note,
        planned_power=view.planned_power, measured_power=view.measured_power,
        weighted_slowdown=st.weighted_slowdown, lower_bound=st.lower_bound, exact=st.exact, version=view.version,
        jobs=[pb.CappedJob(job_id=j.job_id, plan_name=j.plan_name, planned_power=j.planned_power,
                           measured_power=j.measured_power, weight=j.weight, slowdown=j.slowdown,
                           max_slowdown=j.max_slowdown, pinned=j.pinned) for j in view.jobs],
    )


def schedule_to_proto(view: ScheduleView) -> pb.PowerStateSchedule:
    msg = pb.PowerStateSchedule(
        job_id=view.job_id, rank=view.rank, stage=view.stage, pipeline_id=view.pipeline_id,
        job_phase=PHASES[view.phase], mode=MODES[view.mode], plan_name=view.plan_name, plan_id=view.plan_id,
        version=view.version, power_limit=view.power_limit,
        expected_iteration_time=view.expected_iteration_time, expected_energy=view.expected_energy,
        instructions=[
            pb.PlannedInstruction(instruction=p.instruction, microbatch=p.microbatch, frequency=p.frequency,
                                  chunk=p.chunk)
            for p in view.instructions
        ],
    )
    if view.mode == "profiling" or view.profiling_done:
        msg.profiling.CopyFrom(_step(view))
    return msg


def _step(view: ScheduleView) -> pb.ProfilingStep:
    return pb.ProfilingStep(frequency=view.profiling_frequency, warmup_iterations=view.warmup_iterations,
                            measure_iterations=view.measure_iterations, done=view.mode != "profiling")


def reports_of(messages: Iterable[pb.IterationReport]) -> list[IterationReport]:
    """The reports of a ReportIterations call or a streamed batch."""
    return [IterationReport(r.rank, r.iteration, r.time, r.energy, r.plan_name, busy_time=r.busy_time,
                            busy_energy=r.busy_energy, measure_only=r.measure_only, clock_mhz=r.clock_mhz,
                            planned_instructions=r.planned_instructions, at_planned_clock=r.at_planned_clock)
            for r in messages]


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a call that failed with ``exc`` answers."""
    if isinstance(exc, InputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, Conflict):
        return grpc.StatusCode.ALREADY_EXISTS, str(exc)
    if isinstance(exc, LimitExceeded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, (NotReady, PerseusError)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    return grpc.StatusCode.INTERNAL, "internal server error; see the server log"


class SchedulerServicer(pb_grpc.SchedulerServicer):
    """Serves :class:`SchedulerCore` over gRPC (grpc.aio)."""

    def __init__(self, core: SchedulerCore, *, workers: int = 32) -> None:
        self.core = core
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="perseus-core")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waker: LoopWaker | None = None
        self._changed: dict[str, asyncio.Event] = {}
        self._watchers: Counter[str] = Counter()
        """Open WatchSchedule streams per job id: the last one to leave drops the job's event."""
        self._report_streams: dict[asyncio.Task[Any], bool] = {}
        """Open StreamReports streams (their handler tasks): True while waiting for the next batch."""
        self._stopping = False
        self._streams_closed = asyncio.Event()
        core.add_listener(self._on_change)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the loop that runs the server (change notifications arrive from other threads)."""
        self._loop = loop
        self._waker = LoopWaker(loop)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def end_streams(self, timeout: float) -> None:
        """End every WatchSchedule stream with UNAVAILABLE (clients reconnect, maybe to another replica).

        Called before the gRPC server stops: a stream still open then is cancelled by gRPC and, when
        the event loop closes, logged as an unhandled CancelledError. Waits up to ``timeout`` s.
        """
        self._stopping = True
        if not self._watchers and not self._report_streams:
            return
        self._streams_closed.clear()
        for event in self._changed.values():
            event.set()
        self._changed.clear()
        for task, idle in list(self._report_streams.items()):
            if idle:  # waiting for a batch; one being stored is acknowledged first, then the stream ends
                task.cancel()
        try:
            await asyncio.wait_for(self._streams_closed.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("%d schedule and %d report streams still open at shutdown", sum(self._watchers.values()),
                        len(self._report_streams))

    def _on_change(self, job_id: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fire, job_id)

    def _fire(self, job_id: str) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    def _wait(self, future: Future[T]) -> Awaitable[T]:
        """``future`` (resolved by the report writer's thread) as an awaitable; one loop wake-up per commit."""
        return self._waker.wrap(future) if self._waker is not None else asyncio.wrap_future(future)

    async def _schedule(self, context: grpc.aio.ServicerContext, job_id: str, rank: int) -> ScheduleView:
        """Schedules are read from memory: answer on the loop unless a writer holds the lock."""
        view = self.core.try_schedule_for(job_id, rank)
        if view is not None:
            return view
        return await self._call(context, self.core.schedule_for, job_id, rank)

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await self._answer(context, getattr(fn, "__name__", str(fn)),
                                  loop.run_in_executor(self._executor, lambda: fn(*args, **kw)))

    async def _answer(self, context: grpc.aio.ServicerContext, name: str, pending: Awaitable[T]) -> T:
        """The result of ``pending``, or the call aborted with the status code its error maps to."""
        try:
            return await pending
        except Exception as exc:
            code, details = _status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("internal error in %s", name)
            await context.abort(code, details)
        raise AssertionError("unreachable")  # context.abort always raises

    async def RegisterJob(
        self, request: pb.RegisterTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterTrainingJobResponse:
        def run() -> tuple[JobView, bool]:
            spec = JobSpec(
                job_id=request.job_id, model=request.model, partition=request.partition,
                schedule=request.schedule, num_stages=request.num_stages,
                num_microbatches=request.num_microbatches, num_chunks=request.num_chunks or 1,
                dp_degree=request.dp_degree or 1, tp_degree=request.tp_degree or 1,
                blocking_power=request.blocking_power,
            )
            p = request.profiling
            profiling = ProfilingSettings(
                warmup_iterations=p.warmup_iterations or 2, measure_iterations=p.measure_iterations or 3,
                early_stop_rises=p.early_stop_rises or 3, frequencies=tuple(sorted(set(p.frequencies), reverse=True)),
            )
            target, plan_json = target_from_proto(request.target)
            return self.core.register_job(spec, profile_csv=request.profile_csv, profiling=profiling,
                                          target=target, target_plan_json=plan_json)

        view, created = await self._call(context, run)
        return pb.RegisterTrainingJobResponse(job=job_to_proto(view), created=created)

    async def RegisterRank(
        self, request: pb.RegisterRankRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterRankResponse:
        view = await self._call(
            context, self.core.register_rank, request.job_id, request.rank, request.stage, request.pipeline_id,
            request.gpu_name, list(request.supported_frequencies), schedule=request.schedule,
            num_microbatches=request.num_microbatches,
        )
        return pb.RegisterRankResponse(schedule=schedule_to_proto(view))

    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.PowerStateSchedule:
        return schedule_to_proto(await self._schedule(context, request.job_id, request.rank))

    async def WatchSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PowerStateSchedule]:
        last: tuple[Any, ...] | None = None
        job_id = request.job_id
        self._watchers[job_id] += 1
        try:
            while not self._stopping:
                # Take the event before reading so a change in between is never missed.
                event = self._changed.setdefault(job_id, asyncio.Event())
                view = await self._schedule(context, job_id, request.rank)
                if view.key() != last:
                    last = view.key()
                    yield schedule_to_proto(view)
                await event.wait()
        finally:
            # Unknown or deleted jobs, closed streams: nothing may stay behind per job id.
            self._watchers[job_id] -= 1
            if not self._watchers[job_id]:
                del self._watchers[job_id]
                self._changed.pop(job_id, None)
            if not self._watchers and not self._report_streams:
                self._streams_closed.set()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping; reconnect")

    async def ReportProfile(
        self, request: pb.ReportProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportProfileResponse:
        measurements = [(x.instruction, x.time, x.energy) for x in request.measurements]
        if len(request.read_back_mhz) > MAX_READ_BACK:  # checked before copying them
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"read_back_mhz: at most {MAX_READ_BACK} clocks, got {len(request.read_back_mhz)}")
        view = await self._call(context, self.core.report_profile, request.job_id, request.rank,
                                request.frequency, measurements, not_held=request.not_held,
                                read_back=tuple(request.read_back_mhz), counter_flat_s=request.counter_flat_s)
        return pb.ReportProfileResponse(next=_step(view), job_phase=PHASES[view.phase], version=view.version)

    async def ReportIteration(
        self, request: pb.ReportIterationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportIterationResponse:
        args = (request.job_id, request.rank, request.iteration, request.time, request.energy, request.plan_name,
                request.run_id)
        observed: dict[str, Any] = dict(
            busy_time=request.busy_time, busy_energy=request.busy_energy, measure_only=request.measure_only,
            clock_mhz=request.clock_mhz, planned_instructions=request.planned_instructions,
            at_planned_clock=request.at_planned_clock)

        async def report() -> int:
            # Usually queued for the next group commit straight from the event loop, no thread involved.
            queued = self.core.try_report_iteration(*args, **observed)
            if queued is None:  # the job or rank is not cached: a thread reads it from the database
                return await asyncio.get_running_loop().run_in_executor(
                    self._executor, lambda: self.core.report_iteration(*args, **observed))
            return await self._wait(queued)

        return pb.ReportIterationResponse(version=await self._answer(context, "report_iteration", report()))

    async def ReportIterations(
        self, request: pb.ReportIterationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportIterationsResponse:
        reports = reports_of(request.reports)
        job_id, run_id = request.job_id, request.run_id

        version, stored, duplicates = await self._answer(context, "report_iterations",
                                                         self._report_iterations(job_id, run_id, reports))
        return pb.ReportIterationsResponse(version=version, stored=stored, duplicates=duplicates)

    async def _report_iterations(
        self, job_id: str, run_id: str, reports: list[IterationReport]
    ) -> tuple[int, int, int]:
        """(version, stored, duplicates) once the reports are committed."""
        assert self._waker is not None, "bind() the servicer to its loop first"
        # Usually queued for the next group commit straight from the event loop: no thread, no future.
        waiter, resolve = self._waker.expect()
        if self.core.queue_iterations(job_id, run_id, reports, resolve):
            result: tuple[int, int, int] = await waiter
            return result
        # The job or a rank is not cached: a thread reads it from the database.
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: self.core.report_iterations(job_id, run_id, reports))

    async def StreamReports(
        self, requests: AsyncIterator[pb.ReportBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReportBatchAck]:
        """One rank's report stream: each batch is queued for the next group commit and acknowledged after it.

        Batches are handled one at a time, so acks leave in order and a client that sends ahead is
        held back by gRPC's flow control, not by server memory. A refused batch is acknowledged with
        its status code; the stream goes on. When the server stops, a stream waiting for its next
        batch ends with UNAVAILABLE (the client reconnects, maybe to another replica).
        """
        task = asyncio.current_task()
        assert task is not None
        self._report_streams[task] = True
        try:
            batches = requests.__aiter__()
            while not self._stopping:
                try:
                    batch = await batches.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not self._stopping:
                        raise
                    break
                self._report_streams[task] = False  # storing: a stopping server lets it finish and ack
                try:
                    ack = await self._store_batch(batch)
                finally:
                    self._report_streams[task] = True
                yield ack
        finally:
            self._report_streams.pop(task, None)
            if not self._report_streams and not self._watchers:
                self._streams_closed.set()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping; reconnect")

    async def _store_batch(self, batch: pb.ReportBatch) -> pb.ReportBatchAck:
        """Queue one streamed batch and wait for its commit; a refusal becomes the ack's code and error."""
        reports = reports_of(batch.reports)
        try:
            version, stored, duplicates = await self._report_iterations(batch.job_id, batch.run_id, reports)
        except Exception as exc:
            code, details = _status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.error("internal error storing a streamed batch of %d reports", len(reports), exc_info=exc)
            return pb.ReportBatchAck(seq=batch.seq, code=code.value[0], error=details)
        return pb.ReportBatchAck(seq=batch.seq, version=version, stored=stored, duplicates=duplicates)

    async def SetTarget(self, request: pb.SetTargetRequest, context: grpc.aio.ServicerContext) -> pb.SetTargetResponse:
        def run() -> JobView:
            target, plan_json = target_from_proto(request.target)
            if request.nearest:
                target = dataclasses.replace(target, nearest=True)
            return self.core.set_target(request.job_id, target, plan_json)

        return pb.SetTargetResponse(job=job_to_proto(await self._call(context, run)))

    async def ReportStraggler(
        self, request: pb.ReportStragglerRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportStragglerResponse:
        view, others = await self._call(context, self.core.report_straggler, request.job_id, request.pipeline_id,
                                        request.factor)
        return pb.ReportStragglerResponse(job=job_to_proto(view), others_plan_name=others)

    async def GetFrontier(
        self, request: pb.GetFrontierRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFrontierResponse:
        """One page of the frontier (:mod:`perseus.server.paging`); only that page's plans are decoded."""
        limits = self.core.limits

        def page() -> pb.GetFrontierResponse:
            paged = paging.parse_request(request)
            phase, plans, selected = self.core.frontier(request.job_id)
            return paging.build_page(paged, PHASES[phase], plans, selected,
                                     lambda chunk: self.core.iter_plan_jsons(request.job_id, chunk),
                                     limits.page_bytes, limits.max_message_bytes)

        return await self._call(context, page)

    async def ListJobs(self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext) -> pb.ListJobsResponse:
        views = await self._call(context, self.core.list_jobs, list(request.job_ids))
        return pb.ListJobsResponse(jobs=[job_to_proto(v) for v in views])

    async def DeleteJob(self, request: pb.DeleteJobRequest, context: grpc.aio.ServicerContext) -> pb.DeleteJobResponse:
        return pb.DeleteJobResponse(job=job_to_proto(await self._call(context, self.core.delete_job, request.job_id)))

    async def ReprofileJob(
        self, request: pb.ReprofileJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReprofileJobResponse:
        view = await self._call(context, self.core.reprofile_job, request.job_id)
        return pb.ReprofileJobResponse(job=job_to_proto(view))

    async def SetPowerCap(self, request: pb.SetPowerCapRequest, context: grpc.aio.ServicerContext) -> pb.PowerCapInfo:
        watts = None if request.clear else request.watts
        return cap_to_proto(await self._call(context, self.core.set_power_cap, watts))

    async def GetPowerCap(self, request: pb.GetPowerCapRequest, context: grpc.aio.ServicerContext) -> pb.PowerCapInfo:
        return cap_to_proto(await self._call(context, self.core.power_cap))

    async def SetJobWeight(
        self, request: pb.SetJobWeightRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetTargetResponse:
        view = await self._call(context, self.core.set_weight, request.job_id, request.weight)
        return pb.SetTargetResponse(job=job_to_proto(view))
