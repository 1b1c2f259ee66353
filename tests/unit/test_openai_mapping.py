"""OpenAI bodies → JobSpec and domain errors → OpenAI's error JSON (broker_bridge's
openai_requests and openai_responses), case by case."""

from __future__ import annotations

from datetime import timedelta

import pytest

from broker_bridge.openai_requests import Endpoint, spec_of
from broker_bridge.openai_responses import error_answer, unfinished_answer
from fleetwire.domain.errors import (
    BackendUnavailable,
    FailedPrecondition,
    FieldViolation,
    FleetwireError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from fleetwire.v1 import job_pb2

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_a_chat_body_maps_sampling_and_fleetwire_fields() -> None:
    spec = spec_of(
        {
            **CHAT,
            "max_completion_tokens": 9,
            "max_tokens": 5,
            "temperature": 0.5,
            "top_p": 0.9,
            "seed": 3,
            "stop": "\n",
            "n": 1,
            "priority": "bulk",
            "ttl": 60,
            "network": "testnet",
            "subcloud": "lab",
            "constraints": {"min_gpu_memory_mib": 1024, "region": "eu"},
            "labels": {"k": "v"},
        },
        Endpoint.CHAT,
        idempotency_key="req-1",
    )
    assert spec.sampling.max_tokens == 9  # the newer name wins
    assert spec.sampling.temperature == pytest.approx(0.5)
    assert spec.sampling.top_p == pytest.approx(0.9)
    assert spec.sampling.seed == 3
    assert list(spec.sampling.stop) == ["\n"]
    assert spec.priority == job_pb2.PRIORITY_CLASS_BULK
    assert spec.network == job_pb2.NETWORK_TESTNET
    assert spec.ttl.ToTimedelta() == timedelta(seconds=60)
    assert spec.constraints.subcloud == "lab"
    assert spec.constraints.min_gpu_memory_mib == 1024
    assert spec.constraints.region == "eu"
    assert dict(spec.labels) == {"k": "v"}
    assert spec.client_request_id == "req-1"
    assert spec.mode == job_pb2.INFERENCE_MODE_SYNC


def test_message_content_parts_and_the_developer_role() -> None:
    spec = spec_of(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
        },
        Endpoint.CHAT,
        idempotency_key=None,
    )
    assert [(m.role, m.content) for m in spec.messages] == [("system", "be brief"), ("user", "ab")]


def test_a_completion_takes_one_prompt() -> None:
    spec = spec_of({"model": "m", "prompt": ["once"]}, Endpoint.COMPLETION, idempotency_key=None)
    assert spec.prompt == "once"
    with pytest.raises(InvalidArgument) as caught:
        spec_of({"model": "m", "prompt": ["a", "b"]}, Endpoint.COMPLETION, idempotency_key=None)
    assert [v.field for v in caught.value.violations] == ["prompt"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": []}, "tools"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"temperature": "hot"}, "temperature"),
        ({"priority": "vip"}, "priority"),
        ({"constraints": {"colour": "red"}}, "constraints.colour"),
        ({"prompt": "x"}, "prompt"),  # not a chat field
    ],
)
def test_unsupported_or_malformed_fields_are_refused_by_name(
    extra: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        spec_of({**CHAT, **extra}, Endpoint.CHAT, idempotency_key=None)
    assert field in [v.field for v in caught.value.violations]


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (
            InvalidArgument([FieldViolation("job.sampling.max_tokens", "x")]),
            400,
            "invalid_request_error",
        ),
        (Unauthenticated("no", reason="API_KEY_INVALID"), 401, "authentication_error"),
        (PermissionDenied("no", reason="PRIORITY_NOT_ALLOWED"), 403, "permission_error"),
        (NotFound("no"), 404, "invalid_request_error"),
        (FailedPrecondition("no", reason="IDEMPOTENCY_KEY_REUSED"), 409, "invalid_request_error"),
        (ResourceExhausted("no", retry_delay=timedelta(seconds=1.2)), 429, "rate_limit_error"),
        (BackendUnavailable("rabbitmq", "down"), 503, "server_error"),
    ],
)
def test_errors_map_to_openai_statuses(error: FleetwireError, status: int, kind: str) -> None:
    answer = error_answer(error)
    assert answer.status == status
    assert answer.body["error"]["type"] == kind
    assert answer.body["error"]["code"] == error.reason.lower()


def test_field_names_are_the_bodys_and_delays_are_retry_after() -> None:
    bad = error_answer(InvalidArgument([FieldViolation("job.sampling.max_tokens", "too many")]))
    assert bad.body["error"]["param"] == "max_tokens"
    assert "max_tokens: too many" in bad.body["error"]["message"]
    assert error_answer(ResourceExhausted("x", retry_delay=timedelta(seconds=1.2))).headers == {
        "retry-after": "2"
    }
    assert error_answer(BackendUnavailable("redis", "down")).headers == {"retry-after": "1"}
    unknown = error_answer(InvalidArgument([FieldViolation("job.model", "unknown model 'x'")]))
    assert (unknown.status, unknown.body["error"]["code"]) == (404, "model_not_found")


def test_a_job_that_ended_without_output() -> None:
    failed = job_pb2.Job(job_id="j", state=job_pb2.JOB_STATE_FAILED)
    failed.error.reason = "NODE_FAILED"
    assert unfinished_answer(failed).status == 502
    assert unfinished_answer(failed).body["error"]["code"] == "node_failed"
    assert unfinished_answer(job_pb2.Job(job_id="j", state=job_pb2.JOB_STATE_EXPIRED)).status == 504
    cancelled = unfinished_answer(job_pb2.Job(job_id="j", state=job_pb2.JOB_STATE_CANCELLED))
    assert cancelled.status == 409
