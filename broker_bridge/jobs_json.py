"""The jobs API's JSON (``/v1/jobs``, ``/v1/batches``) ⇄ ``fleetwire.v1`` messages: pure,
no I/O, no HTTP. docs/http.md has the shapes.

A request body is mapped explicitly, not with protobuf's JSON parser: its names are the
ones the OpenAI endpoints' extra fields already use (``priority: "bulk"``, ``ttl`` in
seconds; ``openai_requests.apply_fleetwire_fields``), every unknown or malformed field is
refused naming it (``sampling.temperature``, ``jobs[2].priority``), and nothing else is
accepted. Limits (prompt size, max tokens, TTL, known models, tenant policy) are left to
the bridge's one validation in ``JobDesk.submit``.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from broker_bridge import openai_responses as answers
from broker_bridge.openai_requests import apply_fleetwire_fields
from fleetwire.domain.errors import FieldViolation, FleetwireError, InvalidArgument
from fleetwire.domain.states import JobState
from fleetwire.protocol import signing
from fleetwire.protocol.facts import result_facts_of
from fleetwire.v1 import job_pb2, job_service_pb2

JOB_FIELDS = frozenset(
    {
        "model",
        "model_version",
        "prompt",
        "messages",
        "sampling",
        "priority",
        "ttl",
        "network",
        "subcloud",
        "constraints",
        "labels",
    }
)
INT64 = (-(1 << 63), (1 << 63) - 1)
UINT32_MAX = (1 << 32) - 1
SAMPLING_FIELDS = frozenset({"temperature", "top_p", "seed", "stop", "max_tokens", "ignore_eos"})
NOT_IN_BODY = {
    "mode": "not a field here: /v1/jobs jobs are followed by polling or events",
    "client_request_id": "send it as the Idempotency-Key header",
}


def jobs_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def batches_path(batch_id: str) -> str:
    return f"/v1/batches/{batch_id}"


def job_spec_of(body: Any, *, default_max_tokens: int, field: str = "") -> job_pb2.JobSpec:
    """The spec of one job body (mode POLLING; ``sampling.max_tokens`` defaulted).
    InvalidArgument names every bad field, prefixed with ``field`` (``jobs[3].``)."""
    bad: list[FieldViolation] = []
    spec = _spec(body, bad)
    if bad:
        raise InvalidArgument([FieldViolation(field + v.field, v.description) for v in bad])
    spec.mode = job_pb2.INFERENCE_MODE_POLLING
    if not spec.sampling.max_tokens:
        spec.sampling.max_tokens = default_max_tokens
    return spec


def batch_specs_of(body: Any, *, default_max_tokens: int) -> list[job_pb2.JobSpec]:
    """The specs of a batch body ``{"jobs": [job, ...]}``, every bad field of every job
    named by its index; the count is left to ``BatchDesk``."""
    if not isinstance(body, dict):
        raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
    bad = [FieldViolation(name, "unknown field") for name in sorted(body) if name != "jobs"]
    jobs = body.get("jobs")
    if not isinstance(jobs, list):
        raise InvalidArgument([*bad, FieldViolation("jobs", "required: a list of jobs")])
    specs: list[job_pb2.JobSpec] = []
    for index, item in enumerate(jobs):
        try:
            specs.append(
                job_spec_of(item, default_max_tokens=default_max_tokens, field=f"jobs[{index}].")
            )
        except InvalidArgument as err:
            bad += err.violations
    if bad:
        raise InvalidArgument(bad)
    return specs


def _spec(body: Any, bad: list[FieldViolation]) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec()
    if not isinstance(body, dict):
        bad.append(FieldViolation("body", "must be a JSON object"))
        return spec
    for name in sorted(body):
        if name not in JOB_FIELDS:
            bad.append(FieldViolation(name, NOT_IN_BODY.get(name, "unknown field")))
    for name in ("model", "model_version", "prompt"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            setattr(spec, name, value)
        else:
            bad.append(FieldViolation(name, "must be a string"))
    _messages(body.get("messages"), spec, bad)
    _sampling(body.get("sampling"), spec.sampling, bad)
    apply_fleetwire_fields(body, spec, bad)
    return spec


def _messages(messages: Any, spec: job_pb2.JobSpec, bad: list[FieldViolation]) -> None:
    if messages is None:
        return
    if not isinstance(messages, list):
        bad.append(FieldViolation("messages", "must be a list of {role, content}"))
        return
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or set(message) != {"role", "content"}
            or not all(isinstance(message[k], str) for k in ("role", "content"))
        ):
            bad.append(FieldViolation(f"messages[{i}]", "must be {role: string, content: string}"))
            continue
        spec.messages.add(role=message["role"], content=message["content"])


def _sampling(raw: Any, sampling: job_pb2.SamplingParams, bad: list[FieldViolation]) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        bad.append(FieldViolation("sampling", "must be an object"))
        return
    bad.extend(
        FieldViolation(f"sampling.{name}", "unknown field")
        for name in sorted(raw)
        if name not in SAMPLING_FIELDS
    )

    for name in ("temperature", "top_p"):
        number = _finite(raw, name, bad)
        if number is not None:
            setattr(sampling, name, number)
    seed = _integer(raw, "seed", bad, within=INT64)
    if seed is not None:
        sampling.seed = seed
    max_tokens = _integer(raw, "max_tokens", bad, within=(1, UINT32_MAX))
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    stop = raw.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            sampling.stop.extend(stop)
        else:
            bad.append(FieldViolation("sampling.stop", "a string or a list of strings"))
    ignore_eos = raw.get("ignore_eos")
    if ignore_eos is not None:
        if isinstance(ignore_eos, bool):
            sampling.ignore_eos = ignore_eos
        else:
            bad.append(FieldViolation("sampling.ignore_eos", "must be true or false"))


def _finite(raw: dict[str, Any], name: str, bad: list[FieldViolation]) -> float | None:
    """``sampling.<name>`` as a finite float (JSON as Python reads it has NaN, Infinity
    and integers of any length)."""
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, bool) and isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    bad.append(FieldViolation(f"sampling.{name}", "must be a finite number"))
    return None


def _integer(
    raw: dict[str, Any], name: str, bad: list[FieldViolation], *, within: tuple[int, int]
) -> int | None:
    """``sampling.<name>`` as an integer within ``within`` (the protobuf field's range, or
    tighter), so that no value fails later in the protobuf runtime."""
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one kind of number: 5.0 is the integer 5
    low, high = within
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bad.append(FieldViolation(f"sampling.{name}", f"must be an integer, {low} to {high}"))
        return None
    return value


def _time(stamp: Timestamp) -> str | None:
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def signature_view(job: job_pb2.Job) -> dict[str, Any] | None:
    """The node's signature and what it covers: everything a client needs to verify the
    result offline (docs/signing.md). ``signed_bytes`` are the result bytes as the bridge
    rebuilds them from the job; a verifier that does not trust the bridge rebuilds them
    itself from ``job`` (``fleetwire.protocol.facts.verify_job``)."""
    sig = job.signature
    if job.state != job_pb2.JOB_STATE_SUCCEEDED or not sig.signature:
        return None
    return {
        "node_id": sig.node_id,
        "key_id": sig.key_id,
        "public_key": _b64(sig.public_key),
        "signature": _b64(sig.signature),
        "attempt": sig.attempt,
        "request_digest": _b64(sig.request_digest),
        "output_digest": _b64(sig.output_digest),
        "finished_at_unix_ms": sig.finished_at_unix_ms,
        "signed_bytes": _b64(signing.result_bytes(result_facts_of(job))),
    }


def job_view(job: job_pb2.Job) -> dict[str, Any]:
    """A job as ``GET /v1/jobs/{id}`` answers it (and POST, DELETE and the ``state``
    events): its state under the project's names, the result fields when SUCCEEDED, the
    error when it ended otherwise, the signature, links, and the whole ``fleetwire.v1.Job``
    in protobuf JSON (``job``)."""
    state = JobState.from_proto(job.state)
    succeeded = state is JobState.SUCCEEDED
    path = jobs_path(job.job_id)
    return {
        "id": job.job_id,
        "object": "job",
        "state": state.value,
        "done": state.is_terminal,
        "model": job.spec.model,
        "attempts": job.attempts,
        "created_at": _time(job.created_at),
        "updated_at": _time(job.updated_at),
        "expires_at": _time(job.expires_at),
        "output": job.output if succeeded else None,
        "finish_reason": job.finish_reason if succeeded and job.finish_reason else None,
        "usage": answers.usage_of(job) if succeeded else None,
        "error": (
            {"reason": job.error.reason, "message": job.error.message} if job.error.reason else None
        ),
        "signature": signature_view(job),
        "trace_id": job.trace_id,
        "links": {"self": path, "events": f"{path}/events"},
        "job": json_format.MessageToDict(job),
    }


def batch_json(batch: job_service_pb2.Batch) -> dict[str, Any]:
    """A batch's aggregate progress as ``GET /v1/batches/{id}`` answers it."""
    return {
        "id": batch.batch_id,
        "object": "batch",
        "total": batch.total,
        "counts": {
            "queued": batch.queued,
            "running": batch.running,
            "succeeded": batch.succeeded,
            "failed": batch.failed,
            "expired": batch.expired,
            "cancelled": batch.cancelled,
        },
        "done": batch.done,
        "created_at": _time(batch.created_at),
        "job_ids": list(batch.job_ids),
        "links": {
            "self": batches_path(batch.batch_id),
            "jobs": [jobs_path(job_id) for job_id in batch.job_ids],
        },
    }


def gateway_param(field: str) -> str:
    """A field as the bridge's validation names it (``job.sampling.max_tokens``) → as the
    jobs API's body spells it (``sampling.max_tokens``)."""
    field = field.removeprefix("job.")
    return "Idempotency-Key" if field == "client_request_id" else field


def gateway_error(err: FleetwireError) -> answers.ErrorAnswer:
    """``openai_responses.error_answer`` — the one status mapping, the same error body —
    with bad fields named as the jobs API's body spells them."""
    answer = answers.error_answer(err)
    if not isinstance(err, InvalidArgument) or not err.violations:
        return answer
    fields = [(gateway_param(v.field), v.description) for v in err.violations]
    error = dict(answer.body["error"])
    error["message"] = "invalid request: " + "; ".join(f"{f}: {d}" for f, d in fields)
    if error["param"] != "model":  # an unknown model stays 404 model_not_found
        error["param"] = fields[0][0]
    return answers.ErrorAnswer(answer.status, {"error": error}, answer.headers)
