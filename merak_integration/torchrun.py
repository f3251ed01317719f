"""torchrun without its traceback: ``python -m merak_integration.torchrun [torchrun options] -m MODULE``.

When a worker fails, torchrun logs "failed (exitcode: N)" and raises ``ChildFailedError`` out of
its ``main``, whose traceback and failure table end up on the user's screen after the worker's own
one-line reason. This runs torchrun's ``run`` in-process (same options, same behaviour) and turns
a worker's failure into an exit status: silently when the worker explained itself (it left its
reason for the supervisor, see :func:`merak_integration.supervisor.report_error`), else with one
line naming the rank, its exit code or signal, and its pid.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from merak_integration.supervisor import EXIT_DIR_ENV, explained_failures

_AGENT_LOGGER = "torch.distributed.elastic.multiprocessing.api"


class _DropFailureSummary(logging.Filter):
    """Drops torchrun's "failed (exitcode: N) local_rank: ..." record (:func:`main` says it in one line)
    and its "Sending process N closing signal" notes (stopping the other workers after a failure is
    the expected consequence; the supervisor says so when they do not stop)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("failed (exitcode", "Sending process"))


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


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger(_AGENT_LOGGER).addFilter(_DropFailureSummary())
    args = torchrun.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        torchrun.run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        folder = os.environ.get(EXIT_DIR_ENV)
        if not (folder and explained_failures(Path(folder))):
            print(describe_failure(rank, failure.exitcode, failure.pid), file=sys.stderr, flush=True)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
