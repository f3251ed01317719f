"""Operator errors at start-up: one clear line and exit status 2, never a traceback or a half-working server."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from server_helpers import ROOT, ServerProcess, free_port

from perseus.server.app import ServerConfig, ServerThread
from perseus.server.startup import open_database, sqlite_file


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perseus.server", "--port", "0", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def assert_refused(result: subprocess.CompletedProcess[str], expected: str) -> str:
    """Exit status 2 with exactly one stderr line, ``perseus: error: <expected...>``; returns the line."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"perseus: error: {expected}"), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    return lines[0]


def test_missing_database_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert_refused(serve("--db", f"sqlite:///{missing / 'perseus.db'}"),
                   f"--db: directory {missing} does not exist (create it, or point --db elsewhere)")
    assert not missing.exists()


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not SQLite\n" * 100)
    assert_refused(serve("--db", f"sqlite:///{path}"),
                   f"--db: {path} is not a SQLite database (is --db pointing at the right file?)")
    assert path.read_text() == "this is not SQLite\n" * 100  # untouched


def test_read_only_database(tmp_path: Path) -> None:
    path = tmp_path / "perseus.db"
    open_database(f"sqlite:///{path}", "test").dispose()  # a real, migrated database
    # Opened read-only (as a read-only mount or file would be; root ignores chmod, so use SQLite's mode=ro).
    assert_refused(serve("--db", f"sqlite:///file:{path}?mode=ro&uri=true"),
                   f"--db: {path} is read-only; the server writes every job and report (check permissions)")
    assert sqlite_file(f"sqlite:///file:{path}?mode=ro&uri=true") == path


def test_postgresql_that_is_down() -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://perseus:secret@127.0.0.1:{free_port()}/perseus"
    line = assert_refused(serve("--db", url), "--db: cannot connect to database postgresql+psycopg://perseus:***@")
    assert "secret" not in line


def test_garbage_tls_pem(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    key.write_text("garbage\n")
    db = tmp_path / "perseus.db"
    line = assert_refused(serve("--db", f"sqlite:///{db}", "--tls-cert", str(cert), "--tls-key", str(key)),
                          f"--tls-cert: {cert} and --tls-key {key} are not a valid PEM certificate chain")
    assert "bind" not in line
    assert not db.exists()  # checked before touching the database


def test_second_scheduler_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "perseus.db"
    first = ServerProcess(f"sqlite:///{db}")
    try:
        line = assert_refused(serve("--db", f"sqlite:///{db}"),
                              f"--db: {db} is in use by another perseus server (pid {first.proc.pid}, holding "
                              f"{db}.lock)")
        assert line.endswith("use PostgreSQL for replicas")
        # In-process servers are refused the same way.
        with pytest.raises(Exception, match="is in use by another perseus server"):
            ServerThread(ServerConfig(port=0, db=f"sqlite:///{db}"))
    finally:
        first.kill9()  # the kernel drops the lock of a killed process: the next server starts
    second = ServerProcess(f"sqlite:///{db}")
    assert second.stop() == 0


def test_failed_start_releases_the_database(tmp_path: Path) -> None:
    db = tmp_path / "perseus.db"
    busy = ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'other.db'}"))
    try:
        with pytest.raises(Exception, match="cannot bind"):
            ServerThread(ServerConfig(port=busy.port, db=f"sqlite:///{db}"))
    finally:
        busy.stop()
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{db}")) as srv:  # the lock was released
        assert srv.port > 0


def test_token_without_tls_beyond_loopback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = f"sqlite:///{tmp_path / 'perseus.db'}"
    assert_refused(serve("--db", db, "--host", "0.0.0.0", "--token", "t0k"),
                   "--host: refusing to send the bearer token in clear text on non-loopback address '0.0.0.0'")
    caplog.set_level(logging.WARNING, logger="perseus.server")
    with ServerThread(ServerConfig(host="0.0.0.0", port=0, db=db, token="t0k", insecure=True)):
        pass
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "serving on 0.0.0.0 without TLS (--insecure): anyone who can reach it can read the token"]


def test_read_only_postgresql(postgres_url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("DROP DATABASE IF EXISTS standby"))
        conn.execute(sqlalchemy.text("CREATE DATABASE standby"))
        conn.execute(sqlalchemy.text("ALTER DATABASE standby SET default_transaction_read_only = on"))
    engine.dispose()
    url = postgres_url.rsplit("/", 1)[0] + "/standby"
    assert_refused(serve("--db", url), f"--db: database {url} is read-only (a standby?); the server writes every "
                                       "job and report")
