"""The server-sent events of ``GET /v1/jobs/{id}/events``: frames and their ids. Pure.

An event's id is a Watch cursor, ``<attempt>.<sequence>``: a ``chunk`` event's id is its
own attempt and sequence; a ``state`` or ``done`` event's id is that of the last chunk sent
before it (``0.0`` before any). A client that reconnects with ``Last-Event-ID`` is resumed
with ``JobDesk.watch`` after exactly that chunk — every later chunk of that attempt and
every chunk of a later attempt (sequences restart at 1 with a retry), never one it had —
after the job's current state. docs/http.md has the format.
"""

from __future__ import annotations

import json
import re
from typing import Any

from broker_bridge.watch_output import FROM_START, WatchCursor
from fleetwire.domain.errors import FieldViolation, InvalidArgument
from fleetwire.v1 import job_service_pb2

LAST_EVENT_ID_HEADER = "last-event-id"
_CURSOR = re.compile(r"(\d{1,10})\.(\d{1,19})")
MAX_ATTEMPT = 2**32 - 1
MAX_SEQUENCE = 2**64 - 1


def event_id(cursor: WatchCursor) -> str:
    return f"{cursor.attempt}.{cursor.sequence}"


def cursor_of(last_event_id: str | None) -> WatchCursor:
    """The cursor a ``Last-Event-ID`` names (none: from the start); InvalidArgument naming
    the header when it is not an id this API sent."""
    if last_event_id is None or not last_event_id.strip():
        return FROM_START
    found = _CURSOR.fullmatch(last_event_id.strip())
    if found is None:
        raise InvalidArgument(
            [FieldViolation("Last-Event-ID", "an event id as sent: <attempt>.<sequence>")]
        )
    attempt, sequence = int(found.group(1)), int(found.group(2))
    if attempt > MAX_ATTEMPT or sequence > MAX_SEQUENCE:
        raise InvalidArgument([FieldViolation("Last-Event-ID", "attempt or sequence too large")])
    return WatchCursor(attempt=attempt, sequence=sequence)


def frame(event: str, data: dict[str, Any], cursor: WatchCursor) -> bytes:
    """One event. The ``id`` line comes last: a client cut off inside an event has no id
    of it and resumes before it."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event}\ndata: {payload}\nid: {event_id(cursor)}\n\n".encode()


def chunk_data(chunk: job_service_pb2.TokenChunk) -> dict[str, Any]:
    return {
        "attempt": chunk.attempt,
        "sequence": chunk.sequence,
        "text": chunk.text,
        "token_count": chunk.token_count,
    }


def cursor_after(chunk: job_service_pb2.TokenChunk) -> WatchCursor:
    return WatchCursor(attempt=chunk.attempt, sequence=chunk.sequence)
