"""Fixtures: the real Perseus server (SQLite, migrated by Alembic), a plain gRPC server with just the BSO
servicer on a settable clock (lease tests), and a fresh database on the shared PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from bso_helpers import Clock, make_sqlite_engine, start_server
from sqlalchemy.orm import Session, sessionmaker

import perseus.bso.models  # noqa: F401 (registers the tables)
from perseus.db import Base
from perseus.v1 import bso_pb2_grpc


@pytest.fixture
def sqlite_sessions(tmp_path: Path) -> Iterator[Callable[[], Session]]:
    engine = make_sqlite_engine(tmp_path / "bso.db")
    Base.metadata.create_all(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def clock_server(sqlite_sessions: Callable[[], Session], clock: Clock) -> Iterator[str]:
    """Just the BSO servicer on a plain grpc.server, with a settable clock for lease expiry."""
    server, address = start_server(sqlite_sessions, clock)
    yield address
    server.stop(grace=None)


@pytest.fixture
def bso_server(tmp_path: Path) -> Iterator[str]:
    """The real Perseus server (all services; Alembic migrates the SQLite file) on 127.0.0.1."""
    from perseus.server.app import ServerConfig, ServerThread

    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'perseus.db'}")) as srv:
        yield f"127.0.0.1:{srv.port}"


@pytest.fixture
def stub(bso_server: str) -> Iterator[bso_pb2_grpc.BatchSizeOptimizerStub]:
    with grpc.insecure_channel(bso_server) as channel:
        yield bso_pb2_grpc.BatchSizeOptimizerStub(channel)


@pytest.fixture
def clock_stub(clock_server: str) -> Iterator[bso_pb2_grpc.BatchSizeOptimizerStub]:
    with grpc.insecure_channel(clock_server) as channel:
        yield bso_pb2_grpc.BatchSizeOptimizerStub(channel)

