"""The OpenAPI paths of the asynchronous jobs API (``jobs_api.JobsApi``): ``POST /v1/jobs``
(202 + ``Location``), ``GET`` / ``DELETE /v1/jobs/{job_id}``, ``GET
/v1/jobs/{job_id}/events`` (server-sent events, one ``itemSchema`` branch per event kind,
resumable with ``Last-Event-ID``), ``POST /v1/batches`` (202 + ``Location``) and ``GET
/v1/batches/{batch_id}``, with the running bridge's limits filled into the request schemas.

The statuses of each operation are those its handler can answer through
``jobs_json.gateway_error`` (the one mapping of ``openai_responses``): the submits pass
admission, tenant policy and idempotency (403, 409, 429), the reads only the key, the id
and the backing services.
"""

from __future__ import annotations

from typing import Any

from broker_bridge.http_bodies import MAX_BODY_BYTES, MAX_IDEMPOTENCY_KEY_CHARS
from broker_bridge.jobs_events import MAX_ATTEMPT
from broker_bridge.openapi_common import (
    BEARER,
    EVENT_STREAM,
    JSON,
    REQUEST_ID,
    PathGroup,
    error_response,
    error_responses,
    header_ref,
    json_content,
    schema_ref,
)
from broker_bridge.openapi_jobs_models import (
    BatchRequest,
    BatchView,
    ChunkEvent,
    DoneEvent,
    JobRequest,
    JobView,
)
from broker_bridge.openapi_models import ErrorBody
from broker_bridge.openapi_openai import PRINTABLE_LATIN1
from fleetwire.process.settings import Settings

TAG = "jobs"
SUBMIT_ERRORS = (400, 401, 403, 404, 409, 429, 500, 503)
READ_ERRORS = (401, 500, 503)  # and 400 / 404 of the id, described per operation
EVENTS_ERRORS = (401, 429, 500, 503)
UUID_PATTERN = "^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$"
EVENT_ID = {
    "type": "string",
    "pattern": r"^[0-9]+\.[0-9]+$",
    "description": "A Watch cursor, `<attempt>.<sequence>`: a chunk's own, else the last "
    "chunk's sent before the event (`0.0` before any).",
}


def _idempotency_key(what: str) -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": f"The {what}'s client request id: the same key with the same body "
        f"answers the original {what} as it is now (202 again, the same `Location`), never "
        "a second one; with another body it is 409 `idempotency_key_reused`. 1 to "
        f"{MAX_IDEMPOTENCY_KEY_CHARS} printable characters.",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
            "pattern": PRINTABLE_LATIN1,
            "description": f"At most {MAX_IDEMPOTENCY_KEY_CHARS} bytes in UTF-8.",
        },
    }


def _id_parameter(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"The {what}'s id (a UUID, as `Location` names it).",
        "schema": {"type": "string", "pattern": UUID_PATTERN},
    }


LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Resume after this event: the job's current state, then exactly the "
    "chunks after that one (none repeated, none skipped). Empty: from the start. Not an id "
    "this API sent: 400 naming it.",
    "schema": {
        "type": "string",
        "pattern": r"^[ \t]*([0-9]{1,10}\.[0-9]{1,19})?[ \t]*$",
        "description": f"`<attempt>.<sequence>`; attempt at most {MAX_ATTEMPT}, sequence "
        "at most 2^64 - 1.",
    },
}


def _id_errors(what: str) -> dict[str, Any]:
    """400 and 404 of an operation on one job or batch, described as they are answered."""
    bad_id = error_response(400) | {"description": f"The {what} id is not a UUID."}
    unknown = error_response(404) | {
        "description": f"No such {what} — or another tenant's (`not_found`)."
    }
    return {"400": bad_id, "404": unknown}


def _location(prefix: str) -> dict[str, Any]:
    return {
        "Location": {
            "description": f"The accepted one's URL, `{prefix}/{{id}}`.",
            "required": True,
            "schema": {"type": "string", "pattern": f"^{prefix}/[0-9a-f-]{{36}}$"},
        }
    }


def _submit(
    summary: str,
    operation_id: str,
    what: str,
    request: type[Any],
    answer: type[Any],
    prefix: str,
    example: dict[str, Any],
) -> dict[str, Any]:
    return {
        "tags": [TAG],
        "operationId": operation_id,
        "summary": summary,
        "security": [{BEARER: []}],
        "parameters": [_idempotency_key(what), REQUEST_ID],
        "requestBody": {
            "required": True,
            "description": f"At most {MAX_BODY_BYTES} bytes (else 400 naming `body`).",
            "content": {
                JSON: {
                    "schema": schema_ref(request),
                    "examples": {"plain": {"summary": f"One {what}", "value": example}},
                }
            },
        },
        "responses": {
            "202": {
                "description": f"Accepted: RabbitMQ confirmed the {what}'s publish. With a "
                "reused `Idempotency-Key` and the same body, the original as it is now.",
                "headers": header_ref("RequestId", required=True) | _location(prefix),
                "content": json_content(answer),
            },
            **error_responses(*SUBMIT_ERRORS),
        },
    }


def _read(
    summary: str, operation_id: str, what: str, answer: type[Any], description: str
) -> dict[str, Any]:
    return {
        "tags": [TAG],
        "operationId": operation_id,
        "summary": summary,
        "security": [{BEARER: []}],
        "parameters": [REQUEST_ID],
        "responses": {
            "200": {
                "description": description,
                "headers": header_ref("RequestId", required=True),
                "content": json_content(answer),
            },
            **_id_errors(what),
            **error_responses(*READ_ERRORS),
        },
    }


def _event(name: str, payload: type[Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event", "data", "id"],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": JSON,
                "contentSchema": schema_ref(payload),
            },
            "id": EVENT_ID,
        },
    }


def _events() -> dict[str, Any]:
    return {
        "tags": [TAG],
        "operationId": "watchJobEvents",
        "summary": "The job's state changes and token chunks as server-sent events",
        "security": [{BEARER: []}],
        "parameters": [LAST_EVENT_ID, REQUEST_ID],
        "responses": {
            "200": {
                "description": "`state` (the job now), `chunk` … and each change, the "
                "terminal `state`, `done`; or `error` (a failure after the answer started), "
                "then the end. Nothing is sent while the job waits. Holds one of the "
                "tenant's Watch slots until the job ends or the client goes away.",
                "headers": header_ref("RequestId", required=True),
                "content": {
                    EVENT_STREAM: {
                        # OpenAPI 3.2: `itemSchema` is each event, by its `event` field.
                        "itemSchema": {
                            "oneOf": [
                                _event("state", JobView),
                                _event("chunk", ChunkEvent),
                                _event("done", DoneEvent),
                                _event("error", ErrorBody),
                            ]
                        }
                    }
                },
            },
            "400": error_response(400)
            | {
                "description": "The job id is not a UUID, or `Last-Event-ID` is not an id "
                "this API sent."
            },
            "404": _id_errors("job")["404"],
            **error_responses(*EVENTS_ERRORS),
        },
    }


def _branches(prop: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a generated property schema."""
    branches = prop.get("anyOf", [prop])
    return [b for b in branches if b.get("type") != "null"]


def _limit(schemas: dict[str, Any], settings: Settings) -> None:
    """Fills the settings' limits (and the model registry) into the request schemas."""
    bridge = settings.bridge
    job = schemas["JobRequest"]["properties"]
    job["model"]["enum"] = list(settings.mesh.models)
    for branch in _branches(job["ttl"]):
        branch["maximum"] = bridge.max_ttl.total_seconds()
    for branch in _branches(job["prompt"]):
        branch["maxLength"] = bridge.max_prompt_bytes
        branch["description"] = f"At most {bridge.max_prompt_bytes} bytes (UTF-8)."
    for branch in _branches(schemas["JobSampling"]["properties"]["max_tokens"]):
        branch["maximum"] = bridge.max_output_tokens
    jobs = schemas["BatchRequest"]["properties"]["jobs"]
    jobs["maxItems"] = bridge.max_batch_jobs
    jobs["description"] = f"1 to {bridge.max_batch_jobs} jobs (else 400 naming `jobs`)."


def group(settings: Settings) -> PathGroup:
    model = settings.mesh.models[0] if settings.mesh.models else "tiny-llama"
    ttl = min(60.0, settings.bridge.max_ttl.total_seconds())
    job = {
        "model": model,
        "prompt": "Once upon a time",
        "sampling": {"max_tokens": 16, "temperature": 0},
        "ttl": ttl,
        "labels": {"run": "7"},
    }
    chat = {"model": model, "messages": [{"role": "user", "content": "Hello"}]}
    return PathGroup(
        tag=TAG,
        description="The 202 pattern: submit, poll, cancel, follow the events; batches "
        "(docs/http.md).",
        paths={
            "/v1/jobs": {
                "post": _submit(
                    "Submit a job: 202 with its URL once RabbitMQ holds it",
                    "submitJob",
                    "job",
                    JobRequest,
                    JobView,
                    "/v1/jobs",
                    job,
                )
            },
            "/v1/jobs/{job_id}": {
                "parameters": [_id_parameter("job_id", "job")],
                "get": _read(
                    "The job now",
                    "getJob",
                    "job",
                    JobView,
                    "The job: its state, and when SUCCEEDED its output, usage and signature.",
                ),
                "delete": _read(
                    "Cancel the job",
                    "cancelJob",
                    "job",
                    JobView,
                    "The job CANCELLED — or unchanged in the terminal state it had.",
                ),
            },
            "/v1/jobs/{job_id}/events": {
                "parameters": [_id_parameter("job_id", "job")],
                "get": _events(),
            },
            "/v1/batches": {
                "post": _submit(
                    "Submit a batch: all of its jobs or none",
                    "submitBatch",
                    "batch",
                    BatchRequest,
                    BatchView,
                    "/v1/batches",
                    {"jobs": [job, chat]},
                )
            },
            "/v1/batches/{batch_id}": {
                "parameters": [_id_parameter("batch_id", "batch")],
                "get": _read(
                    "The batch's aggregate progress",
                    "getBatch",
                    "batch",
                    BatchView,
                    "The batch: counts by state and its job ids.",
                ),
            },
        },
        models=(JobRequest, BatchRequest, JobView, BatchView, ChunkEvent, DoneEvent),
        limits=lambda schemas: _limit(schemas, settings),
    )
