"""Start-up checks: every problem an operator can cause is one clear line before the server serves.

* TLS: the certificate and key must load as a matching PEM pair (not a later "cannot bind").
* SQLite: the database's directory must exist; the file must be a database; only one scheduler may
  use a file at a time (an exclusive lock on ``<db>.lock``, released by the kernel when the process
  dies, even by SIGKILL).
* Any database: reachable, migrated to the newest schema, and writable (a no-op UPDATE proves it,
  so a read-only file or a read-only PostgreSQL fails now rather than on the first RegisterJob).

Each failure raises :class:`~perseus.errors.InputError` naming the flag; ``perseus serve`` prints
it as one line and exits with status 2.
"""

from __future__ import annotations

import fcntl
import os
import ssl
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from perseus.errors import InputError
from perseus.server.db import make_engine, upgrade


def check_tls(cert: Path, key: Path) -> None:
    """The certificate chain and private key load and belong together."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (ssl.SSLError, OSError) as exc:
        raise InputError("--tls-cert", f"{cert} and --tls-key {key} are not a valid PEM certificate chain and "
                                       f"matching private key ({exc.__class__.__name__}: {_reason(exc)})") from None


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL (None for other databases and in-memory SQLite)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    name = parsed.database
    if name.startswith("file:"):  # sqlite:///file:path?mode=ro&uri=true
        name = name[len("file:"):]
    return Path(name).absolute()


class DatabaseLock:
    """Holds ``<db>.lock`` exclusively so a second scheduler on the same SQLite file is refused."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        try:
            handle = open(self.path, "a+")  # noqa: SIM115 - held open for the server's lifetime
        except OSError as exc:
            raise InputError("--db", f"cannot create the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise InputError("--db", f"{self.path.with_suffix('')} is in use by another perseus server (pid "
                                     f"{holder}, holding {self.path}); one SQLite file serves one scheduler, use "
                                     "PostgreSQL for replicas") from None
        except OSError as exc:  # e.g. a network file system without locks
            handle.close()
            raise InputError("--db", f"cannot lock {self.path}: {exc.strerror}") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock; the file stays (removing it would race a new holder)
            self._file = None


def open_database(url: str, shown: str) -> Engine:
    """An engine on a reachable, migrated, writable database; ``shown`` is the URL without its password."""
    path = sqlite_file(url)
    if path is not None:
        if not path.parent.is_dir():
            raise InputError("--db", f"directory {path.parent} does not exist (create it, or point --db elsewhere)")
        if path.is_dir():
            raise InputError("--db", f"{path} is a directory, not a database file")
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as conn:  # proves the database is writable now, not at the first RegisterJob
            conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
    except SQLAlchemyError as exc:
        engine.dispose()
        raise InputError("--db", _database_problem(exc, path, shown)) from None
    return engine


def _database_problem(exc: SQLAlchemyError, path: Path | None, shown: str) -> str:
    reason = _reason(exc.orig if isinstance(exc, DBAPIError) else exc)
    lowered = reason.lower()
    if path is not None:
        if "not a database" in lowered:
            return f"{path} is not a SQLite database (is --db pointing at the right file?)"
        if "readonly" in lowered or "read-only" in lowered:
            return f"{path} is read-only; the server writes every job and report (check permissions)"
        return f"cannot use SQLite database {path}: {reason}"
    if "read-only" in lowered or "read only" in lowered:
        return f"database {shown} is read-only (a standby?); the server writes every job and report"
    if "connect" in lowered or "refused" in lowered:
        return f"cannot connect to database {shown}: {reason}"
    return f"database {shown}: {reason}"


def _reason(exc: BaseException | None) -> str:
    """The first line of an exception's message."""
    text_ = str(exc or "").strip()
    return text_.splitlines()[0] if text_ else exc.__class__.__name__
