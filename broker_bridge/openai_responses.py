"""Jobs and errors → OpenAI's JSON: pure, no I/O.

Every answer about a job carries ``fleetwire``: the job id, the signing node's key id and
signature, and the finished job itself (``job``, protobuf JSON) — everything a client needs
to verify the result offline with ``fleetwire.protocol.facts.verify_job``.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from fleetwire.domain.errors import (
    BackendUnavailable,
    FleetwireError,
    InvalidArgument,
    ResourceExhausted,
)
from fleetwire.v1 import job_pb2

JOB_ID_HEADER = "x-fleetwire-job-id"
KEY_ID_HEADER = "x-fleetwire-key-id"
SIGNATURE_HEADER = "x-fleetwire-signature"

STATUS_OF_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
TYPE_OF_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}
FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "stop"}


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An HTTP status, OpenAI's error body and the headers that go with them."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def error_body(message: str, *, kind: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_answer(err: FleetwireError) -> ErrorAnswer:
    """The one mapping of a domain error to HTTP: the status of its gRPC code, its stable
    reason as ``code`` (lower case), the first bad field as ``param``, and ``Retry-After``
    (whole seconds, rounded up) when the error advises a delay. An unknown model is 404
    ``model_not_found``, as OpenAI answers it."""
    status = STATUS_OF_CODE.get(err.code, 500)
    code, param, message = err.reason.lower(), None, err.message
    if isinstance(err, InvalidArgument) and err.violations:
        fields = [(openai_param(v.field), v.description) for v in err.violations]
        param = fields[0][0]
        message = "invalid request: " + "; ".join(f"{f}: {d}" for f, d in fields)
        if any(f == "model" and d.startswith("unknown model") for f, d in fields):
            status, code, param = 404, "model_not_found", "model"
    headers: dict[str, str] = {}
    if isinstance(err, ResourceExhausted | BackendUnavailable):
        headers["retry-after"] = str(max(1, math.ceil(err.retry_delay.total_seconds())))
    kind = TYPE_OF_STATUS.get(status, "server_error")
    return ErrorAnswer(status, error_body(message, kind=kind, code=code, param=param), headers)


def openai_param(field: str) -> str:
    """A field as the bridge's validation names it (``job.sampling.max_tokens``) → as the
    OpenAI body spells it (``max_tokens``)."""
    field = field.removeprefix("job.").removeprefix("sampling.")
    return "Idempotency-Key" if field == "client_request_id" else field


def unfinished_answer(job: job_pb2.Job) -> ErrorAnswer:
    """A job that ended without an output: FAILED / DEAD_LETTERED are 502 (the node side
    failed), EXPIRED 504, CANCELLED 409; ``code`` is the job's error reason."""
    state = job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
    status = {"EXPIRED": 504, "CANCELLED": 409}.get(state, 502)
    reason = (job.error.reason or state).lower()
    message = f"job {job.job_id} ended {state}: {job.error.message or reason}"
    body = error_body(message, kind=TYPE_OF_STATUS[status], code=reason)
    return ErrorAnswer(status, body, {JOB_ID_HEADER: job.job_id})


def overdue_answer(job: job_pb2.Job) -> ErrorAnswer:
    """A job still live after its TTL (the deadline reaper ends it EXPIRED later): 504, as
    an expired job, without holding the client until the reaper's grace has passed."""
    state = job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
    message = f"job {job.job_id} did not finish within its ttl (still {state}); it will expire"
    body = error_body(message, kind=TYPE_OF_STATUS[504], code="ttl_expired")
    return ErrorAnswer(504, body, {JOB_ID_HEADER: job.job_id})


def signature_headers(job: job_pb2.Job) -> dict[str, str]:
    headers = {JOB_ID_HEADER: job.job_id}
    if job.signature.signature:
        headers[KEY_ID_HEADER] = job.signature.key_id
        headers[SIGNATURE_HEADER] = base64.b64encode(job.signature.signature).decode()
    return headers


def fleetwire_field(job: job_pb2.Job) -> dict[str, Any]:
    """The extra ``fleetwire`` object: ids, signature (base64) and the whole job."""
    return {
        "job_id": job.job_id,
        "node_id": job.signature.node_id,
        "key_id": job.signature.key_id,
        "signature": base64.b64encode(job.signature.signature).decode(),
        "trace_id": job.trace_id,
        "job": json_format.MessageToDict(job),
    }


def usage_of(job: job_pb2.Job) -> dict[str, int]:
    prompt, completion = job.usage.prompt_tokens, job.usage.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def created_of(job: job_pb2.Job) -> int:
    return int(job.created_at.seconds)


def finish_reason_of(job: job_pb2.Job) -> str:
    return FINISH_REASONS.get(job.finish_reason, "stop")


def completion_id(job_id: str, *, chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{job_id}"


def chat_completion(job: job_pb2.Job) -> dict[str, Any]:
    return {
        "id": completion_id(job.job_id, chat=True),
        "object": "chat.completion",
        "created": created_of(job),
        "model": job.spec.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": job.output},
                "finish_reason": finish_reason_of(job),
                "logprobs": None,
            }
        ],
        "usage": usage_of(job),
        "fleetwire": fleetwire_field(job),
    }


def text_completion(job: job_pb2.Job) -> dict[str, Any]:
    return {
        "id": completion_id(job.job_id, chat=False),
        "object": "text_completion",
        "created": created_of(job),
        "model": job.spec.model,
        "choices": [
            {
                "index": 0,
                "text": job.output,
                "finish_reason": finish_reason_of(job),
                "logprobs": None,
            }
        ],
        "usage": usage_of(job),
        "fleetwire": fleetwire_field(job),
    }


def stream_chunk(
    job_id: str,
    *,
    chat: bool,
    model: str,
    created: int,
    text: str | None = None,
    first: bool = False,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """One chunk of a streamed answer (``chat.completion.chunk`` or ``text_completion``)."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
    if chat:
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    return {
        "id": completion_id(job_id, chat=chat),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
    }


def usage_chunk(job: job_pb2.Job, *, chat: bool) -> dict[str, Any]:
    """The final chunk of ``stream_options.include_usage``: no choices, the usage, and the
    ``fleetwire`` object with the signature."""
    return {
        "id": completion_id(job.job_id, chat=chat),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created_of(job),
        "model": job.spec.model,
        "choices": [],
        "usage": usage_of(job),
        "fleetwire": fleetwire_field(job),
    }


def model_list(models: list[str], *, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "fleetwire"}
            for name in models
        ],
    }
