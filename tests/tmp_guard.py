"""The suite leaves nothing in the machine's temp folder.

A test session gets a private temp folder (``TMPDIR`` and :data:`tempfile.tempdir`), inherited by every
process the tests start: pytest's ``tmp_path`` folders, torchrun's ``torchelastic_*`` folders, the
PostgreSQL cluster, torch's caches. It is removed when the session ends. Anything that still appears in
the real temp folder during the session (a path hard-coded to ``/tmp``, a child started with a
scrubbed environment) fails the session, named.

On a machine shared with other programs their temp files would be blamed on the suite:
``PERSEUS_TMP_CHECK=0`` turns the check off (the session says so); the private folder stays.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

SESSION_ENV = "PERSEUS_TEST_TMPDIR"
"""Set by the controlling pytest process; xdist workers find it and share the folder."""
CHECK_ENV = "PERSEUS_TMP_CHECK"
PREFIX = "perseus-tests-"


@dataclass(frozen=True)
class TmpGuard:
    """The real temp folder's entries when the session began, and the private folder that replaces it."""

    real: Path
    before: frozenset[str]
    private: Path

    def leaked(self) -> list[str]:
        """Entries of the real temp folder made since the session began, except private folders of test
        sessions (this one's, and those of test runs beside it, which remove their own)."""
        return sorted(name for name in set(os.listdir(self.real)) - self.before if not name.startswith(PREFIX))

    def remove(self) -> None:
        shutil.rmtree(self.private, ignore_errors=True)


def checking() -> bool:
    return os.environ.get(CHECK_ENV, "1").lower() not in ("0", "false", "no", "off")


def start() -> TmpGuard | None:
    """Give this process (and so every process it starts) a private temp folder; ``None`` in an xdist
    worker, whose controller already did (the worker inherited ``TMPDIR``)."""
    if os.environ.get(SESSION_ENV):
        tempfile.tempdir = os.environ[SESSION_ENV]
        return None
    real = Path(tempfile.gettempdir())
    before = frozenset(os.listdir(real))
    private = Path(tempfile.mkdtemp(prefix=PREFIX, dir=real))
    private.chmod(0o755)  # the PostgreSQL cluster runs as user postgres and must reach its folder inside
    os.environ["TMPDIR"] = os.environ[SESSION_ENV] = str(private)
    tempfile.tempdir = str(private)
    return TmpGuard(real, before, private)
