"""Fixtures every test directory shares: a throwaway PostgreSQL cluster.

PostgreSQL comes from Debian's packages, installed before pytest starts (``bash run.sh test``
does it); the fixture only starts a cluster. Missing PostgreSQL fails the tests that need it
under CI (``CI=true``, set by ``.ci/run``) and skips them, with the reason, on a developer's
machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pg_cluster
import pytest


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (see ``pg_cluster``)."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(pg_cluster.throwaway_cluster(fsync=False))
        except pg_cluster.PostgresUnavailable as exc:
            under_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
            if not pg_cluster.installed() and not under_ci:
                pytest.skip(str(exc))
            pytest.fail(str(exc))
        yield url


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's cluster, dropped afterwards (servers migrate it on start)."""
    with pg_cluster.scratch_database(postgres_url, "perseus") as url:
        yield url
