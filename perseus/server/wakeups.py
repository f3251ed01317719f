"""Results from other threads handed to the event loop with one wake-up per burst, not one per call.

``asyncio.wrap_future`` wakes the event loop (a write to its self-pipe, a system call, a pass of
the loop) once per future. The report writer commits hundreds of calls' reports in one transaction
and resolves all their futures at once: :class:`LoopWaker` collects the results that arrive while a
wake-up is already pending and resolves them all in that one pass.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class LoopWaker:
    """Makes awaitable asyncio futures of concurrent ones, batching the loop wake-ups (see the module)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Any], Any]] = []
        """Waiters to resolve on the next pass, each with its result (an exception fails it)."""

    def wrap(self, future: Future[T]) -> asyncio.Future[T]:
        """An asyncio future (of this loop) that resolves like ``future``; call from the loop."""
        waiter: asyncio.Future[T] = self._loop.create_future()
        future.add_done_callback(lambda done: self._push(waiter, done.exception() or done.result()))
        return waiter

    def expect(self) -> tuple[asyncio.Future[Any], Callable[[Any], None]]:
        """An asyncio future and the function (for any thread) that resolves it; an exception fails it.

        Cheaper than :meth:`wrap` (no ``concurrent.futures.Future``); call from the loop.
        """
        waiter: asyncio.Future[Any] = self._loop.create_future()
        return waiter, lambda result: self._push(waiter, result)

    def _push(self, waiter: asyncio.Future[Any], result: Any) -> None:
        with self._lock:
            self._ready.append((waiter, result))
            first = len(self._ready) == 1
        if first and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for waiter, result in ready:
            if waiter.cancelled():
                continue  # the caller went away; the reports are stored all the same
            if isinstance(result, BaseException):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
