"""Trace context propagation (W3C traceparent) and the span plumbing every process shares:
``fleetwire.process.tracing``, the log processor, the scheduler's reading of a delivery, the
node's run span and the SDK's outgoing metadata."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from fleetwire.process import tracing
from fleetwire.process.logs import add_trace_ids
from fleetwire.process.tracing import (
    attached,
    configure_tracing,
    context_from,
    current_trace_id,
    in_trace_of_job,
    is_trace_id,
    trace_carrier,
    trace_id_of,
    traceparent_of,
    tracer,
    within_trace,
)
from fleetwire.process.tracing_settings import TracingSettings
from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from fleetwire_client.job_requests import trace_metadata
from node.job_trace import note_final, run_span
from scheduler.job_spans import delivery_context

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The process's tracer, for this test, records into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def ids(span: trace.Span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format_trace_id(ctx.trace_id), format_span_id(ctx.span_id)


# -- reading and writing traceparent ------------------------------------------------------


def test_a_traceparent_is_continued(spans: InMemorySpanExporter) -> None:
    parent = context_from({"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
    assert trace_id_of(parent) == TRACE
    with tracer().start_as_current_span("child", context=parent) as span:
        assert current_trace_id() == TRACE
        carrier = trace_carrier()
    (finished,) = spans.get_finished_spans()
    assert finished.parent is not None
    assert format_span_id(finished.parent.span_id) == PARENT
    # What goes on names the child as the parent, in the same trace, and keeps the state.
    assert carrier == {"traceparent": f"00-{TRACE}-{ids(span)[1]}-01", "tracestate": "vendor=1"}


@pytest.mark.parametrize(
    "carrier",
    [
        {},
        {"traceparent": ""},
        {"traceparent": "not a traceparent"},
        {"traceparent": f"00-{'0' * 32}-{PARENT}-01"},  # the all-zero trace id is invalid
        {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},
        {"tracestate": "vendor=1"},
    ],
    ids=["none", "empty", "garbage", "zero-trace", "zero-span", "state-only"],
)
def test_no_valid_traceparent_starts_a_new_trace(
    spans: InMemorySpanExporter, carrier: dict[str, str]
) -> None:
    context = context_from(carrier)
    assert trace_id_of(context) == ""
    with tracer().start_as_current_span("root", context=context) as span:
        assert is_trace_id(ids(span)[0])
        assert ids(span)[0] != TRACE
    assert spans.get_finished_spans()[0].parent is None


def test_header_values_may_be_bytes_and_nothing_else_leaks_in(
    spans: InMemorySpanExporter,
) -> None:
    """AMQP headers may decode as bytes; the caller's current span is not the parent of
    what an empty carrier continues."""
    assert trace_id_of(context_from({"traceparent": TRACEPARENT.encode()})) == TRACE
    with tracer().start_as_current_span("unrelated"):
        assert trace_id_of(context_from({})) == ""


def test_the_trace_id_format() -> None:
    assert is_trace_id(TRACE)
    assert is_trace_id(uuid.uuid4().hex)
    for bad in ("", "0" * 32, TRACE.upper(), TRACE[:-1], f"trace-{TRACE}"[:32]):
        assert not is_trace_id(bad)


def test_outside_any_trace_there_is_nothing_to_send() -> None:
    with attached(Context()):
        assert trace_carrier() == {}
        assert traceparent_of() == ""
        assert current_trace_id() == ""


# -- spans of a job made where its context did not travel ---------------------------------


def test_within_trace_joins_the_trace_under_an_unknown_parent(
    spans: InMemorySpanExporter,
) -> None:
    with tracer().start_as_current_span("publish", context=within_trace(TRACE)):
        assert current_trace_id() == TRACE
    (span,) = spans.get_finished_spans()
    assert span.parent is not None
    assert span.parent.is_remote
    assert trace_id_of(within_trace("trace-123")) == ""  # no W3C id: a new trace


def test_a_job_span_stays_in_the_current_trace_when_it_is_the_jobs(
    spans: InMemorySpanExporter,
) -> None:
    with tracer().start_as_current_span("submit") as submit:
        here = ids(submit)
        with tracer().start_as_current_span("publish", context=in_trace_of_job(here[0])):
            pass
        # Another job's row (the outbox relays it from inside this span): its own trace.
        with tracer().start_as_current_span("publish", context=in_trace_of_job(TRACE)):
            assert current_trace_id() == TRACE
        # A row from before tracing: no trace of its own to join.
        with tracer().start_as_current_span("publish", context=in_trace_of_job("trace-1")):
            assert current_trace_id() == here[0]
    first, second, third, _ = spans.get_finished_spans()
    assert first.parent is not None
    assert format_span_id(first.parent.span_id) == here[1]
    assert format_trace_id(second.context.trace_id) == TRACE
    assert third.parent is not None
    assert format_span_id(third.parent.span_id) == here[1]


# -- the scheduler's delivery and the node's run --------------------------------------------


def test_a_delivery_continues_its_traceparent() -> None:
    assert trace_id_of(delivery_context({"traceparent": TRACEPARENT})) == TRACE
    # A message of a bridge from before tracing: its x-request-id was the trace id.
    legacy = uuid.uuid4().hex
    assert trace_id_of(delivery_context({"x-request-id": legacy.encode()})) == legacy
    assert trace_id_of(delivery_context({"x-request-id": "trace-123"})) == ""
    assert trace_id_of(delivery_context({})) == ""


def test_the_node_runs_a_job_as_a_child_of_its_dispatch(spans: InMemorySpanExporter) -> None:
    dispatch = nodes_pb2.Dispatch(job_id="j", attempt=2, trace_id=TRACE, traceparent=TRACEPARENT)
    with run_span(dispatch, "node-1") as span:
        assert current_trace_id() == TRACE
        note_final(
            span,
            nodes_pb2.NodeStreamRequest(
                result=nodes_pb2.Result(
                    usage=job_pb2.Usage(completion_tokens=7), finish_reason="length"
                )
            ),
        )
    (run,) = spans.get_finished_spans()
    assert run.name == "run"
    assert run.parent is not None
    assert format_span_id(run.parent.span_id) == PARENT
    assert run.attributes is not None
    assert run.attributes["fleetwire.attempt"] == 2
    assert run.attributes["fleetwire.completion_tokens"] == 7
    assert run.status.is_ok


def test_a_failed_run_is_an_error_unless_cancelled(spans: InMemorySpanExporter) -> None:
    for reason in ("ENGINE_ERROR", "CANCELLED"):
        with run_span(nodes_pb2.Dispatch(traceparent=TRACEPARENT), "n") as span:
            note_final(span, nodes_pb2.NodeStreamRequest(failure=nodes_pb2.Failure(reason=reason)))
    failed, cancelled = spans.get_finished_spans()
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert cancelled.status.status_code is trace.StatusCode.UNSET


def test_a_dispatch_from_an_older_scheduler_joins_its_trace_id(
    spans: InMemorySpanExporter,
) -> None:
    with run_span(nodes_pb2.Dispatch(trace_id=TRACE), "n"):
        assert current_trace_id() == TRACE


# -- log lines ------------------------------------------------------------------------------


def test_log_lines_carry_the_current_trace(spans: InMemorySpanExporter) -> None:
    assert add_trace_ids(None, "info", {"event": "outside"}) == {"event": "outside"}
    with tracer().start_as_current_span("call") as span:
        line = add_trace_ids(None, "info", {"event": "inside"})
        named = add_trace_ids(None, "info", {"event": "own", "trace_id": "given"})
    assert (line["trace_id"], line["span_id"]) == ids(span)
    assert named["trace_id"] == "given"
    assert "span_id" not in named


def test_configured_logging_adds_them(
    spans: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleetwire.process.logs import configure_logging

    before = structlog.get_config()
    configure_logging(json=True, process="unit")
    try:
        with tracer().start_as_current_span("call") as span:
            structlog.get_logger("t").info("hello")
    finally:
        structlog.configure(**before)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["trace_id"], line["span_id"]) == ids(span)


# -- the file exporter and the settings -------------------------------------------------------


def test_the_file_exporter_writes_a_json_line_per_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "_provider", None)  # nothing to shut down; restored after
    monkeypatch.setattr(tracing, "_tracer", None)
    path = tmp_path / "spans" / "bridge.jsonl"
    provider = configure_tracing(
        TracingSettings(file=path), service="fleetwire-test", instance="t1"
    )
    try:
        with tracer().start_as_current_span("outer", context=context_from({})) as outer:
            with tracer().start_as_current_span("inner", attributes={"fleetwire.jobs": 2}):
                pass
            outer.add_event("accepted")
    finally:
        provider.shutdown()
    inner, outer_line = (json.loads(line) for line in path.read_text().splitlines())
    assert inner["name"] == "inner"
    assert outer_line["name"] == "outer"
    assert inner["trace_id"] == outer_line["trace_id"] == ids(outer)[0]
    assert inner["parent_span_id"] == outer_line["span_id"]
    assert outer_line["parent_span_id"] == ""
    assert inner["attributes"] == {"fleetwire.jobs": 2}
    assert inner["service"] == "fleetwire-test"
    assert outer_line["events"][0]["name"] == "accepted"
    assert outer_line["start_unix_nano"] <= inner["start_unix_nano"] <= inner["end_unix_nano"]


def test_the_otlp_endpoint_honours_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for variable in (
        "FLEETWIRE_TRACING_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ):
        monkeypatch.delenv(variable, raising=False)
    assert TracingSettings().otlp_endpoint == ""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert TracingSettings().otlp_endpoint == "http://collector:4317"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317")
    assert TracingSettings().otlp_endpoint == "http://traces:4317"
    monkeypatch.setenv("FLEETWIRE_TRACING_OTLP_ENDPOINT", "http://ours:4317")
    assert TracingSettings().otlp_endpoint == "http://ours:4317"


# -- the SDK ------------------------------------------------------------------------------


def test_the_sdk_sends_the_callers_trace(spans: InMemorySpanExporter) -> None:
    assert trace_metadata(TRACEPARENT) == (("traceparent", TRACEPARENT),)
    with attached(Context()):
        assert trace_metadata() == ()  # no trace: the bridge starts one
    with tracer().start_as_current_span("caller") as span:
        (sent,) = trace_metadata()
    assert sent[0] == "traceparent"
    assert sent[1].startswith(f"00-{ids(span)[0]}-{ids(span)[1]}-")
