"""Fixtures: the real Perseus server (SQLite, migrated by Alembic), a plain gRPC server with just the BSO
servicer on a settable clock (lease tests), and PostgreSQL for the replica tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from bso_helpers import Clock, free_port, make_sqlite_engine, start_server
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


# -- PostgreSQL ---------------------------------------------------------------------------------------


def _server_tests_postgres() -> Any:
    """The control plane's session PostgreSQL fixture (tests/server/conftest.py), if it loads."""
    path = Path(__file__).resolve().parents[1] / "server" / "conftest.py"
    try:
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location("perseus_server_tests_conftest", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.postgres_url
    except Exception:
        return None


def _pg_bin(name: str) -> str | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return shutil.which(name)


def _as_postgres(args: list[str]) -> list[str]:
    """initdb/postgres refuse to run as root: run them as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def _own_postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster in a temp dir on a free 127.0.0.1 port (skips if not installed)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    pytest.importorskip("psycopg")
    base = Path(tempfile.mkdtemp(prefix="perseus-bso-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"]),
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


_shared = _server_tests_postgres()
if _shared is not None:
    postgres_url = _shared  # reuse the control plane's fixture (one definition of how to start PostgreSQL)
else:

    @pytest.fixture(scope="session")
    def postgres_url(_own_postgres_url: str) -> str:
        return _own_postgres_url


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the shared cluster (the servers migrate it themselves)."""
    from server_helpers import scratch_database  # tests/server, on sys.path via _server_tests_postgres

    with scratch_database(postgres_url, "bso") as url:
        yield url
