"""The OpenAPI document (broker_bridge.openapi) in step with the code it describes: the
request fields are exactly those ``openai_requests`` and ``jobs_json`` accept (the others
documented as refused, or refused as unknown), the enums are their tables, the settings'
limits are filled in, the error statuses are ``openai_responses``' and the bodies it and
``jobs_json`` build (views, batches, event frames) fit the documented schemas. The live
API is fuzzed against the same document in tests/integration/test_openapi_fuzz.py."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
import schemathesis

from broker_bridge import jobs_events, jobs_json, openai_requests, openai_responses, openapi
from broker_bridge.openapi_common import ERROR_DESCRIPTIONS
from broker_bridge.openapi_models import ErrorDetail
from fleetwire.domain.errors import (
    BackendUnavailable,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
)
from fleetwire.domain.states import JobState
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2

SETTINGS = Settings.model_validate(
    {
        "mesh": {"models": ["tiny-llama", "other"]},
        "bridge": {
            "max_output_tokens": 777,
            "max_ttl": 600,
            "max_prompt_bytes": 999,
            "max_batch_jobs": 5,
        },
    }
)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.document(SETTINGS)


def props(document: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = document["components"]["schemas"][name]["properties"]
    return properties


def accepted(properties: dict[str, Any]) -> set[str]:
    return {name for name, schema in properties.items() if "not" not in schema}


def refused(properties: dict[str, Any]) -> set[str]:
    return {name for name, schema in properties.items() if "not" in schema}


def test_the_document_is_openapi_that_schemathesis_loads(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(document)
    labels = sorted(result.ok().label for result in schema.get_all_operations())
    assert labels == [
        "DELETE /v1/jobs/{job_id}",
        "GET /openapi.json",
        "GET /v1/batches/{batch_id}",
        "GET /v1/jobs/{job_id}",
        "GET /v1/jobs/{job_id}/events",
        "GET /v1/models",
        "POST /v1/batches",
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/jobs",
    ]


@pytest.mark.parametrize(
    ("schema", "fields"),
    [
        ("ChatCompletionRequest", openai_requests.CHAT_FIELDS),
        ("CompletionRequest", openai_requests.COMPLETION_FIELDS),
    ],
)
def test_the_request_fields_are_those_the_mapping_accepts(
    document: dict[str, Any], schema: str, fields: frozenset[str]
) -> None:
    properties = props(document, schema)
    assert accepted(properties) == fields
    assert not refused(properties) & fields
    assert document["components"]["schemas"][schema]["additionalProperties"] is False
    # A field documented as refused is refused by the mapping, naming it.
    body: dict[str, Any] = {"model": "m", "messages": [], "prompt": "p"}
    for name in refused(properties):
        endpoint = openai_requests.Endpoint.CHAT if "Chat" in schema else None
        with pytest.raises(InvalidArgument) as caught:
            openai_requests.spec_of(
                {**body, name: 1},
                endpoint or openai_requests.Endpoint.COMPLETION,
                idempotency_key=None,
            )
        assert name in {v.field for v in caught.value.violations}


def test_the_enums_and_constraints_are_the_mappings_tables(document: dict[str, Any]) -> None:
    chat = props(document, "ChatCompletionRequest")
    assert set(chat["priority"]["anyOf"][0]["enum"]) == set(openai_requests.PRIORITIES)
    assert set(chat["network"]["anyOf"][0]["enum"]) == set(openai_requests.NETWORKS)
    assert set(props(document, "Constraints")) == openai_requests.CONSTRAINT_FIELDS


def test_the_settings_limits_are_filled_in(document: dict[str, Any]) -> None:
    chat = props(document, "ChatCompletionRequest")
    assert chat["model"]["enum"] == ["tiny-llama", "other"]
    assert chat["max_tokens"]["anyOf"][0]["maximum"] == 777
    assert chat["max_completion_tokens"]["anyOf"][0]["maximum"] == 777
    assert chat["ttl"]["anyOf"][0]["maximum"] == 600
    prompt = props(document, "CompletionRequest")["prompt"]["anyOf"]
    assert prompt[0]["maxLength"] == prompt[1]["items"]["maxLength"] == 999


def test_every_status_the_code_answers_is_documented(document: dict[str, Any]) -> None:
    answered = set(openai_responses.STATUS_OF_CODE.values()) | {500, 502, 504, 409}
    assert answered <= set(ERROR_DESCRIPTIONS)
    kinds = set(ErrorDetail.model_json_schema()["properties"]["type"]["enum"])
    assert set(openai_responses.TYPE_OF_STATUS.values()) <= kinds
    chat = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {int(s) for s in chat} == answered | {200}
    assert "Retry-After" in document["components"]["responses"]["Error429"]["headers"]


def finished_job() -> job_pb2.Job:
    job = job_pb2.Job(
        job_id="j-1",
        state=job_pb2.JOB_STATE_SUCCEEDED,
        output="out",
        finish_reason="length",
        spec=job_pb2.JobSpec(model="tiny-llama", prompt="p"),
        usage=job_pb2.Usage(prompt_tokens=1, completion_tokens=2),
    )
    job.signature.key_id = "k"
    job.signature.signature = b"\x01" * 64
    job.created_at.FromSeconds(100)
    return job


def validate(document: dict[str, Any], name: str, instance: Any) -> None:
    """``instance`` against the document's schema ``name``, its references resolved."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)


def test_the_bodies_the_bridge_builds_fit_the_document(document: dict[str, Any]) -> None:
    job = finished_job()
    validate(document, "ChatCompletion", openai_responses.chat_completion(job))
    validate(document, "TextCompletion", openai_responses.text_completion(job))
    validate(document, "UsageChunk", openai_responses.usage_chunk(job, chat=True))
    for chat, name in ((True, "ChatCompletionChunk"), (False, "TextCompletionChunk")):
        first = openai_responses.stream_chunk(
            "j-1", chat=chat, model="m", created=1, first=True, text=""
        )
        last = openai_responses.stream_chunk(
            "j-1", chat=chat, model="m", created=1, finish_reason="stop"
        )
        validate(document, name, first)
        validate(document, name, last)
    validate(document, "ModelList", openai_responses.model_list(["a"], created=0))
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        validate(document, "ChatCompletion", openai_responses.text_completion(job))
    errors = [
        InvalidArgument([FieldViolation("job.sampling.max_tokens", "at least 1")]),
        Unauthenticated("no key"),
        ResourceExhausted("slow down", reason="QUEUE_FULL", retry_delay=timedelta(seconds=2)),
        BackendUnavailable("redis", "down"),
    ]
    for err in errors:
        answer = openai_responses.error_answer(err)
        assert answer.status in ERROR_DESCRIPTIONS
        validate(document, "ErrorBody", answer.body)
    failed = job_pb2.Job(job_id="j-2", state=job_pb2.JOB_STATE_FAILED)
    validate(document, "ErrorBody", openai_responses.unfinished_answer(failed).body)


# ---- the jobs API (/v1/jobs, /v1/batches) ----------------------------------------------


@pytest.mark.parametrize(
    ("schema", "fields"),
    [
        ("JobRequest", jobs_json.JOB_FIELDS),
        ("JobSampling", jobs_json.SAMPLING_FIELDS),
        ("JobMessage", frozenset({"role", "content"})),
        ("BatchRequest", frozenset({"jobs"})),
    ],
)
def test_the_jobs_fields_are_those_jobs_json_accepts(
    document: dict[str, Any], schema: str, fields: frozenset[str]
) -> None:
    assert set(props(document, schema)) == fields
    assert document["components"]["schemas"][schema]["additionalProperties"] is False


def test_every_documented_job_field_is_accepted_and_no_other(document: dict[str, Any]) -> None:
    """A body with every documented field (a valid value each) maps without a violation; a
    field the document does not list is refused, naming it."""
    body = {
        "model": "tiny-llama",
        "model_version": "v1",
        "prompt": "p",
        "messages": [{"role": "user", "content": "c"}],
        "sampling": {
            "temperature": 0.5,
            "top_p": 1,
            "seed": 5.0,
            "stop": ["\n"],
            "max_tokens": 3,
            "ignore_eos": True,
        },
        "priority": "bulk",
        "ttl": 30,
        "network": "testnet",
        "subcloud": "eu",
        "constraints": {"min_gpu_memory_mib": 1, "gpu_class": "a", "region": "r", "subcloud": ""},
        "labels": {"k": "v"},
    }
    assert set(body) == set(props(document, "JobRequest"))
    assert set(body["sampling"]) == set(props(document, "JobSampling"))
    spec = jobs_json.job_spec_of(body, default_max_tokens=9)
    assert (spec.sampling.seed, spec.sampling.max_tokens, spec.labels["k"]) == (5, 3, "v")
    for name in ("mode", "client_request_id", "stream", "max_tokens"):
        with pytest.raises(InvalidArgument) as caught:
            jobs_json.job_spec_of({**body, name: 1}, default_max_tokens=9)
        assert name in {v.field for v in caught.value.violations}
    with pytest.raises(InvalidArgument) as caught:
        jobs_json.batch_specs_of({"jobs": [body], "more": 1}, default_max_tokens=9)
    assert "more" in {v.field for v in caught.value.violations}


def test_the_jobs_limits_and_enums_are_filled_in(document: dict[str, Any]) -> None:
    job = props(document, "JobRequest")
    assert job["model"]["enum"] == ["tiny-llama", "other"]
    assert job["ttl"]["anyOf"][0]["maximum"] == 600
    assert job["prompt"]["anyOf"][0]["maxLength"] == 999
    assert props(document, "JobSampling")["max_tokens"]["anyOf"][0]["maximum"] == 777
    assert props(document, "BatchRequest")["jobs"]["maxItems"] == 5
    assert set(job["priority"]["anyOf"][0]["enum"]) == set(openai_requests.PRIORITIES)
    assert set(job["network"]["anyOf"][0]["enum"]) == set(openai_requests.NETWORKS)
    states = document["components"]["schemas"]["JobState"]["enum"]
    assert set(states) == {s.value for s in JobState}


def test_the_jobs_statuses_are_documented(document: dict[str, Any]) -> None:
    def statuses(path: str, method: str) -> set[int]:
        return {int(s) for s in document["paths"][path][method]["responses"]}

    submit = {400, 401, 403, 404, 409, 429, 500, 503}
    read = {400, 401, 404, 500, 503}
    assert statuses("/v1/jobs", "post") == submit | {202}
    assert statuses("/v1/batches", "post") == submit | {202}
    for path, method in (
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}", "delete"),
        ("/v1/batches/{batch_id}", "get"),
    ):
        assert statuses(path, method) == read | {200}
    assert statuses("/v1/jobs/{job_id}/events", "get") == read | {200, 429}
    accepted = document["paths"]["/v1/jobs"]["post"]["responses"]["202"]["headers"]
    assert accepted["Location"]["required"] is True
    events = document["paths"]["/v1/jobs/{job_id}/events"]["get"]
    assert "Last-Event-ID" in {p["name"] for p in events["parameters"]}
    stream = events["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
    kinds = {branch["properties"]["event"]["const"] for branch in stream["oneOf"]}
    assert kinds == {"state", "chunk", "done", "error"}


def event_schema(document: dict[str, Any], kind: str) -> dict[str, Any]:
    events = document["paths"]["/v1/jobs/{job_id}/events"]["get"]
    stream = events["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
    (branch,) = [b for b in stream["oneOf"] if b["properties"]["event"]["const"] == kind]
    return branch  # type: ignore[no-any-return]


def validate_frame(document: dict[str, Any], frame: bytes) -> None:
    """One event as ``jobs_events.frame`` writes it against its ``itemSchema`` branch, its
    ``data`` against the branch's ``contentSchema``."""
    fields = dict(line.split(": ", 1) for line in frame.decode().strip().split("\n"))
    branch = event_schema(document, fields["event"])
    envelope = {"components": document["components"], **branch}
    jsonschema.validate(fields, envelope, cls=jsonschema.Draft202012Validator)
    content = {
        "components": document["components"],
        **branch["properties"]["data"]["contentSchema"],
    }
    jsonschema.validate(json.loads(fields["data"]), content, cls=jsonschema.Draft202012Validator)


def test_the_jobs_bodies_jobs_json_builds_fit_the_document(document: dict[str, Any]) -> None:
    succeeded = finished_job()
    succeeded.job_id = "0b7d6b5e-7e1a-4b8e-9c41-6f0c2a8f3d11"
    succeeded.attempts = 1
    succeeded.updated_at.FromSeconds(101)
    succeeded.signature.node_id = "n-1"
    succeeded.signature.attempt = 1
    queued = job_pb2.Job(job_id="j-3", state=job_pb2.JOB_STATE_QUEUED, trace_id="t")
    failed = job_pb2.Job(job_id="j-2", state=job_pb2.JOB_STATE_FAILED)
    failed.error.reason, failed.error.message = "NODE_FAILED", "boom"
    for job in (succeeded, queued, failed):
        view = jobs_json.job_view(job)
        assert set(view) == set(props(document, "JobView"))
        validate(document, "JobView", view)
    assert jobs_json.job_view(succeeded)["signature"] is not None
    batch = job_service_pb2.Batch(batch_id="b-1", total=2, queued=1, succeeded=1, done=False)
    batch.job_ids.extend(["j-1", "j-2"])
    batch.created_at.FromSeconds(100)
    batch_view = jobs_json.batch_json(batch)
    assert set(batch_view) == set(props(document, "BatchView"))
    assert set(batch_view["counts"]) == set(props(document, "BatchCounts"))
    validate(document, "BatchView", batch_view)
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        validate(document, "JobView", batch_view)
    chunk = job_service_pb2.TokenChunk(attempt=2, sequence=7, text="x", token_count=1)
    cursor = jobs_events.cursor_after(chunk)
    validate_frame(document, jobs_events.frame("chunk", jobs_events.chunk_data(chunk), cursor))
    validate_frame(document, jobs_events.frame("state", jobs_json.job_view(succeeded), cursor))
    validate_frame(document, jobs_events.frame("done", {"id": "j-1", "state": "SUCCEEDED"}, cursor))
    error = jobs_json.gateway_error(BackendUnavailable("redis", "down")).body
    validate_frame(document, jobs_events.frame("error", error, cursor))
    with pytest.raises(jsonschema.ValidationError):
        validate_frame(document, jobs_events.frame("chunk", jobs_json.job_view(queued), cursor))
    bad = jobs_json.gateway_error(
        InvalidArgument([FieldViolation("job.sampling.max_tokens", "at least 1")])
    )
    assert bad.body["error"]["param"] == "sampling.max_tokens"
    validate(document, "ErrorBody", bad.body)
