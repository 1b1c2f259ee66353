"""The scheduler's spans of a job (docs/operations.md, "Tracing"): the delivery continues
the job's trace from its message, the first dispatch records how long the job waited, and
each attempt is a ``dispatch`` span whose ``traceparent`` the Dispatch carries to the node
(the node's ``run``, and the result's ``verify`` and ``finalise``, are its children)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from fleetwire.messaging.topology import HEADER_REQUEST_ID
from fleetwire.process.tracing import context_from, trace_id_of, tracer, within_trace
from scheduler.settlement import Ending

# Attempts that end so are no fault of anyone's: their dispatch span's status stays unset.
_FAULTLESS = frozenset({Ending.SUCCEEDED, Ending.CANCELLED})


def delivery_context(headers: Mapping[str, Any]) -> Context:
    """The job's trace as its message carries it: its ``traceparent`` (the bridge's
    ``publish`` span); for a message of a bridge from before tracing, the trace id it
    carried as ``x-request-id`` (parent unknown); else an empty context (a new trace)."""
    context = context_from(headers)
    if trace_id_of(context):
        return context
    legacy = headers.get(HEADER_REQUEST_ID, "")
    return within_trace(legacy.decode() if isinstance(legacy, bytes) else str(legacy))


def record_queue_wait(job_id: str, accepted_at: datetime, dispatched_at: datetime) -> None:
    """The ``queue wait`` span, made once it is over: from the job's acceptance (a start
    time of the past) to its first dispatch, in the current (the delivery's) context."""
    end = _unix_ns(dispatched_at)
    wait = tracer().start_span(
        "queue wait",
        kind=SpanKind.CONSUMER,
        start_time=min(_unix_ns(accepted_at), end),
        attributes={"fleetwire.job_id": job_id},
    )
    wait.end(end_time=end)


def dispatch_span(
    job_id: str, attempt: int, node_id: str, model: str
) -> AbstractContextManager[Span]:
    """The attempt's ``dispatch`` span, current within the block: Dispatch sent → attempt
    settled."""
    return tracer().start_as_current_span(
        "dispatch",
        kind=SpanKind.CLIENT,
        attributes={
            "fleetwire.job_id": job_id,
            "fleetwire.attempt": attempt,
            "fleetwire.node_id": node_id,
            "fleetwire.model": model,
        },
    )


def note_ending(ending: Ending, reason: str = "") -> None:
    """Says on the current (``dispatch``) span how the attempt ended; an error unless it
    succeeded or was cancelled."""
    span = trace.get_current_span()
    span.set_attribute("fleetwire.ending", ending.value)
    if ending not in _FAULTLESS:
        span.set_status(Status(StatusCode.ERROR, reason or ending.value))


def _unix_ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)
