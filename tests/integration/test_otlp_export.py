"""The OTLP exporter, when configured, sends a process's spans to a collector: a real
OTLP/gRPC TraceService (OpenTelemetry's own protos) on this machine receives them, with the
process's resource and the spans' parent links."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from fleetwire.process import tracing
from fleetwire.process.tracing import configure_tracing, context_from, tracer
from fleetwire.process.tracing_settings import TracingSettings

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = threading.Event()

    def Export(  # noqa: N802 - gRPC method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def test_spans_reach_the_configured_collector(
    collector: tuple[Collector, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    servicer, port = collector
    monkeypatch.setattr(tracing, "_provider", None)  # restored after the test
    monkeypatch.setattr(tracing, "_tracer", None)
    settings = TracingSettings(otlp_endpoint=f"http://127.0.0.1:{port}")
    provider = configure_tracing(settings, service="fleetwire-bridge", instance="b1")
    try:
        parent = context_from({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
        with (
            tracer().start_as_current_span("fleetwire.v1.JobService/Submit", context=parent),
            tracer().start_as_current_span("publish"),
        ):
            pass
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
    assert servicer.received.wait(10)
    resource_spans = [rs for r in servicer.requests for rs in r.resource_spans]
    attributes = {
        a.key: a.value.string_value for rs in resource_spans for a in rs.resource.attributes
    }
    assert attributes["service.name"] == "fleetwire-bridge"
    assert attributes["service.instance.id"] == "b1"
    spans = {s.name: s for rs in resource_spans for scope in rs.scope_spans for s in scope.spans}
    submit, publish = spans["fleetwire.v1.JobService/Submit"], spans["publish"]
    assert submit.trace_id.hex() == publish.trace_id.hex() == TRACE
    assert submit.parent_span_id.hex() == "00f067aa0ba902b7"
    assert publish.parent_span_id == submit.span_id
