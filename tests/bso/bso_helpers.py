"""Helpers shared by the BSO tests: engines, a settable clock and a plain gRPC server with the servicer."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from perseus.bso.service import BatchSizeOptimizerServicer, add_to_server
from perseus.server.db import make_engine


def make_sqlite_engine(path: Path) -> Engine:
    """The control plane's engine setup (WAL, busy timeout) on a SQLite file."""
    return make_engine(f"sqlite:///{path}")


class Clock:
    """A settable clock for lease tests (seconds since the epoch)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def start_server(sessions: Callable[[], Session], clock: Callable[[], float] = time.time) -> tuple[grpc.Server, str]:
    """A plain gRPC server with just the BSO servicer on a free 127.0.0.1 port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    add_to_server(BatchSizeOptimizerServicer(sessions, clock=clock), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
