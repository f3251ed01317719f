"""Restore every GPU setting Perseus changed, whatever way the process ends.

A locked clock or a lowered power limit outlives the process that set it, so a crashed
worker would leave its GPU slow for the next job. Every change goes through
:func:`changing`, which records how to undo it *before* the change is applied; the
recorded undo actions run on normal exit (``atexit``), on an uncaught exception
(``sys.excepthook``), and on SIGTERM/SIGINT, after which the signal's previous
behaviour is re-raised (default: the process dies by that signal; SIGINT raises
``KeyboardInterrupt``). A Python signal handler only runs when the main thread returns to the
interpreter, so a process whose main thread can block in C for long (a worker inside an NCCL or
gloo collective) calls :func:`handle_signals_in_thread` instead: a dedicated thread then restores
and exits. SIGKILL and SIGABRT cannot be handled: the launcher that supervises the process, or
``perseus devices --reset``, undoes what the per-GPU state files record.

Once a final restore has run (exit or signal), later changes are refused, so a
background controller thread cannot re-lock a clock while the process is dying.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

HANDLED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class _Undo:
    description: str
    restore: Callable[[], None]
    pid: int


# Reentrant: a signal handler runs on the main thread, possibly while that same thread
# is in the middle of a change.
_lock = threading.RLock()
_pending: dict[tuple[int, str], _Undo] = {}
_final = False
_atexit_installed = False
_signals_installed = False
_previous_handlers: dict[int, Any] = {}
_previous_excepthook: Callable[..., Any] | None = None


@contextmanager
def changing(owner: object, what: str, description: str, restore: Callable[[], None]) -> Iterator[bool]:
    """Hold the safety lock around one change; yield ``False`` if changes are no longer allowed.

    The undo action is registered before the body runs, so a signal arriving mid-change
    still restores it (undoing an unapplied change is harmless). If the body raises, the
    undo action is dropped again unless one was registered earlier for the same setting.
    """
    install()
    with _lock:
        if _final:
            yield False
            return
        key = (id(owner), what)
        existed = key in _pending
        if not existed:
            _pending[key] = _Undo(description, restore, os.getpid())
        try:
            yield True
        except BaseException:
            if not existed:
                _pending.pop(key, None)
            raise


def forget(owner: object, what: str, undo: Callable[[], None]) -> None:
    """Run ``undo`` (e.g. unlock) under the safety lock and drop the recorded undo action."""
    with _lock:
        undo()
        _pending.pop((id(owner), what), None)


def is_registered(owner: object, what: str) -> bool:
    with _lock:
        return (id(owner), what) in _pending


def pending() -> list[str]:
    """Descriptions of the changes that would be restored now (for tests and diagnostics)."""
    with _lock:
        return [u.description for u in _pending.values() if u.pid == os.getpid()]


def restore_all(final: bool = False) -> list[str]:
    """Undo every recorded change made by this process; return what was restored.

    ``final=True`` (used at exit and on signals) also refuses all later changes. A failing
    undo action is reported as one line on stderr and does not stop the others.
    """
    global _final
    restored: list[str] = []
    with _lock:
        if final:
            _final = True
        pid = os.getpid()
        for key, undo in list(_pending.items()):
            # A forked child inherits the table but must not touch its parent's GPUs.
            if undo.pid != pid:
                continue
            try:
                undo.restore()
                restored.append(undo.description)
            except Exception as exc:
                print(f"perseus: could not restore {undo.description}: {exc}", file=sys.stderr)
            _pending.pop(key, None)
    return restored


def is_final() -> bool:
    return _final


def install() -> None:
    """Install the exit, exception and signal hooks (idempotent).

    Signal handlers can only be installed from the main thread; call this (or create a
    GPU or controller) there first. From other threads only the exit hook is installed.
    """
    global _atexit_installed, _signals_installed, _previous_excepthook
    with _lock:
        if not _atexit_installed:
            atexit.register(restore_all, True)
            _previous_excepthook = sys.excepthook
            sys.excepthook = _excepthook
            _atexit_installed = True
        if _signals_installed or threading.current_thread() is not threading.main_thread():
            return
        for sig in HANDLED_SIGNALS:
            _previous_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, _on_signal)
        _signals_installed = True


def handle_signals_in_thread() -> None:
    """Handle SIGTERM/SIGINT on a thread of their own: restore, then exit with 128 + signal.

    Call from the main thread before other threads start: they inherit the blocked signal mask,
    so the signals wait for the handling thread whatever the main thread is doing.
    """
    install()
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("handle_signals_in_thread() must be called from the main thread")
    for sig in HANDLED_SIGNALS:  # should a thread started earlier take one: same outcome
        signal.signal(sig, _restore_and_exit)
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    threading.Thread(target=_wait_for_signal, name="perseus-signals", daemon=True).start()


def _wait_for_signal() -> None:
    _restore_and_exit(signal.sigwait(HANDLED_SIGNALS), None)


def _restore_and_exit(signum: int, frame: FrameType | None) -> None:
    restored = restore_all(final=True)
    name = signal.Signals(signum).name
    print(f"perseus: {name}: exiting{'; restored ' + ', '.join(restored) if restored else ''}", file=sys.stderr,
          flush=True)
    os._exit(128 + signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    restore_all(final=True)
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. SIGINT's default raises KeyboardInterrupt
        return
    if previous == signal.SIG_IGN:
        return
    # Re-raise with the default action so the exit status says "killed by SIGTERM".
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, traceback: TracebackType | None
) -> None:
    restore_all(final=True)
    hook = _previous_excepthook or sys.__excepthook__
    hook(exc_type, exc, traceback)
