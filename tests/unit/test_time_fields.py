"""Durations and Timestamps as their definitions allow them, anywhere in a request, and the
TTL's own check: a malformed one is named, never converted (2**62 s overflows timedelta)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from fleetwire.domain.errors import FieldViolation, InvalidArgument
from fleetwire.domain.validation import (
    MAX_DURATION_SECONDS,
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    duration_problem,
    time_field_violations,
    timestamp_problem,
    validate_spec,
)
from fleetwire.process.settings import BridgeSettings
from fleetwire.v1 import job_pb2, job_service_pb2, mesh_admin_service_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2

LIMITS = BridgeSettings(default_ttl=timedelta(minutes=10), max_ttl=timedelta(hours=24))


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (0, 0),
        (MAX_DURATION_SECONDS, 999_999_999),
        (-MAX_DURATION_SECONDS, -999_999_999),
        (0, -5),  # a negative Duration under one second: nanos carry the sign
        (0, 5),
        (-1, -5),
    ],
)
def test_well_formed_durations_pass(seconds: int, nanos: int) -> None:
    assert duration_problem(duration_pb2.Duration(seconds=seconds, nanos=nanos)) is None


@pytest.mark.parametrize(
    ("seconds", "nanos", "says"),
    [
        (2**62, 0, "seconds"),
        (-(2**62), 0, "seconds"),
        (MAX_DURATION_SECONDS + 1, 0, "seconds"),
        (60, -5, "sign"),
        (-60, 5, "sign"),
        (1, 1_000_000_000, "nanos"),
        (-1, -1_000_000_000, "nanos"),
    ],
)
def test_malformed_durations_say_why(seconds: int, nanos: int, says: str) -> None:
    problem = duration_problem(duration_pb2.Duration(seconds=seconds, nanos=nanos))
    assert problem is not None
    assert says in problem


@pytest.mark.parametrize(
    ("seconds", "nanos", "fine"),
    [
        (0, 0, True),
        (MIN_TIMESTAMP_SECONDS, 0, True),
        (MAX_TIMESTAMP_SECONDS, 999_999_999, True),
        (MIN_TIMESTAMP_SECONDS - 1, 0, False),
        (MAX_TIMESTAMP_SECONDS + 1, 0, False),
        (0, -1, False),  # a Timestamp's nanos are never negative
        (0, 1_000_000_000, False),
    ],
)
def test_timestamp_range(seconds: int, nanos: int, fine: bool) -> None:
    problem = timestamp_problem(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    assert (problem is None) is fine


def test_every_time_field_of_a_request_is_found_by_its_path() -> None:
    request = job_service_pb2.SubmitBatchRequest(jobs=[job_pb2.JobSpec() for _ in range(3)])
    request.jobs[0].ttl.seconds = 2**62
    request.jobs[1].ttl.seconds = 30  # fine
    request.jobs[2].ttl.seconds, request.jobs[2].ttl.nanos = 5, -1
    assert [v.field for v in time_field_violations(request)] == ["jobs[0].ttl", "jobs[2].ttl"]


def test_nested_and_timestamp_fields_are_checked_too() -> None:
    # Not requests, but messages with Timestamps and Durations at depth: the walk is generic.
    dispatch = nodes_pb2.NodeStreamResponse(dispatch=nodes_pb2.Dispatch())
    dispatch.dispatch.deadline.seconds = MAX_TIMESTAMP_SECONDS + 1
    dispatch.dispatch.spec.ttl.nanos = -(10**9)
    found = time_field_violations(dispatch)
    assert [v.field for v in found] == ["dispatch.spec.ttl", "dispatch.deadline"]
    trail = mesh_admin_service_pb2.JobTrailResponse(
        attempts=[mesh_admin_service_pb2.AttemptView(), mesh_admin_service_pb2.AttemptView()]
    )
    trail.attempts[1].ended_at.nanos = -1
    assert [v.field for v in time_field_violations(trail)] == ["attempts[1].ended_at"]


def test_messages_without_time_fields_are_never_walked() -> None:
    hello = nodes_pb2.NodeStreamRequest(hello=nodes_pb2.Hello(node_id="n"))
    assert time_field_violations(hello) == []
    assert time_field_violations(job_service_pb2.SubmitRequest()) == []  # ttl unset


def test_validate_spec_names_a_malformed_ttl_instead_of_overflowing() -> None:
    spec = job_pb2.JobSpec(model="m", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=1))
    spec.ttl.seconds = 2**62
    with pytest.raises(InvalidArgument) as caught:
        validate_spec(spec, models=["m"], limits=LIMITS)
    assert caught.value.violations == [
        FieldViolation("job.ttl", "malformed Duration: seconds must be within ±315,576,000,000")
    ]


def test_validate_spec_refuses_nanos_of_the_wrong_sign() -> None:
    spec = job_pb2.JobSpec(model="m", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=1))
    spec.ttl.seconds, spec.ttl.nanos = 60, -5  # once accepted as 59.999999995 s
    with pytest.raises(InvalidArgument) as caught:
        validate_spec(spec, models=["m"], limits=LIMITS)
    assert [v.field for v in caught.value.violations] == ["job.ttl"]
