"""Run torchrun as a supervised child, so that nothing outlives a run and no GPU stays changed.

Real clusters end runs abnormally all the time: a worker is OOM-killed (SIGKILL), NCCL's watchdog
aborts one (SIGABRT), a scheduler sends SIGTERM to the launcher. None of these let a worker undo
what it changed, and torchrun gives stuck workers 30 s before it kills them. The supervisor:

- starts torchrun in its own session; SIGTERM, SIGINT and SIGHUP go straight to every worker (they live
  in sessions of their own, restore and exit), and torchrun, which holds nothing to clean up, is killed;
- becomes the "child subreaper", so workers orphaned by a dead torchrun are still its descendants,
  and asks the kernel to send torchrun SIGTERM if the launcher itself is killed;
- when a worker vanishes and the rest do not follow within ``grace`` seconds, or a forwarded signal
  is not obeyed within ``grace``, terminates every descendant (SIGTERM, then SIGKILL);
- afterwards undoes the GPU changes recorded by workers that are gone (per-GPU state files, see
  :mod:`perseus.device.statefile`), exactly those and nothing else;
- gives the whole tree a private ``TMPDIR`` (torchrun's ``torchelastic_*`` folders, torch's caches)
  and removes it at the end; a small janitor process removes it if the launcher itself is killed;
- prints one line once, after torchrun is gone: the reason the first failing worker gave
  (:func:`report_error`), else how torchrun saw a worker end without one (killed by a signal), else what
  a survivor said about the peer it lost (:mod:`merak_integration.peerloss`: on another node, only that
  is known here); torchrun itself runs as :mod:`merak_integration.torchrun`, which prints no traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
EXIT_DIR_ENV = "PERSEUS_SUPERVISOR_DIR"
"""Where workers leave ``done-<pid>`` when they finish normally, so their exit is not taken for a crash."""
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int) -> bool:
    """Linux ``prctl``; ``False`` where it is unavailable (the supervisor then relies on polling)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def mark_done() -> None:
    """Tell the supervising launcher (if any) that this worker is ending normally."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if folder:
        with contextlib.suppress(OSError):
            Path(folder, f"done-{os.getpid()}").touch()


ERROR_PREFIX = "error-"
"""A worker that stops with a reason leaves it in ``error-<pid>`` beside ``done-<pid>``."""
LOST_PEER_PREFIX = "lost-"
"""A worker that stops because a peer went away leaves that in ``lost-<pid>``: a consequence, printed
only when the launcher knows no cause (the peer died on another node)."""


def report_error(line: str, *, lost_peer: bool = False, pid: int | None = None) -> None:
    """Say why this worker stops: to the supervising launcher, which prints the first worker's reason
    once after torchrun ended (the last thing the user reads, not one copy per rank followed by
    torchrun's traceback); straight to stderr when no launcher supervises this worker.

    ``lost_peer``: the worker stops because another one went away (see :data:`LOST_PEER_PREFIX`).
    ``pid``: the worker the line is about, when another process (torchrun) writes it; default: this one.
    """
    folder = os.environ.get(EXIT_DIR_ENV)
    if folder:
        prefix = LOST_PEER_PREFIX if lost_peer else ERROR_PREFIX
        path = Path(folder, f"{prefix}{os.getpid() if pid is None else pid}")
        try:
            part = path.with_name(path.name + ".part")
            part.write_text(line)
            part.rename(path)  # the launcher never reads half a line
            return
        except OSError:
            pass
    print(line, file=sys.stderr, flush=True)


def explained_failures(folder: Path, prefix: str = ERROR_PREFIX) -> list[str]:
    """The distinct reasons workers left (see :func:`report_error`), oldest first; ``prefix``
    :data:`LOST_PEER_PREFIX`: the lost peers survivors reported instead."""
    try:
        files = sorted(folder.glob(f"{prefix}*[0-9]"), key=lambda p: p.stat().st_mtime_ns)
    except OSError:
        return []
    lines: list[str] = []
    for path in files:
        with contextlib.suppress(OSError):
            line = path.read_text().strip()
            if line and line not in lines:
                lines.append(line)
    return lines


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (used in torchrun and workers)."""
    prctl(_PR_SET_PDEATHSIG, int(sig))


def descendants(root: int) -> list[int]:
    """Every live (non-zombie) process below ``root``, parents before children.

    Reads each process's ``/proc/PID/task/TID/children`` (cheap: no scan of every process).
    """
    found: list[int] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop(0)
        for child in _children(pid):
            if running(child):
                found.append(child)
                frontier.append(child)
    return found


def _children(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    children: list[int] = []
    for task in tasks:
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name (which may hold spaces and parentheses)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat[stat.rfind(")") + 2 :].split()


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def running(pid: int) -> bool:
    """``pid`` is a live process (a zombie, exited but not yet reaped, counts as gone)."""
    return _state(pid) not in ("Z", None)


@dataclass
class Supervisor:
    """Runs ``command`` and cleans up after it; :meth:`run` returns the exit status to report."""

    command: Sequence[str]
    env: Mapping[str, str]
    grace: float = 3.0
    """Seconds survivors get to follow a dead worker or obey a forwarded signal."""
    kill_after: float = 2.0
    """Seconds between SIGTERM and SIGKILL when terminating the process tree."""
    torchrun_grace: float = 10.0
    """Seconds torchrun gets beyond ``grace`` to end once every worker stopped or said it is stopping
    (it names a worker that died without a reason as it ends; it takes seconds on a loaded machine)."""
    poll: float = 0.1
    _signal: int | None = field(default=None, init=False)
    _signal_at: float = field(default=0.0, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _spare: set[int] = field(default_factory=set, init=False)

    def run(self) -> int:
        from perseus.device import nvml, statefile  # now, not while the workers are dying  # noqa: F401

        prctl(_PR_SET_CHILD_SUBREAPER, 1)
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        tmp = tempfile.mkdtemp(prefix=f"perseus-run-{os.getpid()}-")
        janitor: subprocess.Popen[bytes] | None = None
        try:
            self._proc = subprocess.Popen(
                list(self.command), env={**self.env, "TMPDIR": tmp, EXIT_DIR_ENV: tmp}, start_new_session=True,
                preexec_fn=die_with_parent,
            )
            janitor = subprocess.Popen(
                [sys.executable, "-c", _JANITOR, str(os.getpid()), str(self._proc.pid), tmp], start_new_session=True
            )
            self._spare = {janitor.pid}
            status = self._watch(self._proc, Path(tmp))
            self._terminate_tree()
            self._restore_gpus()
            reasons = explained_failures(Path(tmp)) or explained_failures(Path(tmp), LOST_PEER_PREFIX)
            if reasons:  # one line: the first worker's reason (the others usually say the same of their GPU)
                more = f" (and {len(reasons) - 1} more worker{'s' * (len(reasons) > 2)})" if len(reasons) > 1 else ""
                print(reasons[0] + more, file=sys.stderr, flush=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(tmp, ignore_errors=True)
            if janitor is not None:
                janitor.kill()
                janitor.wait()
        if self._signal is not None:
            return 128 + self._signal
        return status

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is None:
            self._signal, self._signal_at = signum, time.monotonic()
        # Straight to every worker: they restore their GPUs and exit on it at once. torchrun would take
        # seconds to pass it on and then print its own traceback; it holds nothing to clean up (its
        # files are in the run's private TMPDIR), so it is stopped outright.
        torchrun = self._proc.pid if self._proc is not None else None
        for pid in descendants(os.getpid()):
            if pid not in self._spare:
                _kill(pid, signal.SIGKILL if pid == torchrun else signum)

    def _watch(self, proc: subprocess.Popen[bytes], exits: Path) -> int:
        workers: set[int] = set()
        lost_at: float | None = None
        while True:
            status = proc.poll()
            if status is not None:
                return status if status >= 0 else 128 - status
            now = time.monotonic()
            current = {pid for pid in _children(proc.pid) if _state(pid) not in ("Z", None)}
            crashed = [pid for pid in workers - current if not (exits / f"done-{pid}").exists()]
            if lost_at is None and crashed:
                lost_at = now
            workers |= current
            overdue = self._signal is not None and now - self._signal_at > self.kill_after
            # Survivors that said they are stopping (a reason, a lost peer, done) follow the dead worker;
            # torchrun, left alone, then gets longer to end and name the worker that said nothing.
            silent = [pid for pid in current if not any(
                (exits / f"{prefix}{pid}").exists() for prefix in ("done-", ERROR_PREFIX, LOST_PEER_PREFIX))]
            waited = now - lost_at if lost_at is not None else 0.0
            if waited > self.grace + self.torchrun_grace and not overdue:
                self._terminate_tree()
                proc.wait()
                return 1
            if overdue or (waited > self.grace and silent):
                if overdue or not explained_failures(exits):  # a worker that said why needs no second line
                    why = "did not stop after the signal" if overdue else "outlived a worker that died"
                    print(f"perseus: launcher: workers {why} ({self.grace:g} s); terminating them",
                          file=sys.stderr, flush=True)
                self._terminate_tree()
                proc.wait()
                return 1
            time.sleep(self.poll)

    def _terminate_tree(self, exclude: set[int] | None = None) -> None:
        """SIGTERM every descendant, SIGKILL what is left after ``kill_after``, reap what is ours."""
        me, spare = os.getpid(), exclude or self._spare
        for sig, wait in ((signal.SIGTERM, self.kill_after), (signal.SIGKILL, self.kill_after)):
            pids = [p for p in descendants(me) if p not in spare]
            if not pids:
                break
            for pid in pids:
                _kill(pid, sig)
            deadline = time.monotonic() + wait
            while [p for p in descendants(me) if p not in spare] and time.monotonic() < deadline:
                _reap_orphans()
                time.sleep(0.05)
        _reap_orphans()

    def _restore_gpus(self) -> None:
        from perseus.device import statefile

        if not any(not c.owner_alive for c in statefile.all_changes()):
            return
        from perseus.device.nvml import reset_recorded
        from perseus.errors import DeviceError

        try:
            lines = reset_recorded()
        except DeviceError as exc:
            lines = [f"could not restore GPU settings left by the workers: {exc}"]
        for line in lines:
            print(f"perseus: launcher: {line}", file=sys.stderr, flush=True)


# Runs beside the launcher: once the launcher is gone (SIGKILL) and torchrun has finished tearing
# down, remove the private temp folder. Stopped by the launcher itself after a normal end.
_JANITOR = """
import os, shutil, sys, time
launcher, torchrun, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
while alive(launcher):
    time.sleep(0.2)
deadline = time.monotonic() + 60
while alive(torchrun) and time.monotonic() < deadline:
    time.sleep(0.2)
shutil.rmtree(folder, ignore_errors=True)
"""


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _reap_orphans() -> None:
    """Collect exited orphans re-parented to us (we are their subreaper), so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
