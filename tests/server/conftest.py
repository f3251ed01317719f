"""Fixtures of the server tests: a real server on 127.0.0.1, shipped profiles, a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import free_port, profile_slice, scratch_database

from perseus.client import PerseusClient
from perseus.profile import PipelineProfile
from perseus.server.app import ServerConfig, ServerThread


@pytest.fixture(scope="session")
def profile4() -> PipelineProfile:
    """GPT-3 175B on A100, first 4 stages, every 2nd frequency (19 clocks): small but real."""
    return profile_slice(4, freq_step=2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'perseus.db'}")) as srv:
        yield srv


@pytest.fixture
def client(server: ServerThread) -> Iterator[PerseusClient]:
    with PerseusClient(f"127.0.0.1:{server.port}", retry_timeout=5) as c:
        yield c


# -- PostgreSQL from Debian ----------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return shutil.which(name)


def _ensure_postgres() -> tuple[str, str] | str:
    """(initdb, pg_ctl), installing Debian's postgresql if needed; a reason string if impossible."""
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            return "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
            result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            if result.returncode:
                return f"could not install postgresql: {' '.join(cmd)} failed: {result.stderr.strip()[-300:]}"
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        return "postgresql installed but initdb/pg_ctl not found under /usr/lib/postgresql/*/bin"
    return initdb, pg_ctl


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (tmp data dir, unix socket there, 127.0.0.1 on a free port)."""
    found = _ensure_postgres()
    if isinstance(found, str):
        pytest.skip(found)
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'perseus[postgres]')")
    initdb, pg_ctl = found
    base = Path(tempfile.mkdtemp(prefix="perseus-server-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL cluster (servers migrate it on start)."""
    with scratch_database(postgres_url, "perseus") as url:
        yield url
