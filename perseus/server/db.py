"""Database setup: engine, sessions and ``alembic upgrade head`` driven from code (no alembic.ini).

One migration history (perseus/server/migrations) covers every table on
:data:`perseus.db.Base.metadata`: the scheduler's and, when installed, the batch size optimizer's.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from perseus.errors import InputError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: Modules that define tables on perseus.db.Base; optional ones are skipped when absent.
MODEL_MODULES: tuple[tuple[str, bool], ...] = (
    ("perseus.server.models", True),
    ("perseus.bso.models", False),
)


def import_models() -> None:
    """Import every module that adds tables to ``perseus.db.Base.metadata``."""
    for name, required in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if required or not (exc.name and name.startswith(exc.name)):
                raise


def make_engine(url: str) -> Engine:
    """An engine for any SQLAlchemy URL; SQLite gets WAL, a busy timeout and foreign keys."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except Exception as exc:  # SQLAlchemy raises several types for a bad URL
        raise InputError("--db", f"cannot use database URL {url!r}: {exc}") from None
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # committed data survives a killed process
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(engine: Engine | None = None, url: str | None = None) -> Any:
    """A programmatic Alembic config pointing at the committed migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the database schema to the newest migration (``alembic upgrade head``)."""
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class HeldConnection:
    """A background thread's own connection, kept from one use to the next: a pool checkout pings
    the server first (``pool_pre_ping``), a Session adds BEGIN and ROLLBACK; on a connection held in
    autocommit one statement is one round trip. After an error it is dropped (its state is unknown)
    and the next use connects afresh. One thread at a time."""

    def __init__(self, engine: Engine, *, autocommit: bool) -> None:
        self._engine = engine
        self._autocommit = autocommit
        self._conn: Connection | None = None

    @contextmanager
    def use(self) -> Iterator[Connection]:
        if self._conn is None:
            conn = self._engine.connect()
            if self._autocommit:
                conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn = conn
        try:
            yield self._conn
        except BaseException:
            self.drop()
            raise

    def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # never back to the pool
                conn.close()
            except Exception:  # the connection is gone already
                pass
