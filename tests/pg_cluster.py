"""Throwaway PostgreSQL clusters and scratch databases, for the test fixtures and the benchmarks.

PostgreSQL comes from Debian's packages (``bash run.sh test`` installs them); this only starts a
cluster in a temporary folder (socket there, 127.0.0.1 on a free port) and removes it afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL_HINT = "apt-get install -y postgresql, or run the suite with `bash run.sh test`, which installs it"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed, or its cluster would not start; the message says which."""


def _pg_bin(name: str) -> str | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return shutil.which(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=120, check=False)
    if result.returncode:
        raise PostgresUnavailable(f"PostgreSQL: {what} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")


def installed() -> bool:
    return bool(_pg_bin("initdb") and _pg_bin("pg_ctl"))


@contextmanager
def throwaway_cluster(*, fsync: bool = True) -> Iterator[str]:
    """The SQLAlchemy URL of a new cluster's ``postgres`` database; the cluster is gone afterwards.

    ``fsync=False`` is for tests, which never need their data after a crash of the machine.
    """
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise PostgresUnavailable(
            f"PostgreSQL is not installed (no initdb/pg_ctl in /usr/lib/postgresql/*/bin or on PATH): {INSTALL_HINT}")
    base = Path(tempfile.mkdtemp(prefix="perseus-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = _free_port()
    try:
        _run([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], "initdb")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1" + ("" if fsync else " -c fsync=off")
        _run([pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"], "pg_ctl start")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True,
                           timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def scratch_database(cluster_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database on a PostgreSQL cluster, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(cluster_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(cluster_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
