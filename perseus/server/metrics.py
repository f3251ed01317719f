"""Prometheus metrics of a Perseus server (``perseus serve --metrics-port``).

Per job, read at scrape time: the plan it serves and that plan's expected iteration time and
energy, the measured time and energy of the latest iteration each rank reported, the energy saved
against running every instruction at the highest clock (planned and measured), and how long ago
the newest report arrived. Per RPC method and status code: a latency histogram, filled by
:class:`MetricsInterceptor`. Measured values come from tailing the iteration report table, so every
replica on one database exports the same job numbers.

Energies are joules per iteration of one pipeline: the sum over the job's reporting ranks divided
by its number of pipelines (``dp_degree``), the unit of the plans' expected energy.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from perseus.errors import InputError
from perseus.server import models as m
from perseus.server.core import SchedulerCore
from perseus.server.guard import HandlerInterceptor
from perseus.server.types import JobView

log = logging.getLogger("perseus.server")

#: RPC latency buckets (seconds): sub-millisecond reads up to multi-second profile uploads.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Reports read per scrape at most; a backlog beyond it is caught up over the next scrapes.
TAIL_BATCH = 100_000


@dataclass(frozen=True)
class _Latest:
    iteration: int
    time: float
    energy: float
    received_at: float


class ReportTail:
    """The latest iteration report of every (job, rank), kept by reading only rows added since last time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._after: int | None = None
        self.latest: dict[str, dict[int, _Latest]] = {}

    def refresh(self, live_jobs: set[str]) -> None:
        r = m.IterationReportRow
        with self._sessions() as s:
            if self._after is None:  # first scrape: the newest rows suffice for "latest per rank"
                newest = s.scalar(select(r.id).order_by(r.id.desc()).limit(1)) or 0
                self._after = max(0, newest - TAIL_BATCH)
            rows = s.execute(select(r.id, r.job_id, r.rank, r.iteration, r.time, r.energy, r.created_at)
                             .where(r.id > self._after).order_by(r.id).limit(TAIL_BATCH)).all()
        for row_id, job_id, rank, iteration, t, e, created in rows:
            ranks = self.latest.setdefault(job_id, {})
            seen = ranks.get(rank)
            if seen is None or iteration >= seen.iteration:
                ranks[rank] = _Latest(iteration, t, e, created)
            self._after = row_id
        for gone in set(self.latest) - live_jobs:  # deleted jobs
            del self.latest[gone]


class JobCollector(Collector):
    """Builds the per-job metric families on every scrape."""

    def __init__(self, core: SchedulerCore, sessions: sessionmaker[Session], open_streams: Callable[[], int],
                 clock: Callable[[], float] = time.time) -> None:
        self._core = core
        self._tail = ReportTail(sessions)
        self._open_streams = open_streams
        self._clock = clock
        self._all_max: dict[str, tuple[str, float]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        views = self._core.list_jobs()
        self._tail.refresh({v.spec.job_id for v in views})
        now = self._clock()
        job = ["job"]
        phases = GaugeMetricFamily("perseus_jobs", "Jobs by phase.", labels=["phase"])
        info = GaugeMetricFamily("perseus_job_plan_info", "The plan each job serves (value 1).",
                                 labels=["job", "phase", "target", "plan"])
        planned_t = GaugeMetricFamily("perseus_job_planned_iteration_seconds",
                                      "Expected iteration time of the served plan.", labels=job)
        planned_e = GaugeMetricFamily("perseus_job_planned_iteration_energy_joules",
                                      "Expected energy per iteration of one pipeline under the served plan.",
                                      labels=job)
        measured_t = GaugeMetricFamily("perseus_job_iteration_seconds",
                                       "Measured iteration time (slowest rank's latest report).", labels=job)
        measured_e = GaugeMetricFamily("perseus_job_iteration_energy_joules",
                                       "Measured energy per iteration of one pipeline (latest reports).",
                                       labels=job)
        savings = GaugeMetricFamily("perseus_job_energy_savings_ratio",
                                    "Energy saved against every instruction at the highest clock (0.1 = 10%).",
                                    labels=["job", "source"])
        lag = GaugeMetricFamily("perseus_job_report_lag_seconds", "Seconds since the job's newest iteration report.",
                                labels=job)
        reports = CounterMetricFamily("perseus_job_iteration_reports", "Iteration reports stored.", labels=job)
        drifted = GaugeMetricFamily("perseus_job_drifted", "1 while the closed loop finds the job drifted "
                                    "(state: replanning, replanned or reprofile), else 0.", labels=["job", "state"])
        stragglers = GaugeMetricFamily("perseus_job_stragglers", "Straggling pipelines, by who set them.",
                                       labels=["job", "source"])
        counts: dict[str, int] = {}
        for view in views:
            job_id = view.spec.job_id
            counts[view.phase] = counts.get(view.phase, 0) + 1
            info.add_metric([job_id, view.phase, view.target.describe(), view.plan_name or "-"], 1)
            reports.add_metric([job_id], view.num_iteration_reports)
            drifted.add_metric([job_id, view.drift or "none"], 1 if view.drift else 0)
            auto = len(view.auto_stragglers)
            stragglers.add_metric([job_id, "auto"], auto)
            stragglers.add_metric([job_id, "manual"], len(view.stragglers) - auto)
            all_max = self._all_max_energy(view)
            if view.plan_name:
                planned_t.add_metric([job_id], view.plan_iteration_time)
                planned_e.add_metric([job_id], view.plan_energy)
                if all_max:
                    savings.add_metric([job_id, "planned"], 1.0 - view.plan_energy / all_max)
            latest = self._tail.latest.get(job_id)
            if latest:
                energy = sum(x.energy for x in latest.values()) / view.spec.dp_degree
                measured_t.add_metric([job_id], max(x.time for x in latest.values()))
                measured_e.add_metric([job_id], energy)
                lag.add_metric([job_id], max(0.0, now - max(x.received_at for x in latest.values())))
                if all_max:
                    savings.add_metric([job_id, "measured"], 1.0 - energy / all_max)
        for phase, count in sorted(counts.items()):
            phases.add_metric([phase], count)
        streams = GaugeMetricFamily("perseus_watch_streams_open", "Open WatchSchedule streams.")
        streams.add_metric([], self._open_streams())
        yield from (phases, info, planned_t, planned_e, measured_t, measured_e, savings, lag, reports, drifted, stragglers,
                    streams)
        yield from self._cap()

    def _cap(self) -> Iterator[GaugeMetricFamily]:
        """The cluster power cap: its watts, the planned and measured totals, whether it is met, its gap."""
        cap = self._core.power_cap()
        power = GaugeMetricFamily("perseus_job_power_watts", "Average power of a serving job over all pipelines.",
                                  labels=["job", "source"])
        for j in cap.jobs:
            power.add_metric([j.job_id, "planned"], j.planned_power)
            if j.measured_power:
                power.add_metric([j.job_id, "measured"], j.measured_power)
        totals = GaugeMetricFamily("perseus_power_cap_total_watts", "Summed power of the serving jobs.",
                                   labels=["source"])
        totals.add_metric(["planned"], cap.planned_power)
        totals.add_metric(["measured"], cap.measured_power)
        yield from (power, totals)
        if cap.watts is None:
            return
        watts = GaugeMetricFamily("perseus_power_cap_watts", "The cluster power cap (absent: no cap).")
        watts.add_metric([], cap.watts)
        met = GaugeMetricFamily("perseus_power_cap_feasible", "1 when the cap can be met, 0 when it cannot.")
        met.add_metric([], 1.0 if cap.status.feasible else 0.0)
        gap = GaugeMetricFamily("perseus_power_cap_optimality_gap",
                                "Weighted slowdown above the lower bound (0 when solved exactly).")
        gap.add_metric([], cap.status.weighted_slowdown - cap.status.lower_bound)
        yield from (watts, met, gap)

    def _all_max_energy(self, view: JobView) -> float | None:
        """Energy per iteration with every instruction at its highest clock (cached per profile)."""
        from perseus.profile import parse_profile
        from perseus.server.baselines import build_baseline

        job_id = view.spec.job_id
        csv = self._core.profile_of(job_id)
        if not csv:
            return None
        cached = self._all_max.get(job_id)
        if cached is not None and cached[0] == csv:
            return cached[1]
        spec = view.spec
        try:
            profile = parse_profile(csv, source=job_id, blocking_power=spec.blocking_power,
                                    num_stages=spec.num_stages)
            energy = build_baseline(profile, spec.schedule, spec.num_stages, spec.num_microbatches,
                                    spec.num_chunks, "max-frequency").plan.energy
        except InputError as exc:
            log.warning("metrics: job %s: no all-max baseline (%s)", job_id, exc)
            return None
        self._all_max[job_id] = (csv, energy)
        return energy


class MetricsInterceptor(HandlerInterceptor):
    """Times every unary RPC into ``perseus_rpc_duration_seconds{method, code}``."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    def wrap(self, handler: Any, method: str, metadata: Any) -> Any:
        if handler.stream_stream:
            return self._per_message(handler, method.lstrip("/"))
        if not handler.unary_unary:
            return handler  # streams live for hours: their duration is no latency
        method = method.lstrip("/")
        behavior = handler.unary_unary
        observe = self._histogram.labels

        def record(started: float, context: Any, failed: bool) -> None:
            code = (context.code() if failed else None) or (grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK)
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            observe(method, name).observe(time.perf_counter() - started)

        if inspect.iscoroutinefunction(behavior):
            async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started, failed = time.perf_counter(), True
                try:
                    response = await behavior(request, context)
                    failed = False
                    return response
                finally:
                    record(started, context, failed)
        else:
            def timed(request: Any, context: Any) -> Any:  # type: ignore[misc]
                started, failed = time.perf_counter(), True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    record(started, context, failed)

        return grpc.unary_unary_rpc_method_handler(timed, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


    def _per_message(self, handler: Any, method: str) -> Any:
        """A request-and-answer stream (StreamReports): each message is timed from its arrival to its answer.

        The answer's ``code`` field (0: OK) labels it; answers come in order, one per message.
        """
        behavior = handler.stream_stream
        observe = self._histogram.labels

        async def timed(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            arrived: deque[float] = deque()

            async def stamped() -> AsyncIterator[Any]:
                async for request in requests:
                    arrived.append(time.perf_counter())
                    yield request

            async for reply in behavior(stamped(), context):
                if arrived:
                    code = _CODE_NAMES.get(getattr(reply, "code", 0), "UNKNOWN")
                    observe(method, code).observe(time.perf_counter() - arrived.popleft())
                yield reply

        return grpc.stream_stream_rpc_method_handler(timed, request_deserializer=handler.request_deserializer,
                                                     response_serializer=handler.response_serializer)


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class Metrics:
    """The server's metric registry, its RPC interceptor and its HTTP endpoint."""

    def __init__(self, core: SchedulerCore, sessions: sessionmaker[Session], open_streams: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        histogram = Histogram("perseus_rpc_duration_seconds", "Server-side latency of unary RPCs "
                              "and of each StreamReports batch (arrival to acknowledgement).",
                              ["method", "code"], buckets=RPC_BUCKETS, registry=self.registry)
        self.interceptor = MetricsInterceptor(histogram)
        self.registry.register(JobCollector(core, sessions, open_streams))
        self._httpd: Any = None

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP on a background thread; returns the bound port."""
        try:
            self._httpd, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise InputError("--metrics-port", f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
        return int(self._httpd.server_port)

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
