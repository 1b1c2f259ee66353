"""Metrics and traces of every gRPC server call: one interceptor, ``ServerTelemetry``, the
outermost of each server ``start_server`` builds (so it sees the status the edge mapped).

Metrics (``GrpcServerMetrics``, in the registry of the process's metrics endpoint):

- ``fleetwire_grpc_server_handled_total{service, method, code}``: calls finished, by the
  canonical status code's name (``OK``, ``NOT_FOUND``...); ``CANCELLED`` when the client
  went away, ``DEADLINE_EXCEEDED`` when its deadline ran out first.
- ``fleetwire_grpc_server_handling_seconds{service, method}``: time from the handler's
  start to the call's end — for a stream, its whole life.

Labels are bounded by the service descriptors: only methods of services the server
registered resolve to a handler (a call to any other method is UNIMPLEMENTED before any
interceptor sees it), and each of them is there from the start (``code="OK"`` at 0, an
empty histogram), so a rate over a quiet method reads 0 rather than nothing.

Traces: a SERVER span per call (``fleetwire.v1.JobService/Submit``), continuing the
caller's W3C ``traceparent`` metadata or starting a trace, current while the handler runs
(its log lines carry the trace id; the edge names it in an INTERNAL error). Not for health
checks and reflection (noise), nor for bidirectional streams: NodeStream lives as long as
a node's session, and the work done on it is traced per job through ``Dispatch``.

Why not opentelemetry-instrumentation-grpc: its grpc.aio server interceptor iterates every
response-streaming handler as an async generator, and NodeStream is a coroutine that writes
with ``context.write`` — it breaks that stream (open-telemetry/opentelemetry-python-contrib
issue 3066). One interceptor for both also times each call once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram

from fleetwire.process.tracing import attached, context_from, tracer
from fleetwire.rpc.edge import HandlerWrapper

Behavior = Callable[[Any, Any], Any]

# Up to an hour: a Watch or a NodeStream is measured whole.
HANDLING_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
)  # fmt: skip

UNTRACED_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

# The codes that mean the server failed (OpenTelemetry's gRPC conventions): the span's
# status is ERROR for these only; INVALID_ARGUMENT, NOT_FOUND... are the caller's.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class GrpcServerMetrics:
    """The gRPC server metrics of one process's registry; the servers of the process (the
    scheduler's node and admin ports) share one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "fleetwire_grpc_server_handled",
            "gRPC calls finished by this process's servers, by status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self.handling = Histogram(
            "fleetwire_grpc_server_handling_seconds",
            "Time from a gRPC call's handler start to its end (a stream: its whole life).",
            ["service", "method"],
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )

    def expect(self, services: Iterable[str]) -> None:
        """Creates the series of every method of ``services`` (full names, as in the
        generated descriptors); a name the descriptor pool does not know is skipped."""
        pool = descriptor_pool.Default()
        for name in services:
            try:
                service = pool.FindServiceByName(name)
            except KeyError:
                continue
            for method in service.methods:
                self.handling.labels(name, method.name)
                self.handled.labels(name, method.name, grpc.StatusCode.OK.name)


class ServerTelemetry(HandlerWrapper):
    """Counts, times and traces the calls of each async handler as the module describes;
    synchronous handlers (none of ours) pass as they are."""

    def __init__(self, metrics: GrpcServerMetrics | None) -> None:
        super().__init__()
        self._metrics = metrics

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return observe_handler(handler, method, self._metrics)


@dataclass(frozen=True, slots=True)
class _Rpc:
    """What is known of a method before any call: its labels and whether calls are traced."""

    name: str  # "fleetwire.v1.JobService/Submit"
    service: str
    method: str
    traced: bool
    metrics: GrpcServerMetrics | None

    @classmethod
    def of(cls, path: str, *, bidi: bool, metrics: GrpcServerMetrics | None) -> _Rpc:
        name = path.lstrip("/")
        service, _, method = name.partition("/")
        traced = not bidi and service not in UNTRACED_SERVICES
        return cls(name, service, method, traced, metrics)

    def begin(self, context: Any) -> _Call:
        """Starts observing one call: its SERVER span when traced, and the call's end
        (``context.add_done_callback``: also when the client cancels a stream whose
        generator grpc then leaves suspended) to count and time it."""
        span: trace.Span | None = None
        scope = Context()
        if self.traced:
            parent = context_from(dict(context.invocation_metadata() or ()))
            span = tracer().start_span(
                self.name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes={
                    "rpc.system": "grpc",
                    "rpc.service": self.service,
                    "rpc.method": self.method,
                },
            )
            scope = trace.set_span_in_context(span, parent)
        call = _Call(self, context, span, scope, time.perf_counter())
        context.add_done_callback(call.finish)
        return call


@dataclass(eq=False, slots=True)
class _Call:
    """One call being observed; ``finish`` runs once, when grpc ends the call. grpc's own
    ``context.cancelled()`` still reads False then, so the handler's fate says it: a call
    that ended before its handler did (cancelled in it, or left suspended) was cancelled."""

    rpc: _Rpc
    context: Any
    span: trace.Span | None
    scope: Context  # the span's context, made current while the handler runs
    started: float
    completed: bool = False  # the handler returned, or raised (an abort or a fault)
    raised: bool = False  # it raised something other than an abort
    finished: bool = False

    @contextlib.contextmanager
    def running(self, *, last: bool = True) -> Iterator[None]:
        """Runs (a step of) the handler in the call's trace; ``last``: its return is the
        handler's. An exception that is no abort (the edge maps ours) ends it UNKNOWN."""
        try:
            with attached(self.scope):
                yield
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            self.completed = True
            raise
        except Exception:
            self.completed = self.raised = True
            raise
        if last:
            self.completed = True

    def code(self) -> grpc.StatusCode:
        context = self.context
        if not self.completed:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                return grpc.StatusCode.DEADLINE_EXCEEDED
            return grpc.StatusCode.CANCELLED
        code: grpc.StatusCode | None = context.code()
        if code is None:
            return grpc.StatusCode.UNKNOWN if self.raised else grpc.StatusCode.OK
        return code

    def finish(self, _context: Any = None) -> None:
        if self.finished:
            return
        self.finished = True
        rpc, code = self.rpc, self.code()
        if rpc.metrics is not None:
            rpc.metrics.handled.labels(rpc.service, rpc.method, code.name).inc()
            rpc.metrics.handling.labels(rpc.service, rpc.method).observe(
                time.perf_counter() - self.started
            )
        if self.span is not None:
            self.span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in SERVER_FAULTS:
                self.span.set_status(Status(StatusCode.ERROR, code.name))
            self.span.end()


def observe_handler(
    handler: grpc.RpcMethodHandler, method: str, metrics: GrpcServerMetrics | None
) -> grpc.RpcMethodHandler:
    """``handler`` counted, timed and (unless a bidirectional stream) traced; the
    (de)serializers are kept as they are (the edge decodes unary requests itself)."""
    bidi = handler.request_streaming and handler.response_streaming
    rpc = _Rpc.of(method, bidi=bool(bidi), metrics=metrics)
    makers = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    )
    for behavior, make in makers:
        if behavior is not None and _is_async(behavior):
            return make(
                _observing(behavior, rpc),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def _is_async(behavior: Behavior) -> bool:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


def _observing(behavior: Behavior, rpc: _Rpc) -> Behavior:
    """The same shape as ``behavior``: an async generator for one (it yields responses), a
    coroutine otherwise (it returns one, or writes with ``context.write``). A generator's
    steps run in the call's trace one at a time, never across a ``yield``: grpc may leave it
    suspended there (a cancelled call) and close it later from another task."""
    if inspect.isasyncgenfunction(behavior):

        async def stream_out(request: Any, context: Any) -> AsyncIterator[Any]:
            call = rpc.begin(context)
            async with contextlib.aclosing(behavior(request, context)) as responses:
                while True:
                    with call.running(last=False):
                        try:
                            response = await anext(responses)
                        except StopAsyncIteration:
                            call.completed = True
                            return
                    yield response

        return stream_out

    async def answer(request: Any, context: Any) -> Any:
        call = rpc.begin(context)
        with call.running():
            return await behavior(request, context)

    return answer
