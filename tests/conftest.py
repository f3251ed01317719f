"""What every test directory shares: a throwaway PostgreSQL cluster, and a private temp folder.

PostgreSQL comes from Debian's packages, installed before pytest starts (``bash run.sh test``
does it); the fixture only starts a cluster. Missing PostgreSQL fails the tests that need it
under CI (``CI=true``, set by ``.ci/run``) and skips them, with the reason, on a developer's
machine.

The session's temp folder is private and removed at the end; anything a test run leaves in the real
one fails the session (``tmp_guard``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pg_cluster
import pytest
import tmp_guard


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_GUARD] = tmp_guard.start()


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup``: the worker tests as one serial group (see ``xdist_groups``)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist_groups import SerialGroupScheduling

    return SerialGroupScheduling(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Iterator[None]:
    """After every fixture (the PostgreSQL cluster included) and every xdist worker has finished:
    remove the private temp folder, then fail the session if the real one gained entries."""
    try:
        return (yield)
    finally:
        guard = session.config.stash.get(_GUARD, None)
        if guard is not None:
            guard.remove()
            leaked = guard.leaked()
            if leaked and tmp_guard.checking():
                _say(session, f"tests left {len(leaked)} entries in {guard.real}: {', '.join(leaked[:20])} (another "
                     f"program on this machine? {tmp_guard.CHECK_ENV}=0 turns this check off)")
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            elif not tmp_guard.checking():
                _say(session, f"{tmp_guard.CHECK_ENV}=0: the real temp folder was not checked for entries tests left")


def _say(session: pytest.Session, line: str) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n" + line + "\n", red=True)
    else:
        print(line)


_GUARD = pytest.StashKey["tmp_guard.TmpGuard | None"]()


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
