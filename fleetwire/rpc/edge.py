"""The edge of every fleetwire gRPC server: requests decoded and checked, errors mapped once.

``edge_server()`` builds a ``grpc.aio`` server with ``ErrorEdge``, a server interceptor that
wraps every async method handler it resolves (our services, health, reflection) so that:

- a request that does not decode (invalid UTF-8 in a string, a truncated message) or
  carries a malformed ``google.protobuf.Duration``/``Timestamp`` is INVALID_ARGUMENT with a
  google.rpc.BadRequest naming the field where it can be known (``fleetwire.rpc.wire_faults``,
  ``fleetwire.domain.validation.time_field_violations``);
- a ``FleetwireError`` raised by a handler becomes its canonical status with details
  (``grpc_errors.status_for``);
- any other exception is logged with the call's trace id (W3C, of the call's span) and
  becomes INTERNAL carrying only that trace id: the exception's text never reaches the
  client.

Why the deserializers are wrapped and not merely the handlers: grpc.aio decodes a unary
request *before* the handler runs, and a deserializer that raises ends the call as UNKNOWN
with the exception's text. So for unary requests the edge takes the raw bytes (no
deserializer) and decodes inside the wrapped handler; for streamed requests the decoding
happens inside the handler anyway (``context.read()`` / the request iterator), so the
deserializer itself is wrapped to raise ``InvalidArgument``, which the wrapped handler maps
like any other error — a NodeStream that receives garbage ends with INVALID_ARGUMENT.

Synchronous handlers (none of ours) are left as grpc built them.
"""

from __future__ import annotations

import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import structlog
from google.protobuf.message import Message

from fleetwire.domain.errors import FleetwireError, Internal, InvalidArgument
from fleetwire.domain.validation import time_field_violations
from fleetwire.process.tracing import current_trace_id
from fleetwire.rpc.options import SERVER_OPTIONS
from fleetwire.rpc.status import abort_with
from fleetwire.rpc.wire_faults import decode_fault

log = structlog.get_logger(__name__)

Decoder = Callable[[bytes], Any]
Behavior = Callable[[Any, Any], Any]


def edge_server(
    options: Sequence[tuple[str, Any]] = SERVER_OPTIONS,
    *,
    outer: Sequence[grpc.aio.ServerInterceptor] = (),
) -> grpc.aio.Server:
    """A grpc.aio server with the project's options and ``ErrorEdge``: how every fleetwire
    server is built. ``outer`` interceptors wrap the edge (they see the status it mapped):
    ``start_server`` puts its telemetry there."""
    return grpc.aio.server(options=list(options), interceptors=(*outer, ErrorEdge()))


class HandlerWrapper(grpc.aio.ServerInterceptor):
    """Wraps each resolved method handler once, with ``wrap``, and keeps the twin per
    method: bounded by the methods the server has, since unknown methods resolve to None
    and are not kept."""

    def __init__(self) -> None:
        # method -> (the handler grpc resolved, its wrapped twin)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler: grpc.RpcMethodHandler | None = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class ErrorEdge(HandlerWrapper):
    """Guards each method handler as the module describes."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return guard_handler(handler, method)


def guard_handler(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """``handler`` with checked decoding and mapped errors (unchanged when synchronous)."""
    decode = checked_decoder(handler.request_deserializer)
    serialize = handler.response_serializer
    if handler.unary_unary is not None and _is_async(handler.unary_unary):
        return grpc.unary_unary_rpc_method_handler(
            _unary_request(handler.unary_unary, decode, method),
            request_deserializer=None,  # raw bytes: decoded inside the guard
            response_serializer=serialize,
        )
    if handler.unary_stream is not None and _is_async(handler.unary_stream):
        return grpc.unary_stream_rpc_method_handler(
            _unary_request(handler.unary_stream, decode, method),
            request_deserializer=None,
            response_serializer=serialize,
        )
    if handler.stream_unary is not None and _is_async(handler.stream_unary):
        return grpc.stream_unary_rpc_method_handler(
            _streamed_request(handler.stream_unary, method),
            request_deserializer=decode,  # raises InvalidArgument inside the guard
            response_serializer=serialize,
        )
    if handler.stream_stream is not None and _is_async(handler.stream_stream):
        return grpc.stream_stream_rpc_method_handler(
            _streamed_request(handler.stream_stream, method),
            request_deserializer=decode,
            response_serializer=serialize,
        )
    return handler


def checked_decoder(deserializer: Decoder | None) -> Decoder:
    """Decodes with ``deserializer`` (a generated ``FromString``) and checks every Duration
    and Timestamp; raises InvalidArgument naming the field instead of the protobuf
    runtime's exception. Without a deserializer the bytes pass through unchanged."""
    if deserializer is None:
        return lambda raw: raw
    message_type = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_type, "DESCRIPTOR", None)

    def decode(raw: bytes) -> Any:
        try:
            request = deserializer(raw)
        except Exception as err:
            raise InvalidArgument([decode_fault(descriptor, raw)]) from err
        if isinstance(request, Message):
            violations = time_field_violations(request)
            if violations:
                raise InvalidArgument(violations)
        return request

    return decode


def _is_async(behavior: Behavior) -> bool:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


def _unary_request(behavior: Behavior, decode: Decoder, method: str) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def stream_out(raw: bytes, context: Any) -> AsyncIterator[Any]:
            try:
                request = decode(raw)
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
            except Exception as err:
                await _end_with(context, err, method)

        return stream_out

    async def answer(raw: bytes, context: Any) -> Any:
        try:
            return await behavior(decode(raw), context)
        except Exception as err:
            await _end_with(context, err, method)
            return None

    return answer


def _streamed_request(behavior: Behavior, method: str) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def stream_out(requests: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async with contextlib.aclosing(behavior(requests, context)) as responses:
                    async for response in responses:
                        yield response
            except Exception as err:
                await _end_with(context, err, method)

        return stream_out

    async def answer(requests: Any, context: Any) -> Any:
        try:
            return await behavior(requests, context)
        except Exception as err:
            await _end_with(context, err, method)
            return None

    return answer


async def _end_with(context: Any, err: Exception, method: str) -> None:
    """Ends the call with ``err``'s status: its own for a FleetwireError, INTERNAL (logged
    with the trace id) for anything else. An abort already under way passes through."""
    if isinstance(err, grpc.aio.AbortError):
        raise err
    if isinstance(err, FleetwireError):
        await abort_with(context, err)
        return
    trace_id = _trace_id()
    log.error("unexpected error", rpc=method, trace_id=trace_id, exc_info=err)
    if context.done():  # the status is already out: nothing more can be said
        return
    await abort_with(context, Internal(trace_id))


def _trace_id() -> str:
    """The call's trace id: its span's (``fleetwire.rpc.telemetry``: the caller's W3C trace,
    or the one the server started), else one bound to the log context, else a new one — so
    the log line and the client's message agree."""
    current = current_trace_id()
    if current:
        return current
    bound = structlog.contextvars.get_contextvars().get("trace_id")
    if isinstance(bound, str) and bound:
        return bound
    return uuid.uuid4().hex
