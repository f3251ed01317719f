"""Fixtures every test directory shares: a throwaway PostgreSQL cluster.

PostgreSQL comes from Debian's packages, installed before pytest starts (``bash run.sh test``
does it); the fixture only starts a cluster. Missing PostgreSQL fails the tests that need it
under CI (``CI=true``, set by ``.ci/run``) and skips them, with the reason, on a developer's
machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_HINT = "apt-get install -y postgresql, or run the suite with `bash run.sh test`, which installs it"


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
        pytest.fail(f"PostgreSQL: {what} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (temp data dir, unix socket there, 127.0.0.1 on a free port)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        reason = f"PostgreSQL is not installed (no initdb/pg_ctl in /usr/lib/postgresql/*/bin or on PATH): {INSTALL_HINT}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="perseus-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = _free_port()
    try:
        _run([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], "initdb")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run([pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"], "pg_ctl start")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True,
                           timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)
