"""The server's front door: authentication, undecodable requests and stream limits, before any handler.

:class:`GuardInterceptor` sees a call's method and metadata before gRPC reads its body, so:

* a call without the bearer token (``authorization: Bearer ...``) is answered UNAUTHENTICATED and
  its body is never parsed (an unauthenticated client cannot make the server decode anything);
* an authenticated call whose body is not a valid protobuf message is answered INVALID_ARGUMENT
  with one warning line (at most one per minute per method; the rest are counted), instead of
  gRPC's UNKNOWN and a traceback per call;
* streaming calls (WatchSchedule, StreamReports) are counted per kind, per client address and in
  total, and refused with RESOURCE_EXHAUSTED over the limits; a message of a client stream that is
  not a valid protobuf message ends that stream with INVALID_ARGUMENT and the same warning line.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from perseus.server.limits import Limits

log = logging.getLogger("perseus.server")

#: Methods reachable without the token: load balancers and orchestrators probe health unauthenticated.
OPEN_METHOD_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/",)
#: Seconds between two log lines about the same kind of rejected call.
LOG_INTERVAL_S = 60.0

#: Methods whose guarded handler is kept (only registered methods reach the guard; this is a backstop).
MAX_CACHED_METHODS = 1024

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class RateLimitedLog:
    """Logs a warning per key at most once per ``interval`` seconds; counts what it held back."""

    def __init__(self, interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def warning(self, key: str, message: str) -> bool:
        """Log ``message`` unless ``key`` was logged within the interval; True when it was logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] += 1
            return False
        held = self._held.pop(key, 0)
        suffix = f" ({held} more since the last such line)" if held else ""
        log.warning("%s%s", message, suffix)
        self._last[key] = now
        return True


class _Undecodable:
    """Stands in for a request body that did not parse (the handler never sees it)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _ignore_body(_data: bytes) -> None:
    return None


def client_address(peer: str) -> str:
    """The client's address without its port: ``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer  # unix sockets and others: the whole peer string


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that swaps a method's handler for a wrapped one (subclasses implement :meth:`wrap`)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        return self.wrap(handler, handler_call_details.method or "", handler_call_details.invocation_metadata)

    def wrap(self, handler: Any, method: str, metadata: Any) -> Any:
        """The handler to run for ``method`` instead of ``handler``."""
        raise NotImplementedError


class GuardInterceptor(HandlerInterceptor):
    """Token check, decode guard and stream limits (see the module docstring)."""

    def __init__(self, token: str | None, limits: Limits, rejections: RateLimitedLog | None = None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        self._limits = limits
        self._log = rejections or RateLimitedLog()
        self._streams: dict[str, Counter[str]] = {"watch": Counter(), "report": Counter()}
        """Open streams per kind and client address."""
        self._wrapped: dict[str, tuple[Any, Any]] = {}
        """Per method: (the handler gRPC found, the guarded one built from it)."""

    @property
    def open_streams(self) -> int:
        """Open WatchSchedule streams."""
        return sum(self._streams["watch"].values())

    @property
    def open_report_streams(self) -> int:
        """Open StreamReports streams."""
        return sum(self._streams["report"].values())

    def wrap(self, handler: Any, method: str, metadata: Any) -> Any:
        if self._expected is not None and not method.startswith(OPEN_METHOD_PREFIXES):
            given = _bearer(metadata)
            if not hmac.compare_digest(given, self._expected):
                reason = "missing bearer token" if not given else "wrong bearer token"
                self._log.warning(f"auth:{method}", f"rejected {method}: {reason}")
                refusal = _refusal(grpc.StatusCode.UNAUTHENTICATED, f"authorization: {reason}",
                                   streaming=handler.response_streaming)
                return _replace(handler, refusal, deserializer=_ignore_body)
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]  # built once per method: nothing in it depends on the call
        if handler.stream_unary:
            return handler  # no Perseus RPC takes a client stream with a single answer
        if handler.stream_stream:
            behavior = self._count_stream(handler.stream_stream, "report", self._limits.max_report_streams,
                                          self._limits.max_report_streams_per_client, check_messages=method)
            wrapped = _replace(handler, behavior, deserializer=_tolerant(handler.request_deserializer))
        else:
            behavior = handler.unary_stream or handler.unary_unary
            if handler.unary_stream:
                behavior = self._count_stream(behavior, "watch", self._limits.max_watch_streams,
                                              self._limits.max_watch_streams_per_client)
            wrapped = _replace(handler, self._check_body(method, behavior),
                               deserializer=_tolerant(handler.request_deserializer))
        if len(self._wrapped) < MAX_CACHED_METHODS:
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _check_body(self, method: str, behavior: Behavior) -> Behavior:
        """``behavior`` behind a check that the body parsed, keeping its kind (async, generator or sync)."""
        message = f"{method}: the request body is not a valid protobuf message"

        def undecodable(request: Any, context: grpc.aio.ServicerContext) -> bool:
            if not isinstance(request, _Undecodable):
                return False
            self._log.warning(f"decode:{method}", f"rejected {message} from {context.peer()} "
                                                  f"({request.error.__class__.__name__})")
            return True

        if inspect.isasyncgenfunction(behavior):
            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if undecodable(request, context):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
                async for item in behavior(request, context):
                    yield item

            return streaming
        if inspect.iscoroutinefunction(behavior):
            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if undecodable(request, context):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
                return await behavior(request, context)

            return unary

        def blocking(request: Any, context: Any) -> Any:
            # A synchronous servicer runs in the server's thread pool, where abort() blocks and raises.
            if undecodable(request, context):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
            return behavior(request, context)

        return blocking

    async def _decoded(self, method: str, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[Any]:
        """A client stream's messages; the call ends with INVALID_ARGUMENT at the first undecodable one."""
        message = f"{method}: a message on the stream is not a valid protobuf message"
        async for request in requests:
            if isinstance(request, _Undecodable):
                self._log.warning(f"decode:{method}", f"rejected {message} from {context.peer()} "
                                                      f"({request.error.__class__.__name__})")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
            yield request

    def _count_stream(self, behavior: Behavior, kind: str, total: int, per_client: int,
                      check_messages: str | None = None) -> Behavior:
        """``behavior`` refused over ``total`` open streams of ``kind``, or ``per_client`` from one address.

        ``check_messages``: the method's name, for a client stream whose messages are decode-checked
        (in this one wrapper: every layer costs each message a generator step).
        """
        streams = self._streams[kind]
        flag = f"--max-{kind}-streams"

        async def counted(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            client = client_address(context.peer())
            if sum(streams.values()) >= total:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"the server has {total} open {kind} streams, its limit (perseus serve {flag})")
            if streams[client] >= per_client:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"{client} has {per_client} open {kind} streams, the per-client limit "
                                    f"(perseus serve {flag}-per-client)")
            streams[client] += 1
            try:
                if check_messages is not None:
                    request = self._decoded(check_messages, request, context)
                async for item in behavior(request, context):
                    yield item
            finally:
                streams[client] -= 1
                if not streams[client]:
                    del streams[client]

        return counted


def _bearer(metadata: Any) -> bytes:
    got: str | bytes = ""
    for key, value in metadata or ():
        if key == "authorization":
            got = value
    return got.encode() if isinstance(got, str) else got


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """A deserializer that returns :class:`_Undecodable` instead of raising."""

    def decode(data: bytes) -> Any:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf raises DecodeError, but a bad varint can raise others
            return _Undecodable(exc)

    return decode


def _refusal(code: grpc.StatusCode, message: str, *, streaming: bool) -> Behavior:
    """A behavior that only answers ``code`` (an async generator for streaming responses)."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    return refuse_stream if streaming else refuse


def _replace(handler: Any, behavior: Behavior, *, deserializer: Callable[[bytes], Any]) -> Any:
    """``handler`` with another behavior and request deserializer (same kind, same response encoding)."""
    codecs = dict(request_deserializer=deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(behavior, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(behavior, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(behavior, **codecs)
    return grpc.stream_stream_rpc_method_handler(behavior, **codecs)
