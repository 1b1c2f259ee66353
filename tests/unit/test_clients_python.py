"""The Python SDK's pure logic: retry delays, the status-code table, request building and
offline verification against the docs/signing.md vector. Calls over the wire are tested
against a live mesh in tests/e2e/test_clients_python.py."""

from __future__ import annotations

import random
from datetime import timedelta

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from fleetwire.v1 import job_pb2
from fleetwire_client import (
    ERRORS_BY_CODE,
    InvalidArgument,
    JobRequest,
    JobResult,
    JobState,
    NotFound,
    ResourceExhausted,
    RetryPolicy,
    ServerError,
    Unavailable,
    VerificationError,
)
from fleetwire_client.errors import STATUS_DETAILS_KEY, ErrorDetails, parse_status_details
from tests.support.signing_vector import PUBLIC_KEY_HEX, vector_job


def _error(
    cls: type[ResourceExhausted] | type[Unavailable] | type[NotFound], delay: float | None
) -> ResourceExhausted | Unavailable | NotFound:
    retry_delay = None if delay is None else timedelta(seconds=delay)
    return cls("x", details=ErrorDetails(retry_delay=retry_delay))


def test_server_retry_info_is_honoured_exactly() -> None:
    policy = RetryPolicy(max_attempts=4)
    assert policy.delay_before_retry(1, _error(ResourceExhausted, 1.5)) == 1.5
    assert policy.delay_before_retry(3, _error(Unavailable, 0.25)) == 0.25


def test_server_delay_is_capped() -> None:
    policy = RetryPolicy(max_server_delay=2.0)
    assert policy.delay_before_retry(1, _error(ResourceExhausted, 3600)) == 2.0


def test_backoff_without_retry_info_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(initial_backoff=0.1, multiplier=2, max_backoff=0.5, max_attempts=10)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        delays = [
            policy.delay_before_retry(attempt, _error(Unavailable, None), rng=rng)
            for _ in range(200)
        ]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert max(d for d in delays if d is not None) > ceiling * 0.8


def test_no_retry_for_final_codes_out_of_attempts_or_past_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.delay_before_retry(1, _error(NotFound, 0.1)) is None
    assert policy.delay_before_retry(3, _error(Unavailable, 0.1)) is None
    assert policy.delay_before_retry(1, _error(Unavailable, 2.0), time_left=1.0) is None
    assert policy.delay_before_retry(1, _error(Unavailable, 0.5), time_left=1.0) == 0.5


def _trailer(*details: object) -> list[tuple[str, bytes]]:
    status = status_pb2.Status(code=3, message="bad")
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return [("other", b"x"), (STATUS_DETAILS_KEY, status.SerializeToString())]


def test_status_details_are_read() -> None:
    details = parse_status_details(
        _trailer(
            error_details_pb2.ErrorInfo(reason="QUEUE_FULL", domain="fleetwire.dev"),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=5)),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="job.model", description="?")
                ]
            ),
        )
    )
    assert details.reason == "QUEUE_FULL"
    assert details.retry_delay == timedelta(seconds=2)
    assert [(v.field, v.description) for v in details.violations] == [("job.model", "?")]


def test_missing_or_garbled_details_are_empty() -> None:
    assert parse_status_details(None) == ErrorDetails()
    assert parse_status_details([(STATUS_DETAILS_KEY, b"\xff\xff\xff")]) == ErrorDetails()


def test_one_table_maps_codes_to_classes() -> None:
    assert ERRORS_BY_CODE[grpc.StatusCode.INVALID_ARGUMENT] is InvalidArgument
    assert ERRORS_BY_CODE[grpc.StatusCode.UNAVAILABLE] is Unavailable
    assert grpc.StatusCode.INTERNAL not in ERRORS_BY_CODE  # becomes ServerError
    assert ServerError("x", code=grpc.StatusCode.INTERNAL).code is grpc.StatusCode.INTERNAL


def test_job_request_builds_the_spec() -> None:
    spec = JobRequest(
        messages=[("user", "hi")],
        max_tokens=8,
        seed=0,
        priority="urgent",
        mode="stream",
        ttl=timedelta(seconds=30),
        labels={"team": "a"},
    ).to_spec()
    assert spec.messages[0].content == "hi"
    assert not spec.prompt
    assert spec.sampling.HasField("seed")
    assert spec.sampling.seed == 0
    assert spec.priority == job_pb2.PRIORITY_CLASS_URGENT
    assert spec.mode == job_pb2.INFERENCE_MODE_STREAM
    assert spec.ttl.seconds == 30
    assert spec.client_request_id  # a fresh id, for idempotent retries
    assert not JobRequest(prompt="p").to_spec().sampling.HasField("seed")
    assert not JobRequest(prompt="p").to_spec(request_id=False).client_request_id


def test_vector_job_verifies_with_the_sdk() -> None:
    result = JobResult(vector_job())
    assert result.state is JobState.SUCCEEDED
    assert result.verify(PUBLIC_KEY_HEX)
    assert result.verify(bytes.fromhex(PUBLIC_KEY_HEX))
    assert result.verify()  # with the key the job names
    assert result.verify_or_raise(PUBLIC_KEY_HEX) is result


@pytest.mark.parametrize(
    "tamper",
    [
        lambda j: setattr(j, "output", j.output + "!"),
        lambda j: setattr(j.usage, "completion_tokens", j.usage.completion_tokens + 1),
        lambda j: setattr(j.spec.sampling, "temperature", 0.8),
        lambda j: j.spec.sampling.ClearField("seed"),
        lambda j: setattr(j.signature, "attempt", 2),
        lambda j: setattr(j.signature, "node_id", "node-2"),
        lambda j: setattr(j, "state", job_pb2.JOB_STATE_FAILED),
    ],
    ids=["output", "tokens", "temperature", "seed", "attempt", "node", "state"],
)
def test_tampered_vector_job_fails(tamper: object) -> None:
    job = vector_job()
    tamper(job)  # type: ignore[operator]
    result = JobResult(job)
    assert not result.verify(PUBLIC_KEY_HEX)
    with pytest.raises(VerificationError):
        result.verify_or_raise(PUBLIC_KEY_HEX)


def test_bad_public_key_is_an_error_not_a_pass() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        JobResult(vector_job()).verify("abcd")
