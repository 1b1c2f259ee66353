"""The node's span of a job: ``run``, a child of the mesh's ``dispatch`` span of the attempt
(``Dispatch.traceparent``), so one job is one trace across client, bridge, scheduler and
node. The job's log lines on the node carry its trace id."""

from __future__ import annotations

from contextlib import AbstractContextManager

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from fleetwire.process.tracing import TRACEPARENT, context_from, tracer, within_trace
from fleetwire.v1 import node_service_pb2 as nodes_pb2

# Failures that are no fault of the node's: the span's status stays unset.
_FAULTLESS_FAILURES = frozenset({"CANCELLED", "NODE_SHUTDOWN"})


def run_span(dispatch: nodes_pb2.Dispatch, node_id: str) -> AbstractContextManager[Span]:
    """The attempt's ``run`` span, current within the block. A Dispatch without a
    traceparent (a scheduler from before tracing) joins the trace its ``trace_id`` names."""
    parent = context_from({TRACEPARENT: dispatch.traceparent})
    if not dispatch.traceparent:
        parent = within_trace(dispatch.trace_id)
    return tracer().start_as_current_span(
        "run",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "fleetwire.job_id": dispatch.job_id,
            "fleetwire.attempt": dispatch.attempt,
            "fleetwire.node_id": node_id,
            "fleetwire.model": dispatch.spec.model,
        },
    )


def note_final(span: Span, final: nodes_pb2.NodeStreamRequest) -> None:
    """Records how the attempt ended on its span: the tokens of a result, the reason of a
    failure (an error unless the job was cancelled or handed back)."""
    if final.HasField("result"):
        span.set_attribute("fleetwire.outcome", "result")
        span.set_attribute("fleetwire.completion_tokens", final.result.usage.completion_tokens)
        span.set_attribute("fleetwire.finish_reason", final.result.finish_reason)
    elif final.HasField("failure"):
        reason = final.failure.reason
        span.set_attribute("fleetwire.outcome", reason)
        if reason not in _FAULTLESS_FAILURES:
            span.set_status(Status(StatusCode.ERROR, reason))
