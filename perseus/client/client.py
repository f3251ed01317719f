"""``PerseusClient``: a small synchronous client of the ``perseus.v1.Scheduler`` service.

Every call is idempotent on the server (jobs and ranks re-register, reports are keyed), so the
client retries UNAVAILABLE (server restarting, network blip) with backoff for up to
``retry_timeout`` seconds; ``watch_schedule`` reconnects the same way. Given several servers
(replicas on one database, ``"a:7787,b:7787"``), it fails over to the next one on UNAVAILABLE
and backs off only after trying them all. Other errors raise :class:`PerseusRpcError`, a
:class:`~perseus.errors.PerseusError` the CLI prints as one line.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from perseus.client.stream import ReportStream, to_proto
from perseus.client.types import (
    PHASE_NAMES,
    FrontierInfo,
    JobInfo,
    PlanInfo,
    PowerCapInfo,
    ProfileAck,
    ProfilingStep,
    ReportAck,
    ServedSchedule,
    Target,
)
from perseus.errors import PerseusError
from perseus.profile import PipelineProfile
from perseus.profile.io import format_profile
from perseus.reports import IterationReport
from perseus.v1 import scheduler_pb2 as pb
from perseus.v1 import scheduler_pb2_grpc as pb_grpc

DEFAULT_PORT = 7787
DEFAULT_TARGET = f"127.0.0.1:{DEFAULT_PORT}"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_RECONNECT_BACKOFF_MS = 5000
FRONTIER_PAGE_SIZE = 100_000
"""Plans asked per GetFrontier page: the server's largest; its byte cap (4 MiB by default) ends a page sooner."""
T = TypeVar("T")


MAX_READ_BACK = 16
"""Read-back clocks sent with a clock that did not hold: the server's limit (perseus.server.sweep)."""


class PerseusRpcError(PerseusError):
    """A call the server rejected (or could not be reached within the retry window)."""

    def __init__(self, target: str, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"server {target}: {code.name}: {details}")


class _FailoverStub:
    """A Scheduler stub over several servers: each call goes to the current one; :meth:`failover` moves on."""

    def __init__(self, channels: Sequence[grpc.Channel]) -> None:
        self._stubs = [pb_grpc.SchedulerStub(channel) for channel in channels]
        self.index = 0

    def failover(self) -> bool:
        """Switch to the next server; True when a full round of servers has been tried."""
        self.index = (self.index + 1) % len(self._stubs)
        return self.index == 0

    def method(self, name: str) -> Any:
        """The current server's multi-callable ``name`` (for streams, which stay on one server)."""
        return getattr(self._stubs[self.index], name)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(self._stubs[self.index], name)(*args, **kwargs)

        return call


def parse_targets(target: str | Sequence[str]) -> tuple[str, ...]:
    """``"a:1,b:2"`` or ``["a:1", "b:2"]`` as a tuple of ``host:port`` (empty entries dropped)."""
    items = target.split(",") if isinstance(target, str) else list(target)
    targets = tuple(_with_port(t.strip()) for t in items if t.strip())
    if not targets:
        raise PerseusError(f"no Perseus server given in {target!r}")
    return targets


def _with_port(target: str) -> str:
    """``host`` alone means the server's default port (gRPC itself would dial 443); ``host:port`` stays."""
    if target.startswith("["):  # [IPv6]:port or [IPv6]
        return target if "]:" in target else f"{target}:{DEFAULT_PORT}"
    if target.count(":") == 1:  # host:port (or unix:PATH)
        return target
    return f"[{target}]:{DEFAULT_PORT}" if ":" in target else f"{target}:{DEFAULT_PORT}"


class PerseusClient:
    """Talks to a Perseus server, or to several replicas of one with failover.

    Args:
        target: ``host:port`` of the server, or several, comma-separated or as a list (default env
            ``PERSEUS_SERVER`` or 127.0.0.1:7787).
        token: Bearer token (default env ``PERSEUS_TOKEN``).
        tls: Use TLS; ``tls_ca`` is the CA certificate file to trust (system roots if None).
        retry_timeout: How long to keep retrying while the server is UNAVAILABLE.
        timeout: Per-call deadline in seconds.
    """

    def __init__(
        self,
        target: str | Sequence[str] | None = None,
        token: str | None = None,
        *,
        tls: bool = False,
        tls_ca: str | Path | None = None,
        retry_timeout: float = 30.0,
        timeout: float = 30.0,
    ) -> None:
        self.targets = parse_targets(target or os.environ.get("PERSEUS_SERVER") or DEFAULT_TARGET)
        token = token if token is not None else os.environ.get("PERSEUS_TOKEN") or None
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.retry_timeout = retry_timeout
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # gRPC's default reconnect backoff grows to 120 s: a restarted server would go unnoticed that long.
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ]
        if tls or tls_ca is not None:
            root = Path(tls_ca).read_bytes() if tls_ca is not None else None
            self._channels = [grpc.secure_channel(t, grpc.ssl_channel_credentials(root), options=options)
                              for t in self.targets]
        else:
            self._channels = [grpc.insecure_channel(t, options=options) for t in self.targets]
        self._stub = _FailoverStub(self._channels)

    @property
    def target(self) -> str:
        """The server the next call goes to."""
        return self.targets[self._stub.index]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> PerseusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ calls

    def _call(self, method: Callable[..., T], request: Any) -> T:
        deadline = time.monotonic() + self.retry_timeout
        delay = 0.05
        while True:
            try:
                return method(request, timeout=self.timeout, metadata=self._metadata, wait_for_ready=False)
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() + delay < deadline:
                    delay = self._next_server(delay)
                    continue
                raise PerseusRpcError(self.target, code, exc.details() or "") from None

    def _next_server(self, delay: float) -> float:
        """Fail over to the next server, backing off once every server was tried; returns the next delay."""
        if not self._stub.failover():
            return delay
        time.sleep(delay)
        return min(delay * 2, 1.0)

    def register_job(
        self,
        *,
        num_stages: int,
        num_microbatches: int,
        schedule: str = "1f1b",
        job_id: str = "",
        model: str = "",
        partition: str = "",
        num_chunks: int = 1,
        dp_degree: int = 1,
        tp_degree: int = 1,
        blocking_power: float = 0.0,
        profile: PipelineProfile | str | None = None,
        warmup_iterations: int = 0,
        measure_iterations: int = 0,
        early_stop_rises: int = 0,
        frequencies: Sequence[int] = (),
        target: Target | None = None,
    ) -> JobInfo:
        """Create a job (idempotent for the same ``job_id`` and spec).

        ``profile`` (a PipelineProfile or its CSV text) skips profiling; its blocking power is used
        unless ``blocking_power`` is given. Without it the job starts in profiling mode.
        """
        if not job_id:
            # Chosen here, not by the server, so a retried call cannot create two jobs.
            stem = re.sub(r"[^A-Za-z0-9._-]", "-", model)[:40].strip("-.") or "job"
            job_id = f"{stem}-{uuid.uuid4().hex[:8]}"
        profile_csv = ""
        if isinstance(profile, PipelineProfile):
            profile_csv = format_profile((p.stage, p.instruction, m) for p in profile for m in p.measurements)
            blocking_power = blocking_power or profile.blocking_power
        elif profile:
            profile_csv = profile
        request = pb.RegisterTrainingJobRequest(
            job_id=job_id, model=model, partition=partition, schedule=schedule, num_stages=num_stages,
            num_microbatches=num_microbatches, num_chunks=num_chunks, dp_degree=dp_degree, tp_degree=tp_degree,
            blocking_power=blocking_power, profile_csv=profile_csv,
            profiling=pb.ProfilingConfig(warmup_iterations=warmup_iterations, measure_iterations=measure_iterations,
                                         early_stop_rises=early_stop_rises, frequencies=list(frequencies)),
        )
        if target is not None:
            request.target.CopyFrom(target.to_proto())
        return JobInfo.from_proto(self._call(self._stub.RegisterJob, request).job)

    def register_rank(
        self,
        job_id: str,
        rank: int,
        stage: int,
        supported_frequencies: Sequence[int],
        *,
        pipeline_id: int = 0,
        gpu_name: str = "",
        schedule: str = "",
        num_microbatches: int = 0,
    ) -> ServedSchedule:
        """Register (or re-register) a rank; returns its current schedule."""
        request = pb.RegisterRankRequest(
            job_id=job_id, rank=rank, stage=stage, pipeline_id=pipeline_id, gpu_name=gpu_name,
            supported_frequencies=list(supported_frequencies), schedule=schedule, num_microbatches=num_microbatches,
        )
        return ServedSchedule.from_proto(self._call(self._stub.RegisterRank, request).schedule)

    def get_schedule(self, job_id: str, rank: int) -> ServedSchedule:
        """The rank's current schedule (a :class:`~perseus.plan.PowerStateSchedule` with extras)."""
        return ServedSchedule.from_proto(self._call(self._stub.GetSchedule, pb.GetScheduleRequest(job_id=job_id, rank=rank)))

    def watch_schedule(self, job_id: str, rank: int) -> Iterator[ServedSchedule]:
        """The rank's schedule now and after every change; reconnects across server restarts.

        Stop by closing the generator (or the client).
        """
        request = pb.GetScheduleRequest(job_id=job_id, rank=rank)
        last: tuple[Any, ...] | None = None
        failing_since: float | None = None
        delay = 0.05
        while True:
            try:
                for msg in self._stub.WatchSchedule(request, metadata=self._metadata):
                    failing_since, delay = None, 0.05
                    schedule = ServedSchedule.from_proto(msg)
                    key = (schedule.mode, schedule.plan_id, schedule.plan_name, schedule.instructions,
                           schedule.power_limit, schedule.profiling, schedule.phase)
                    if key != last:  # a reconnect re-sends the current schedule
                        last = key
                        yield schedule
                return
            except grpc.RpcError as exc:
                code = exc.code()
                now = time.monotonic()
                failing_since = failing_since or now
                if code == grpc.StatusCode.UNAVAILABLE and now - failing_since < self.retry_timeout:
                    delay = self._next_server(delay)
                    continue
                if code == grpc.StatusCode.CANCELLED:
                    return
                raise PerseusRpcError(self.target, code, exc.details() or "") from None

    def report_profile(
        self, job_id: str, rank: int, frequency: int, measurements: Mapping[str, tuple[float, float]],
        *, not_held: bool = False, read_back: Sequence[int] = (), counter_flat_s: float = 0.0,
    ) -> ProfileAck:
        """Per-instruction-kind ``{"forward": (time_s, energy_j), ...}`` measured at ``frequency``.

        ``not_held``: the rank could not hold ``frequency`` (``measurements`` empty; ``read_back``: the
        clocks the GPU ran at instead; the first :data:`MAX_READ_BACK` are sent); the server drops it
        from the stage's sweep. ``counter_flat_s``: the rank held it, but the GPU's energy counter did
        not advance over a window this long (``measurements`` empty); the server fails the profiling.
        """
        request = pb.ReportProfileRequest(
            job_id=job_id, rank=rank, frequency=frequency,
            measurements=[pb.InstructionMeasurement(instruction=k, time=t, energy=e)
                          for k, (t, e) in measurements.items()],
            not_held=not_held, read_back_mhz=list(read_back)[:MAX_READ_BACK], counter_flat_s=counter_flat_s,
        )
        reply = self._call(self._stub.ReportProfile, request)
        return ProfileAck(ProfilingStep.from_proto(reply.next), PHASE_NAMES.get(reply.job_phase, "unknown"),
                          reply.version)

    def report_iteration(
        self, job_id: str, rank: int, iteration: int, time_s: float, energy: float, plan_name: str = "",
        run_id: str = "", *, busy_time: float = 0.0, busy_energy: float = 0.0, measure_only: bool = False,
        clock_mhz: float = 0.0, planned_instructions: int = 0, at_planned_clock: int = 0,
    ) -> int:
        """Store one iteration's time and energy (and what the GPU did, read back; see
        :class:`~perseus.reports.IterationReport`); returns the job's schedule version."""
        request = pb.ReportIterationRequest(job_id=job_id, rank=rank, iteration=iteration, time=time_s,
                                            energy=energy, plan_name=plan_name, run_id=run_id,
                                            busy_time=busy_time, busy_energy=busy_energy, measure_only=measure_only, clock_mhz=clock_mhz,
                                            planned_instructions=planned_instructions,
                                            at_planned_clock=at_planned_clock)
        return int(self._call(self._stub.ReportIteration, request).version)

    def report_iterations(self, job_id: str, run_id: str, reports: Sequence[IterationReport]) -> ReportAck:
        """Store a batch of one run's iteration reports (at most 4096) in one call."""
        request = pb.ReportIterationsRequest(job_id=job_id, run_id=run_id, reports=[to_proto(r) for r in reports])
        reply = self._call(self._stub.ReportIterations, request)
        return ReportAck(reply.version, reply.stored, reply.duplicates)

    def open_report_stream(self) -> ReportStream:
        """A ``StreamReports`` stream to the current server (see :mod:`perseus.client.stream`)."""
        return ReportStream(self._stub.method("StreamReports"), self._metadata, self.timeout)

    def failover(self) -> None:
        """Send the next calls to the next server of the list (a stream's server went away)."""
        self._stub.failover()

    def set_target(self, job_id: str, target: Target, *, nearest: bool = False) -> JobInfo:
        """Choose the job's plan; ``nearest`` runs the closest plan when no plan meets a deadline or budget."""
        request = pb.SetTargetRequest(job_id=job_id, target=target.to_proto(), nearest=nearest)
        return JobInfo.from_proto(self._call(self._stub.SetTarget, request).job)

    def set_weight(self, job_id: str, weight: float) -> JobInfo:
        """How much the job's slowdown counts under the cluster power cap (default 1)."""
        request = pb.SetJobWeightRequest(job_id=job_id, weight=weight)
        return JobInfo.from_proto(self._call(self._stub.SetJobWeight, request).job)

    def set_power_cap(self, watts: float | None) -> PowerCapInfo:
        """Cap the summed planned power of the server's serving jobs at ``watts`` (None: clear the cap)."""
        request = pb.SetPowerCapRequest(watts=watts or 0.0, clear=watts is None)
        return PowerCapInfo.from_proto(self._call(self._stub.SetPowerCap, request))

    def get_power_cap(self) -> PowerCapInfo:
        return PowerCapInfo.from_proto(self._call(self._stub.GetPowerCap, pb.GetPowerCapRequest()))

    def delete_job(self, job_id: str) -> JobInfo:
        """Delete a job with its ranks, plans and reports; returns the job as it was."""
        return JobInfo.from_proto(self._call(self._stub.DeleteJob, pb.DeleteJobRequest(job_id=job_id)).job)

    def reprofile_job(self, job_id: str) -> JobInfo:
        """Drop the job's profile and frontier and sweep its frequencies again."""
        return JobInfo.from_proto(self._call(self._stub.ReprofileJob, pb.ReprofileJobRequest(job_id=job_id)).job)

    def report_straggler(self, job_id: str, pipeline_id: int, factor: float) -> tuple[JobInfo, str]:
        """Pipeline ``pipeline_id`` runs ``factor`` x slower (1.0: recovered); returns (job, others' plan)."""
        request = pb.ReportStragglerRequest(job_id=job_id, pipeline_id=pipeline_id, factor=factor)
        reply = self._call(self._stub.ReportStraggler, request)
        return JobInfo.from_proto(reply.job), reply.others_plan_name

    def get_frontier(
        self,
        job_id: str,
        include_plans: bool = False,
        names: Sequence[str] = (),
        progress: Callable[[int, int], None] | None = None,
    ) -> FrontierInfo:
        """The job's frontier, fastest plan first: every plan (or those named ``names``), fetched page by
        page (a frontier of large plans does not fit one message); ``progress(done, total)`` after each page.
        With ``include_plans`` every plan is decoded and held: for thousands of large plans, prefer
        :meth:`frontier_pages`."""
        plans: list[PlanInfo] = []
        last = pb.GetFrontierResponse(job_id=job_id)
        for page in self.frontier_pages(job_id, include_plans, names):
            plans += [PlanInfo.from_proto(p) for p in page.plans]
            last = page
            if progress is not None:
                progress(len(plans), page.total_plans)
        return FrontierInfo.from_proto(last, plans)

    def frontier_pages(
        self, job_id: str, include_plans: bool = False, names: Sequence[str] = ()
    ) -> Iterator[pb.GetFrontierResponse]:
        """Every page of GetFrontier, in order (README: GetFrontier pages); raises if the frontier changes meanwhile."""
        request = pb.GetFrontierRequest(job_id=job_id, include_plans=include_plans, page_size=FRONTIER_PAGE_SIZE,
                                        plan_names=list(names))
        done = 0
        while True:
            page = self._call(self._stub.GetFrontier, request)
            if page.first_index != done or done + len(page.plans) > page.total_plans:
                raise PerseusError(f"server {self.target}: GetFrontier page of job {job_id!r} starts at plan "
                                   f"{page.first_index}, expected {done} (of {page.total_plans})")
            if page.next_page_token and not page.plans:
                raise PerseusError(f"server {self.target}: empty GetFrontier page of job {job_id!r} before its end")
            done += len(page.plans)
            yield page
            if not page.next_page_token:
                if done != page.total_plans:
                    raise PerseusError(f"server {self.target}: GetFrontier of job {job_id!r} ended after {done} of "
                                       f"{page.total_plans} plans")
                return
            request.page_token = page.next_page_token

    def list_jobs(self, job_ids: Sequence[str] = ()) -> list[JobInfo]:
        reply = self._call(self._stub.ListJobs, pb.ListJobsRequest(job_ids=list(job_ids)))
        return [JobInfo.from_proto(j) for j in reply.jobs]

    def get_job(self, job_id: str) -> JobInfo:
        return self.list_jobs([job_id])[0]

    def wait_for_phase(self, job_id: str, phases: str | Sequence[str], timeout: float = 120.0) -> JobInfo:
        """Poll until the job reaches one of ``phases`` (or fails)."""
        wanted = {phases} if isinstance(phases, str) else set(phases)
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.phase in wanted:
                return job
            if job.phase == "failed":
                raise PerseusError(f"job {job_id} failed: {job.error}")
            if time.monotonic() > deadline:
                raise PerseusError(f"job {job_id} still {job.phase} after {timeout:g} s")
            time.sleep(0.05)
