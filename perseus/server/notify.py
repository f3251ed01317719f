"""How the replicas of one database learn about each other's changes and share frontier work.

A :class:`ChangeFeed` gives :class:`~perseus.server.core.SchedulerCore` three things:

* ``publish(session, job_id, version)`` inside the transaction that changed a job: the other
  replicas hear about it when (and only if) that transaction commits;
* ``try_claim(job_id)`` / ``release(job_id)``: at most one replica computes a job's frontier;
* a background loop that calls ``on_change(job_id, version)`` for every change published by any
  replica, and ``on_tick()`` about once a second (the core re-checks versions there, so a missed
  notification costs a second, not a stale plan, and picks up frontiers whose replica died).

SQLite has one server per file, so :class:`LocalFeed` publishes nothing and grants every claim.
:class:`PostgresFeed` uses ``LISTEN/NOTIFY`` on one connection and session-level advisory locks
on another: a replica that dies loses its connections, and with them its claims, so another
replica takes its frontiers over within a tick. A replica whose lock connection the database ended
(PostgreSQL restarted, ``pg_terminate_backend``, an idle-session timeout) lost its claims too, without
knowing until it next uses that connection; so a claim held for more than ``VERIFY_S`` is checked
on it before it is granted again, and two replicas run one job's work for at most that long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import Engine

log = logging.getLogger("perseus.server")

CHANNEL = "perseus_jobs"
#: First key of the two-key advisory locks (the second is a hash of the job id): keeps them apart
#: from advisory locks other applications on the same database may take.
LOCK_SPACE = 7787
TICK_S = 1.0
VERIFY_S = 1.0
"""How stale a granted claim may be before its connection is checked again (one round trip)."""
HOLDING = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
    "AND classid = %s AND objid = hashtext(%s)::oid AND objsubid = 2 AND granted)"
)
"""Whether this session holds a claim (a two-key advisory lock shows its keys as classid, objid and objsubid 2)."""
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
"""libpq TCP keep-alives on the lock connection: a check on a connection that went silent fails in
about 25 s instead of hanging for the operating system's two hours."""

OnChange = Callable[[str, int], None]


class ChangeFeed(Protocol):
    shared: bool
    """True when other replicas may change the database."""

    def publish(self, session: Any, job_id: str, version: int) -> None: ...

    def try_claim(self, job_id: str) -> bool: ...

    def release(self, job_id: str) -> None: ...

    def start(self, on_change: OnChange, on_tick: Callable[[], None]) -> None: ...

    def close(self) -> None: ...


class LocalFeed:
    """One server owns the database (SQLite): nothing to tell, every claim granted."""

    shared = False

    def publish(self, session: Any, job_id: str, version: int) -> None:
        pass

    def try_claim(self, job_id: str) -> bool:
        return True

    def release(self, job_id: str) -> None:
        pass

    def start(self, on_change: OnChange, on_tick: Callable[[], None]) -> None:
        pass

    def close(self) -> None:
        pass


class PostgresFeed:
    """``LISTEN/NOTIFY`` and advisory locks on PostgreSQL (needs psycopg 3)."""

    shared = True

    def __init__(self, engine: Engine) -> None:
        import psycopg

        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._psycopg = psycopg
        self._lock_conninfo = psycopg.conninfo.make_conninfo(self._conninfo, **KEEPALIVE)
        self._lock_conn = psycopg.connect(self._lock_conninfo, autocommit=True)
        self._lock_mutex = threading.Lock()
        self._claimed: set[str] = set()
        self._verified = time.monotonic()  # when the lock connection last answered
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, session: Any, job_id: str, version: int) -> None:
        session.execute(text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": CHANNEL, "payload": f"{version}:{job_id}"})

    def try_claim(self, job_id: str) -> bool:
        with self._lock_mutex:
            if job_id in self._claimed:
                if time.monotonic() - self._verified < VERIFY_S:
                    return True
                # A lost connection fails the check, and _locking then forgets every claim held on it.
                if self._locking(HOLDING, job_id):
                    return True
                self._claimed.discard(job_id)
                return False
            got = self._locking("SELECT pg_try_advisory_lock(%s, hashtext(%s))", job_id)
            if got:
                self._claimed.add(job_id)
            return got

    def release(self, job_id: str) -> None:
        with self._lock_mutex:
            if job_id in self._claimed:
                self._claimed.discard(job_id)
                self._locking("SELECT pg_advisory_unlock(%s, hashtext(%s))", job_id)

    def _locking(self, query: str, job_id: str) -> bool:
        """Run an advisory-lock query; a lost connection lost every claim with it (the next tick retries)."""
        try:
            row = self._lock_conn.execute(query, (LOCK_SPACE, job_id)).fetchone()
            self._verified = time.monotonic()
            return bool(row and row[0])
        except self._psycopg.Error as exc:
            log.warning("frontier claims: %s; reconnecting (claims held on that connection are lost)", exc)
            self._claimed.clear()
            try:
                self._lock_conn.close()
                self._lock_conn = self._psycopg.connect(self._lock_conninfo, autocommit=True)
            except self._psycopg.Error as again:
                log.warning("frontier claims: cannot reconnect: %s", again)
            return False

    def start(self, on_change: OnChange, on_tick: Callable[[], None]) -> None:
        self._thread = threading.Thread(target=self._listen, args=(on_change, on_tick), name="perseus-feed",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock_mutex:
            self._claimed.clear()
            self._lock_conn.close()

    def _listen(self, on_change: OnChange, on_tick: Callable[[], None]) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                with self._psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    on_tick()  # whatever changed while we were not listening
                    delay = 0.1
                    while not self._stop.is_set():
                        next_tick = time.monotonic() + TICK_S
                        for note in conn.notifies(timeout=TICK_S):
                            version, _, job_id = note.payload.partition(":")
                            on_change(job_id, int(version))
                            if time.monotonic() >= next_tick:
                                break
                        on_tick()
            except Exception as exc:  # a lost connection: keep serving from the cache, reconnect
                if self._stop.is_set():
                    return
                log.warning("change feed: %s; reconnecting in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)


def make_feed(engine: Engine) -> ChangeFeed:
    """The feed for this database: shared on PostgreSQL, local otherwise."""
    if engine.dialect.name == "postgresql":
        return PostgresFeed(engine)
    return LocalFeed()
