"""The frontier pool: a few supervised child processes that compute frontiers, smallest job first.

Each job runs in its own child (:mod:`perseus.server.optimize`), started by a supervising thread
that lives exactly as long as the child, so a job can be killed at any moment: when its time is up,
when it is cancelled (job deleted or re-profiled), when the server stops. The child dies with the
server even on ``kill -9`` (see :mod:`perseus.server.optimize`). Queued jobs start smallest DAG
first, and one slot is kept for small jobs, so a job that takes hours never delays one that takes
seconds.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perseus.errors import InputError
from perseus.server.optimize import FrontierRequest

log = logging.getLogger("perseus.server")

#: Jobs up to this many instructions may use the slot kept for small jobs
#: (an 8 x 128 1F1B pipeline; such a frontier takes about a minute on one core).
SMALL_JOB_SIZE = 2048


@dataclass(frozen=True)
class PoolLimits:
    """How many frontiers run at once, and how long and how large each may grow."""

    workers: int = 2
    time_limit_s: float = 6 * 3600.0
    memory_limit_mib: int = 16 * 1024
    """Address-space cap of each child (0: none)."""

    def validate(self) -> None:
        if not 1 <= self.workers <= 256:
            raise InputError("--frontier-workers", f"must be in [1, 256], got {self.workers}")
        if not self.time_limit_s > 0:
            raise InputError("--frontier-time-limit", f"must be positive seconds, got {self.time_limit_s}")
        if self.memory_limit_mib < 0:
            raise InputError("--frontier-memory-limit", f"must be MiB >= 0, got {self.memory_limit_mib}")


FrontierDone = Callable[[FrontierRequest, "list[str] | None", str], None]
"""``on_done(request, plans, error)``: plans on success, else None and the reason."""


@dataclass
class _Run:
    request: FrontierRequest
    process: subprocess.Popen[bytes] | None = None
    stopped: str = ""
    """Why the supervisor killed the child ("" while it may finish)."""
    cancelled: bool = False


@dataclass(order=True)
class _Queued:
    size: int
    seq: int
    request: FrontierRequest = field(compare=False)


class FrontierPool:
    """Runs :class:`FrontierRequest` s in child processes; see the module docstring."""

    def __init__(self, limits: PoolLimits, on_done: FrontierDone) -> None:
        limits.validate()
        self.limits = limits
        self._on_done = on_done
        self._lock = threading.Lock()
        self._queue: list[_Queued] = []
        self._running: dict[str, _Run] = {}
        self._seq = itertools.count()
        self._closed = False

    def submit(self, request: FrontierRequest) -> None:
        """Queue a job's frontier (replacing a queued or running one of the same job)."""
        self.cancel(request.job_id)
        with self._lock:
            if self._closed:
                return
            heapq.heappush(self._queue, _Queued(request.size, next(self._seq), request))
            self._dispatch()

    def cancel(self, job_id: str) -> bool:
        """Forget a job's queued or running frontier; its ``on_done`` is never called. True if there was one."""
        with self._lock:
            before = len(self._queue)
            self._queue = [q for q in self._queue if q.request.job_id != job_id]
            heapq.heapify(self._queue)
            run = self._running.get(job_id)
            if run is not None:
                run.cancelled = True
                self._kill(run, "cancelled")
            return run is not None or len(self._queue) != before

    def jobs(self) -> tuple[list[str], list[str]]:
        """(running job ids, queued job ids in start order)."""
        with self._lock:
            return list(self._running), [q.request.job_id for q in sorted(self._queue)]

    def close(self) -> None:
        """Kill every child and drop the queue (the jobs stay "optimizing" and resume on the next start)."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            runs = list(self._running.values())
            for run in runs:
                run.cancelled = True
                self._kill(run, "server stopping")

    # ------------------------------------------------------------------ internals

    def _dispatch(self) -> None:
        """Start queued jobs while slots are free (caller holds the lock)."""
        while self._queue and len(self._running) < self.limits.workers:
            big_running = sum(r.request.size > SMALL_JOB_SIZE for r in self._running.values())
            may_start_big = self.limits.workers == 1 or big_running < self.limits.workers - 1
            pick = next((q for q in sorted(self._queue) if q.size <= SMALL_JOB_SIZE or may_start_big), None)
            if pick is None:
                return  # only big jobs wait, and the free slot is kept for small ones
            self._queue.remove(pick)
            heapq.heapify(self._queue)
            run = _Run(pick.request)
            self._running[pick.request.job_id] = run
            threading.Thread(target=self._supervise, args=(run,), name=f"frontier-{pick.request.job_id}",
                             daemon=True).start()

    def _kill(self, run: _Run, why: str) -> None:
        if not run.stopped:
            run.stopped = why
        if run.process is not None and run.process.poll() is None:
            run.process.send_signal(signal.SIGKILL)

    def _supervise(self, run: _Run) -> None:
        """Start the child, feed it, enforce the time limit, collect its answer (one thread per child).

        This thread starts the child and lives until it exits: Linux's parent-death signal follows
        the thread that started a child, not the process.
        """
        limits = self.limits
        plans: list[str] | None = None
        error = ""
        with tempfile.TemporaryFile() as stderr:  # unlinked at once: nothing left on disk
            try:
                plans, error = self._run_child(run, stderr)
            except Exception as exc:  # the child could not be started or talked to
                error = f"frontier worker failed: {exc}"
            if run.stopped == "time limit":
                plans, error = None, f"exceeded the time limit of {limits.time_limit_s:g} s"
            elif plans is None and not error:
                stderr.seek(0)
                tail = stderr.read().decode(errors="replace").strip().splitlines()[-1:]
                code = run.process.returncode if run.process is not None else None
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                error = f"frontier worker died ({how}){': ' + tail[0] if tail else ''}"
        with self._lock:
            self._running.pop(run.request.job_id, None)
            cancelled = run.cancelled
            if not self._closed:
                self._dispatch()
        if not cancelled:
            self._on_done(run.request, plans, error)

    def _run_child(self, run: _Run, stderr: Any) -> tuple[list[str] | None, str]:
        limits = self.limits
        # One BLAS thread: several children share the machine with the server.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "perseus.server.optimize", str(os.getpid()),
               str(limits.memory_limit_mib * 2**20)]
        process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env)
        with self._lock:
            run.process = process
            if run.cancelled:
                self._kill(run, run.stopped or "cancelled")
        timer = threading.Timer(limits.time_limit_s, self._time_up, args=(run,))
        timer.daemon = True
        timer.start()
        assert process.stdin is not None and process.stdout is not None
        try:
            try:
                process.stdin.write(run.request.to_json().encode() + b"\n")
                process.stdin.flush()
            except BrokenPipeError:
                pass  # the child is already gone; its exit status says why
            output = process.stdout.read()
            process.wait()
        finally:
            timer.cancel()
            process.stdin.close()  # end of file tells a still-running child to exit
            process.stdout.close()
            if process.poll() is None:
                process.kill()
                process.wait()
        if run.stopped or not output:
            return None, ""
        answer = json.loads(output)
        if "error" in answer:
            return None, str(answer["error"])
        return list(answer["plans"]), ""

    def _time_up(self, run: _Run) -> None:
        with self._lock:
            self._kill(run, "time limit")
