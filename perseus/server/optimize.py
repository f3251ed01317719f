"""One frontier computation in a child process: ``python -m perseus.server.optimize PARENT_PID MEMORY_BYTES``.

The child reads one :class:`FrontierRequest` as a JSON line on stdin and writes one JSON object
on stdout: ``{"plans": [...]}`` or ``{"error": "..."}``. It never outlives the server: on Linux
the kernel kills it when its parent dies (``PR_SET_PDEATHSIG``), and everywhere it exits when
its stdin reaches end of file, which happens when the parent dies, however it dies. Its address
space is capped at ``MEMORY_BYTES`` (0: no cap), so a job too large for the machine fails alone
with a clear reason instead of swapping the server to death.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any

#: prctl(2) option that makes the kernel send a signal to this process when its parent exits.
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class FrontierRequest:
    """Everything the solver needs for one job's frontier (plain data: it crosses a pipe)."""

    job_id: str
    profile_csv: str
    blocking_power: float
    schedule: str
    num_stages: int
    num_microbatches: int
    num_chunks: int

    @property
    def size(self) -> int:
        """Forward and backward instructions in the pipeline DAG (what the solver's time grows with)."""
        return 2 * self.num_stages * self.num_microbatches * self.num_chunks

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FrontierRequest:
        return cls(**json.loads(text))


WARM_UP = FrontierRequest(
    "warm-up", "stage,instruction,frequency,time,energy\n0,forward,1000,0.1,10\n0,forward,900,0.12,9\n"
    "0,backward,1000,0.2,20\n0,backward,900,0.24,18\n", 50.0, "1f1b", 1, 2, 1)
"""A one-stage job whose frontier compiles every solver kernel (a few ms once numba's cache is warm)."""


def compute_frontier_plans(request: FrontierRequest) -> list[str]:
    """The frontier's plans as compact rows (:func:`perseus.plan.store.encode_rows`), fastest first:
    the server stores them as they are and never holds the whole frontier decoded."""
    from perseus.profile import parse_profile
    from perseus.solver import compute_frontier

    profile = parse_profile(request.profile_csv, source="profile", blocking_power=request.blocking_power,
                            num_stages=request.num_stages)
    frontier = compute_frontier(profile, request.schedule, request.num_stages, request.num_microbatches,
                                request.num_chunks)
    from perseus.plan.store import encode_rows

    return encode_rows(frontier.store)


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(3)


def _exit_on_stdin_eof() -> None:
    """The parent keeps our stdin open while it waits for us: end of file means it is gone."""
    sys.stdin.buffer.read()
    os._exit(3)


def main(argv: list[str]) -> int:
    parent_pid, memory_bytes = int(argv[0]), int(argv[1])
    _die_with_parent(parent_pid)
    request = FrontierRequest.from_json(sys.stdin.buffer.readline().decode())
    threading.Thread(target=_exit_on_stdin_eof, daemon=True).start()
    if memory_bytes:
        # Load and compile the solver's kernels first: the limit is for the job's frontier, not for
        # numba's code generator, whose shared library cannot even be mapped under a small limit.
        compute_frontier_plans(WARM_UP)
        # Only the soft limit: once the solver hit it, the child lifts it to report the failure.
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, resource.RLIM_INFINITY))
    result: dict[str, Any]
    out_of_memory = False
    try:
        result = {"plans": compute_frontier_plans(request)}
    except MemoryError:
        # Allocate nothing here: the traceback still holds the solver's arrays, so the process sits
        # at its limit until this block ends (allocating here can fail again: a child once spun for minutes).
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        out_of_memory = True
    except Exception as exc:  # the job's failure, reported to the server as its reason
        result = {"error": f"{type(exc).__name__}: {exc}"}
    if out_of_memory:
        result = {"error": f"exceeded the memory limit of {memory_bytes // 2**20} MiB"}
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    # Exit at once: a normal interpreter shutdown would find the stdin thread holding stdin's lock and
    # abort ("Fatal Python error: _enter_buffered_busy"), killed by SIGABRT, maybe dumping core.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
