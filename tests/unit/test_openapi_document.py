"""The OpenAPI document (broker_bridge.openapi) in step with the code it describes: the
request fields are exactly those ``openai_requests`` accepts (the others documented as
refused), the enums are its tables, the settings' limits are filled in, the error statuses
are ``openai_responses``' and the bodies it builds fit the documented schemas. The live
API is fuzzed against the same document in tests/integration/test_openapi_fuzz.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jsonschema
import pytest
import schemathesis

from broker_bridge import openai_requests, openai_responses, openapi
from broker_bridge.openapi_common import ERROR_DESCRIPTIONS
from broker_bridge.openapi_models import ErrorDetail
from fleetwire.domain.errors import (
    BackendUnavailable,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
)
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2

SETTINGS = Settings.model_validate(
    {
        "mesh": {"models": ["tiny-llama", "other"]},
        "bridge": {"max_output_tokens": 777, "max_ttl": 600, "max_prompt_bytes": 999},
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
        "GET /openapi.json",
        "GET /v1/models",
        "POST /v1/chat/completions",
        "POST /v1/completions",
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
