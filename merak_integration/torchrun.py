"""torchrun without its traceback: ``python -m merak_integration.torchrun [torchrun options] -m MODULE``.

When a worker fails, torchrun logs "failed (exitcode: N)" and raises ``ChildFailedError`` out of
its ``main``, whose traceback and failure table end up on the user's screen after the worker's own
one-line reason. This runs torchrun's ``run`` in-process (same options, same behaviour) and turns
a worker's failure into an exit status: silently when a worker explained itself (it left its
reason for the supervisor, see :func:`merak_integration.supervisor.report_error`), else with one
line naming the rank that ended without a reason (a survivor that only lost it does not count), its
exit code or signal, and its pid; the line goes to the supervisor, which prints it last, once.
Stopped by the supervisor (SIGTERM), it exits with 128 + the signal, without torchrun's traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from merak_integration.supervisor import (
    ERROR_PREFIX,
    EXIT_DIR_ENV,
    LOST_PEER_PREFIX,
    explained_failures,
    report_error,
)

_AGENT_LOGGERS = ("torch.distributed.elastic.multiprocessing.api", "torch.distributed.elastic.agent.server.api")


class _DropFailureSummary(logging.Filter):
    """Drops torchrun's "failed (exitcode: N) local_rank: ..." record (:func:`main` says it in one line),
    its "Sending process N closing signal" notes (stopping the other workers after a failure is
    the expected consequence; the supervisor says so when they do not stop) and its "Received 15 death
    signal" note (the supervisor sent it and says why)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("failed (exitcode", "Sending process", "Received "))


def describe_failure(rank: int, exitcode: int, pid: int) -> str:
    """One line for a worker that failed without saying why (a crash, a signal)."""
    if exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    else:
        how = f"exited with status {exitcode}"
    return f"perseus: launcher: worker rank {rank} (pid {pid}) {how}; its output above says what it was doing"


def unexplained(failures: Mapping[int, Any], folder: Path | None) -> tuple[int, Any] | None:
    """The first failed rank (by rank) that left no line for the supervisor, neither a reason nor a lost
    peer (``failures``: torchrun's rank -> ProcessFailure); ``None`` when every one explained itself."""
    for rank in sorted(failures):
        pid = failures[rank].pid
        if folder is None or not any((folder / f"{p}{pid}").exists() for p in (ERROR_PREFIX, LOST_PEER_PREFIX)):
            return rank, failures[rank]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in _AGENT_LOGGERS:
        logging.getLogger(name).addFilter(_DropFailureSummary())
    args = torchrun.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        torchrun.run(args)
    except ChildFailedError as exc:
        _, first = exc.get_first_failure()
        folder = Path(os.environ[EXIT_DIR_ENV]) if os.environ.get(EXIT_DIR_ENV) else None
        silent = unexplained(exc.failures, folder)
        if silent is not None and not (folder and explained_failures(folder)):
            rank, failure = silent
            report_error(describe_failure(rank, failure.exitcode, failure.pid), pid=failure.pid)
        return first.exitcode if first.exitcode > 0 else 1
    except SignalException as exc:  # the supervisor stops torchrun this way; it says why
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
