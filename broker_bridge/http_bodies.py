"""What every HTTP endpoint of the bridge reads off a request the same way: a JSON body
bounded while it is read, and the ``Idempotency-Key`` header (the client request id)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from fleetwire.domain.errors import FieldViolation, InvalidArgument

MAX_BODY_BYTES = 1 << 20
MAX_IDEMPOTENCY_KEY_CHARS = 128
IDEMPOTENCY_KEY_HEADER = "idempotency-key"


async def read_json(request: Request) -> Any:
    """The parsed body; InvalidArgument naming ``body`` when it is over ``MAX_BODY_BYTES``
    (refused as soon as it is, not after reading it all), not JSON, or holds a string that
    is not Unicode text."""
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > MAX_BODY_BYTES:
            raise InvalidArgument([FieldViolation("body", f"at most {MAX_BODY_BYTES} bytes")])
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise InvalidArgument([FieldViolation("body", "not JSON")]) from err
    try:
        # A "\ud800" escape decodes to a lone surrogate, which no protobuf string takes.
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as err:
        raise InvalidArgument(
            [FieldViolation("body", "a string holds a lone surrogate (not Unicode text)")]
        ) from err
    return body


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header (1 to 128 characters), or None when absent."""
    key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidArgument(
            [FieldViolation("Idempotency-Key", f"1 to {MAX_IDEMPOTENCY_KEY_CHARS} chars")]
        )
    return key
