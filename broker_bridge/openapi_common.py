"""What every group of paths in the OpenAPI document shares: the error responses (OpenAI's
error JSON, one per status the bridge answers), the headers, the bearer security scheme,
and the ``PathGroup`` a group of paths is handed in as.

The statuses and their meaning are ``openai_responses``' (``STATUS_OF_CODE``,
``unfinished_answer``); ``tests/unit/test_openapi_document.py`` keeps them in step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from broker_bridge.http_request_ids import MAX_REQUEST_ID_CHARS
from broker_bridge.openai_responses import JOB_ID_HEADER, KEY_ID_HEADER, SIGNATURE_HEADER
from broker_bridge.openapi_models import ErrorBody
from fleetwire.messaging.topology import HEADER_REQUEST_ID

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
BEARER = "bearerAuth"

ERROR_DESCRIPTIONS = {
    400: "A bad or unsupported field (`param` names it), or a body that is not a JSON object.",
    401: "Missing, malformed, unknown or revoked API key.",
    403: "The tenant's policy forbids the priority, network or subcloud.",
    404: "Unknown model (`model_not_found`).",
    409: "`Idempotency-Key` reused for another request (`idempotency_key_reused`), the "
    "tenant has no credit for a mainnet job (`insufficient_credit`), or the job was cancelled.",
    429: "Admission refused: the tenant's rate or waiting jobs, a full queue, too many open "
    "streams. Retry after `Retry-After` seconds.",
    500: "A bug: the message names the trace id under which it was logged.",
    502: "The job ended FAILED or DEAD_LETTERED (`code` is its reason).",
    503: "A backing service (PostgreSQL, RabbitMQ, Redis) is down, or no queue serves the "
    "job's route; nothing was accepted.",
    504: "The job EXPIRED (its TTL passed) or a deadline was exceeded.",
}

REQUEST_ID = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "description": "The caller's correlation id, logged with every line of the request and "
    f"returned in `X-Request-Id`: 1 to {MAX_REQUEST_ID_CHARS} visible ASCII characters "
    "(another value is replaced by a new id).",
    "schema": {"type": "string"},
}
HEADERS: dict[str, dict[str, Any]] = {
    "RequestId": {
        "description": "The request's correlation id: the caller's, or one made for it.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID_CHARS},
    },
    "RetryAfter": {
        "description": "Seconds to wait before retrying (RetryInfo's delay, rounded up).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "JobId": {
        "description": "The fleetwire job that answered.",
        "schema": {"type": "string", "minLength": 1},
    },
    "KeyId": {
        "description": "The signing node's key id (verify offline: docs/signing.md).",
        "schema": {"type": "string"},
    },
    "Signature": {
        "description": "The node's ed25519 signature of the result, base64.",
        "schema": {"type": "string"},
    },
}
HEADER_NAMES = {
    "RequestId": HEADER_REQUEST_ID,
    "RetryAfter": "Retry-After",
    "JobId": JOB_ID_HEADER,
    "KeyId": KEY_ID_HEADER,
    "Signature": SIGNATURE_HEADER,
}


def header_ref(name: str, *, required: bool = False) -> dict[str, Any]:
    """``{header name: reference}`` for a response's ``headers``."""
    ref: dict[str, Any] = {"$ref": f"#/components/headers/{name}"}
    if required:  # a Reference Object takes no siblings but summary/description
        ref = {**HEADERS[name], "required": True}
    return {HEADER_NAMES[name]: ref}


def json_content(model: type[BaseModel]) -> dict[str, Any]:
    return {JSON: {"schema": schema_ref(model)}}


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def error_response(status: int) -> dict[str, Any]:
    """The response of one error status: OpenAI's error JSON and its headers."""
    response: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS[status],
        "content": json_content(ErrorBody),
    }
    headers: dict[str, Any] = header_ref("RequestId", required=True)
    if status == 429:
        headers |= header_ref("RetryAfter", required=True)
    elif status == 503:  # a backing service down says when; an unserved route does not
        headers |= header_ref("RetryAfter")
    if status == 502:
        headers |= header_ref("JobId", required=True)
    elif status in (409, 504):  # a cancelled or expired job names itself
        headers |= header_ref("JobId")
    response["headers"] = headers
    return response


def error_responses(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def shared_components() -> dict[str, Any]:
    """Responses, headers and security schemes every group refers to."""
    return {
        "responses": {f"Error{s}": error_response(s) for s in ERROR_DESCRIPTIONS},
        "headers": HEADERS,
        "securitySchemes": {
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "description": "The tenant's API key (`Authorization: Bearer <key>`). A "
                "bridge in anonymous mode (`FLEETWIRE_BRIDGE_REQUIRE_API_KEY=false`) "
                "also takes calls without one.",
            }
        },
    }


@dataclass(frozen=True, slots=True)
class PathGroup:
    """One group of paths: its ``paths`` (OpenAPI Path Items), the models whose schemas
    they refer to (``#/components/schemas/<model name>``), its tag, and ``limits``: a
    function that fills settings-dependent limits into the generated schemas (all of the
    document's, by name) after generation."""

    tag: str
    description: str
    paths: dict[str, Any]
    models: tuple[type[BaseModel], ...] = ()
    limits: Callable[[dict[str, Any]], None] | None = None
