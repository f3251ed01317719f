"""Building and running the Perseus gRPC server.

One place lists the services (:data:`SERVICERS`): the scheduler, the batch size optimizer when
:mod:`perseus.bso` is installed, plus standard health checking and server reflection. Before
serving, :mod:`perseus.server.startup` checks TLS files and the database (migrated to ``head``,
writable, one scheduler per SQLite file). Every call passes :mod:`perseus.server.guard` (bearer
token, undecodable bodies, stream limits) before any decoding. Binding beyond loopback needs a
token, and TLS for it, unless ``insecure``. ``metrics_port`` serves Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer
from grpc_reflection.v1alpha import reflection
from sqlalchemy.orm import Session, sessionmaker

from perseus.errors import InputError
from perseus.server.control import ControlConfig
from perseus.server.core import SchedulerCore
from perseus.server.db import session_factory
from perseus.server.guard import GuardInterceptor
from perseus.server.limits import Limits
from perseus.server.metrics import Metrics
from perseus.server.pool import PoolLimits
from perseus.server.service import SchedulerServicer
from perseus.server.startup import DatabaseLock, check_tls, open_database, sqlite_file
from perseus.v1 import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger("perseus.server")

DEFAULT_PORT = 7787


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``perseus serve`` takes."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: str = "sqlite:///perseus.db"
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    profile_dir: Path | None = None
    """Where assembled profiles are also written (``<dir>/<job_id>/profile.csv``)."""
    limits: Limits = field(default_factory=Limits)
    workers: int = 4
    metrics_port: int | None = None
    """Serve Prometheus metrics over HTTP on this port (0 picks a free one); None: no metrics."""
    metrics_host: str = "127.0.0.1"
    frontier: PoolLimits = field(default_factory=PoolLimits)
    """Frontier processes at once, and each one's time and memory limits."""
    control: ControlConfig = field(default_factory=ControlConfig)
    """The closed loop: automatic stragglers and drift detection."""

    def validate(self) -> None:
        self.frontier.validate()
        self.control.validate()
        if not 0 <= self.port <= 65535:
            raise InputError("--port", f"must be in [0, 65535], got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise InputError("--metrics-port", f"must be in [0, 65535], got {self.metrics_port}")
        self.limits.validate()
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise InputError("--token", "must be non-empty and contain no whitespace")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InputError("--tls-cert", "give both --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise InputError(str(path), "no such file")
        if not is_loopback(self.host) and not self.token and not self.insecure:
            raise InputError(
                "--host",
                f"refusing to serve on non-loopback address {self.host!r} without --token "
                "(anyone could change GPU clocks); pass --insecure to do it anyway",
            )
        if not is_loopback(self.host) and self.token and self.tls_cert is None and not self.insecure:
            raise InputError(
                "--host",
                f"refusing to send the bearer token in clear text on non-loopback address {self.host!r}: give "
                "--tls-cert and --tls-key, or pass --insecure (e.g. behind a TLS-terminating proxy)",
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------ services

@dataclass
class Hooks:
    """What a mounted service needs done when the server stops."""

    closers: list[Callable[[], None]] = field(default_factory=list)
    """Run after the gRPC server stopped, last added first."""
    enders: list[Callable[[float], Awaitable[None]]] = field(default_factory=list)
    """``await end(timeout)`` before the gRPC server stops: end long-lived streams, so none is cancelled."""


Mount = Callable[[grpc.aio.Server, SchedulerCore, "sessionmaker[Session]", Hooks], "str | None"]


def _mount_scheduler(
    server: grpc.aio.Server, core: SchedulerCore, sessions: sessionmaker[Session], hooks: Hooks
) -> str | None:
    servicer = SchedulerServicer(core)
    servicer.bind(asyncio.get_running_loop())
    hooks.closers.append(servicer.close)
    hooks.enders.append(servicer.end_streams)
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(servicer, server)
    return str(scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name)


def _mount_batch_size_optimizer(
    server: grpc.aio.Server, core: SchedulerCore, sessions: sessionmaker[Session], hooks: Hooks
) -> str | None:
    try:
        from perseus.bso.service import BatchSizeOptimizerServicer
        from perseus.v1 import bso_pb2, bso_pb2_grpc
    except ModuleNotFoundError:
        return None
    bso_pb2_grpc.add_BatchSizeOptimizerServicer_to_server(BatchSizeOptimizerServicer(sessions), server)
    return str(bso_pb2.DESCRIPTOR.services_by_name["BatchSizeOptimizer"].full_name)


#: Every service the server mounts; a mount returning None is not installed.
SERVICERS: tuple[Mount, ...] = (_mount_scheduler, _mount_batch_size_optimizer)


# ------------------------------------------------------------------ server


class PerseusServer:
    """The server's lifetime: ``await start()`` (returns the bound port), ``await stop()``."""

    def __init__(self, config: ServerConfig) -> None:
        config.validate()
        self.config = config
        self.port = 0
        self.core: SchedulerCore | None = None
        self._server: grpc.aio.Server | None = None
        self._health: AsyncHealthServicer | None = None
        self._hooks = Hooks()
        self._closers = self._hooks.closers
        self._sync_pool: ThreadPoolExecutor | None = None
        self.metrics: Metrics | None = None
        self.metrics_port = 0

    async def start(self) -> int:
        """Check, open and serve; returns the bound port. A failed start releases what it took."""
        try:
            return await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self) -> int:
        cfg = self.config
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            check_tls(cfg.tls_cert, cfg.tls_key)
        if not is_loopback(cfg.host) and (not cfg.token or cfg.tls_cert is None):
            log.warning("serving on %s %s (--insecure): anyone who can reach it can %s", cfg.host,
                        "without TLS" if cfg.token else "without a token",
                        "read the token" if cfg.token else "change GPU clocks")
        database = sqlite_file(cfg.db)
        if database is not None and database.parent.is_dir():
            lock = DatabaseLock(database)
            lock.acquire()
            self._closers.append(lock.release)
        engine = await asyncio.get_running_loop().run_in_executor(None, open_database, cfg.db, _redact(cfg.db))
        self._closers.append(engine.dispose)
        self.core = core = SchedulerCore(engine, profile_dir=cfg.profile_dir, limits=cfg.limits, pool=cfg.frontier,
                                         control=cfg.control)
        self._closers.append(core.close)
        guard = GuardInterceptor(cfg.token, cfg.limits)
        interceptors: list[grpc.aio.ServerInterceptor] = [guard]
        if cfg.metrics_port is not None:
            self.metrics = Metrics(core, session_factory(engine), lambda: guard.open_streams)
            interceptors.insert(0, self.metrics.interceptor)  # outermost: times refused calls too
            self._closers.append(self.metrics.close)
        # Synchronous servicers (the batch size optimizer) run in this pool.
        self._sync_pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="perseus-sync")
        self._server = server = grpc.aio.server(
            migration_thread_pool=self._sync_pool,
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", cfg.limits.max_message_bytes),
                ("grpc.max_send_message_length", cfg.limits.max_message_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ],
        )
        names = []
        for mount in SERVICERS:
            name = mount(server, core, session_factory(engine), self._hooks)
            if name is not None:
                names.append(name)
        self._health = AsyncHealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for name in ["", *names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
        )
        host = f"[{cfg.host}]" if ":" in cfg.host and not cfg.host.startswith("[") else cfg.host
        address = f"{host}:{cfg.port}"
        try:
            if cfg.tls_cert is not None and cfg.tls_key is not None:
                creds = grpc.ssl_server_credentials([(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())])
                self.port = server.add_secure_port(address, creds)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise InputError("--port", f"cannot bind {address}: {exc}") from None
        if self.port == 0:
            raise InputError("--port", f"cannot bind {address} (in use?)")
        await server.start()
        if self.metrics is not None and cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve(cfg.metrics_host, cfg.metrics_port)
            log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, self.metrics_port)
        log.info("serving %s on %s:%d; limits: %s", ", ".join(names), cfg.host, self.port, cfg.limits.describe())
        return self.port

    async def stop(self, grace: float = 1.0) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        for end in self._hooks.enders:
            await end(grace)
        self._hooks.enders.clear()
        if self._server is not None:
            await self._server.stop(grace)
        for close in reversed(self._closers):
            close()
        self._closers.clear()
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=False, cancel_futures=True)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def run(config: ServerConfig, *, announce: Callable[[str], None] = print) -> int:
    """Serve until SIGINT/SIGTERM (``perseus serve``)."""

    async def main() -> None:
        server = PerseusServer(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        port = await server.start()
        freeze_startup_objects()
        scheme = "tls" if config.tls_cert else "plaintext"
        metrics = f"; metrics on http://{config.metrics_host}:{server.metrics_port}/metrics" if server.metrics else ""
        announce(f"perseus: serving on {config.host}:{port} ({scheme}, db {_redact(config.db)}){metrics}")
        await stop.wait()
        await server.stop(grace=2.0)

    asyncio.run(main())
    return 0


def freeze_startup_objects() -> None:
    """Exempt what exists once the server runs from every later garbage collection (``gc.freeze``).

    Imports alone leave about 117,000 objects the collector tracks (grpc, SQLAlchemy, psycopg, protobuf
    and ours): a full collection walks them all, 60 ms on this 2-core machine, 159 ms measured inside
    the report benchmark, where it stopped every thread (the event loop and the report writer) and so
    was the slowest acknowledgement of the run. Modules, classes, functions and the jobs read at start
    live as long as the process; frozen, they are never walked again (garbage among them, if any, is
    never freed: a one-time cost). Collected first, so nothing already unreachable is kept.
    """
    gc.collect()
    gc.freeze()


def _redact(url: str) -> str:
    """The database URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<db>"


class ServerThread:
    """A real server on its own event loop in a background thread (tests, benchmarks, demos)."""

    def __init__(self, config: ServerConfig) -> None:
        self.server = PerseusServer(config)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="perseus-server", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def core(self) -> SchedulerCore:
        assert self.server.core is not None
        return self.server.core

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    def stop(self, grace: float = 0.5) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.stop(grace), self._loop)
        future.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
