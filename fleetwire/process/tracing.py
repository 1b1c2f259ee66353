"""Tracing of every process (OpenTelemetry): one W3C trace per job, across the bridge, the
scheduler and the node.

A process calls ``configure_tracing`` once at start, before it builds its servers, with its
``FLEETWIRE_TRACING_*`` settings. Spans are always made — so every job has a W3C trace id,
the ``trace_id`` of its log lines, its row and its answer to the client — but they leave the
process only through the exporters configured: OTLP/gRPC (batched, in a background thread)
and a file of JSON lines (one per span, written as it ends: tests and debugging). With
neither, a span costs its ids and its attributes and ends in no exporter at all. Until
``configure_tracing`` runs (in-process test meshes), a provider without exporters serves.

Context crosses each process boundary as W3C ``traceparent`` (and ``tracestate``), written
and read by OpenTelemetry's TraceContext propagator only: gRPC metadata (client → bridge),
AMQP message headers (bridge → scheduler, kept through retry stages), and
``Dispatch.traceparent`` (scheduler → node). ``docs/operations.md`` ("Tracing") lists the
spans.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    TraceFlags,
    format_span_id,
    format_trace_id,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from fleetwire.process.metrics import VERSION
from fleetwire.process.tracing_settings import TracingSettings

__all__ = [
    "TRACEPARENT",
    "TRACERESPONSE",
    "TRACESTATE",
    "JsonLinesSpanExporter",
    "attached",
    "configure_tracing",
    "context_from",
    "current_trace_id",
    "in_trace_of_job",
    "is_trace_id",
    "new_trace_id",
    "span_record",
    "trace_carrier",
    "trace_id_of",
    "traceparent_of",
    "tracer",
    "within_trace",
]

log = structlog.get_logger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# W3C Trace Context Level 2's response header: the trace (and server span) that served a
# call, so a client that sent no traceparent learns the trace id it was given.
TRACERESPONSE = "traceresponse"

PROPAGATOR = TraceContextTextMapPropagator()
_IDS = RandomIdGenerator()
_SCOPE = "fleetwire"

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None
_lock = threading.Lock()


def configure_tracing(
    settings: TracingSettings, *, service: str, instance: str = ""
) -> TracerProvider:
    """Makes this process's tracer provider: resource ``service`` (``fleetwire-bridge``...)
    and ``instance`` (a replica or node id), an OTLP exporter when an endpoint is set, the
    JSON-lines file when a file is. Replaces (and shuts down) the provider used so far."""
    attributes: dict[str, str] = {SERVICE_NAME: service, SERVICE_VERSION: VERSION}
    if instance:
        attributes[SERVICE_INSTANCE_ID] = instance
    provider = TracerProvider(resource=Resource.create(attributes))
    exporters = []
    if settings.file is not None:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(settings.file)))
        exporters.append(f"file:{settings.file}")
    if settings.otlp_endpoint:
        # Imported only when used: it loads the OTLP protos and a gRPC channel.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
        )
        exporters.append(f"otlp:{settings.otlp_endpoint}")
    global _provider, _tracer
    with _lock:
        old, _provider, _tracer = _provider, provider, provider.get_tracer(_SCOPE, VERSION)
    if old is not None:
        old.shutdown()
    log.info("tracing", service=service, exporters=exporters or ["none"])
    return provider


def tracer() -> trace.Tracer:
    """The process's tracer (a provider without exporters until ``configure_tracing``)."""
    global _provider, _tracer
    current = _tracer
    if current is not None:
        return current
    with _lock:
        if _tracer is None:
            _provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "fleetwire"}))
            _tracer = _provider.get_tracer(_SCOPE, VERSION)
        return _tracer


# -- ids and W3C headers ----------------------------------------------------------------


def is_trace_id(text: str) -> bool:
    """Whether ``text`` is a W3C trace id: 32 lower-case hex digits, not all zero."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text) and text != "0" * 32


def new_trace_id() -> str:
    """A fresh W3C trace id, for a job that starts a trace of its own (a validation job)."""
    return format_trace_id(_IDS.generate_trace_id())


def trace_id_of(span: Span | Context | None) -> str:
    """The hex trace id of ``span`` (or of the span in a context); "" when it has none."""
    if span is None or isinstance(span, Context):
        span = trace.get_current_span(span)
    ctx = span.get_span_context()
    return format_trace_id(ctx.trace_id) if ctx.is_valid else ""


def current_trace_id() -> str:
    """The trace id of the current span; "" outside any trace."""
    return trace_id_of(trace.get_current_span())


def trace_carrier(span: Span | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate`` when there is one) naming ``span`` (default: the
    current span) as the parent: what goes into headers, metadata or a Dispatch. Empty
    outside any trace."""
    carrier: dict[str, str] = {}
    context = trace.set_span_in_context(span) if span is not None else None
    PROPAGATOR.inject(carrier, context=context)
    return carrier


def traceparent_of(span: Span | None = None) -> str:
    """The ``traceparent`` value naming ``span`` (default: the current span); ""
    outside any trace. Also the value of a ``traceresponse`` (same format)."""
    return trace_carrier(span).get(TRACEPARENT, "")


def context_from(carrier: Mapping[str, Any]) -> Context:
    """The context continued from a carrier's ``traceparent``/``tracestate`` (gRPC
    metadata, AMQP headers; values may be bytes). A missing or malformed traceparent gives
    an empty context: a span made in it starts a new trace. Nothing else of the carrier, nor
    the caller's current context, leaks in."""
    values: dict[str, str] = {}
    for key in (TRACEPARENT, TRACESTATE):
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str) and value:
            values[key] = value
    if TRACEPARENT not in values:
        return Context()
    return PROPAGATOR.extract(values, context=Context())


def within_trace(trace_id: str) -> Context:
    """A context in trace ``trace_id`` whose parent span is unknown: for a job's spans made
    where its context did not travel (the outbox relay, a result announced after a
    restart). They join the job's trace under a parent it does not hold. An empty context
    when ``trace_id`` is not a W3C trace id (a new trace)."""
    if not is_trace_id(trace_id):
        return Context()
    parent = SpanContext(
        trace_id=int(trace_id, 16),
        span_id=_IDS.generate_span_id(),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent), Context())


def in_trace_of_job(trace_id: str) -> Context:
    """Where a span of the job whose trace is ``trace_id`` belongs: the current context
    when its span is in that trace (the usual case), else ``within_trace(trace_id)``; the
    current context when ``trace_id`` is no W3C trace id (rows written before tracing)."""
    current = otel_context.get_current()
    if not is_trace_id(trace_id) or trace_id_of(current) == trace_id:
        return current
    return within_trace(trace_id)


@contextlib.contextmanager
def attached(context: Context) -> Iterator[None]:
    """Makes ``context`` current for the block: spans made inside are its children and log
    lines carry its trace id."""
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


# -- the file exporter ------------------------------------------------------------------


class JsonLinesSpanExporter(SpanExporter):
    """Appends each span as one JSON line (``span_record``) to a file. One ``write`` per
    export on a file opened for appending, so processes sharing a file never interleave
    within a line. Meant for tests and debugging, not for volume: it writes as each span
    ends, on the thread that ends it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(
            json.dumps(span_record(s), separators=(",", ":"), default=str) + "\n" for s in spans
        ).encode()
        with self._lock:
            if self._fd is None:
                return SpanExportResult.FAILURE
            os.write(self._fd, data)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as plain JSON: ids in W3C hex, times in Unix nanoseconds."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": format_trace_id(ctx.trace_id) if ctx else "",
        "span_id": format_span_id(ctx.span_id) if ctx else "",
        "parent_span_id": format_span_id(parent.span_id) if parent else "",
        "name": span.name,
        "kind": span.kind.name,
        "service": str(span.resource.attributes.get(SERVICE_NAME, "")),
        "start_unix_nano": span.start_time,
        "end_unix_nano": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description or "",
        "attributes": _plain(span.attributes),
        "events": [
            {"name": e.name, "time_unix_nano": e.timestamp, "attributes": _plain(e.attributes)}
            for e in span.events
        ],
    }


def _plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (attributes or {}).items()}
