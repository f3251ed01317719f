"""Frontier and closed-loop claims on a real PostgreSQL: a claim lost with its connection is not granted again."""

from __future__ import annotations

import time

import psycopg
import pytest

from perseus.server import notify
from perseus.server.db import make_engine
from perseus.server.notify import PostgresFeed


def test_a_claim_the_database_dropped_is_not_granted_again(postgres_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL ends replica A's lock session (as a restart or ``pg_terminate_backend`` does) without A
    noticing; replica B takes the claim. A must stop holding it at its next check, not run the job's loop
    (or frontier) beside B, and may claim it again once B lets it go."""
    engine = make_engine(postgres_db)
    a, b = PostgresFeed(engine), PostgresFeed(engine)
    admin_url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        assert a.try_claim("loop/j") and not b.try_claim("loop/j")
        monkeypatch.setattr(notify, "VERIFY_S", 0.0)  # check the connection at every grant
        assert a.try_claim("loop/j") and not b.try_claim("loop/j")  # a live session keeps its claim
        assert a.try_claim("b") and a.try_claim("b")  # "b" hashes below zero: the check finds it too
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (a._lock_conn.info.backend_pid,))
        deadline = time.monotonic() + 10
        while not b.try_claim("loop/j"):
            assert time.monotonic() < deadline, "the database never released the ended session's lock"
            time.sleep(0.05)
        assert not a.try_claim("loop/j"), "A still believes it holds a claim that B now holds"
        b.release("loop/j")
        assert a.try_claim("loop/j")  # on a new connection
        assert not b.try_claim("loop/j")
    finally:
        a.close()
        b.close()
        engine.dispose()
