"""``decode_fault`` names the field that breaks an encoding the protobuf runtime refused.

Every input here is first shown to fail ``FromString`` for real, so the walk is checked
against the runtime's own idea of a bad message, not against ours."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError, Message

from fleetwire.domain.errors import FieldViolation
from fleetwire.rpc.wire_faults import decode_fault
from fleetwire.v1 import job_pb2, job_service_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2

MARK = "MARK"


def spoiled(message: Message) -> bytes:
    """``message``'s encoding with MARK's bytes replaced by as many non-UTF-8 bytes."""
    raw = message.SerializeToString()
    assert raw.count(MARK.encode()) == 1
    return raw.replace(MARK.encode(), b"\xff" * len(MARK))


def fault_of(message_type: type[Message], data: bytes) -> FieldViolation:
    with pytest.raises(DecodeError):
        message_type.FromString(data)
    return decode_fault(message_type.DESCRIPTOR, data)


def batch(*prompts: str) -> job_service_pb2.SubmitBatchRequest:
    return job_service_pb2.SubmitBatchRequest(
        jobs=[job_pb2.JobSpec(model="m", prompt=p) for p in prompts]
    )


NOT_UTF8 = [
    pytest.param(
        job_service_pb2.SubmitRequest(job=job_pb2.JobSpec(prompt=MARK)), "job.prompt", id="nested"
    ),
    pytest.param(batch("a", "b", MARK), "jobs[2].prompt", id="repeated-message-index"),
    pytest.param(
        job_service_pb2.SubmitRequest(job=job_pb2.JobSpec(messages=[{"content": MARK}])),
        "job.messages[0].content",
        id="deep",
    ),
    pytest.param(
        job_service_pb2.SubmitRequest(
            job=job_pb2.JobSpec(sampling=job_pb2.SamplingParams(stop=["ok", MARK]))
        ),
        "job.sampling.stop[1]",
        id="repeated-string-index",
    ),
    pytest.param(
        job_service_pb2.SubmitRequest(job=job_pb2.JobSpec(labels={"k": MARK})),
        "job.labels",
        id="map-value",
    ),
    pytest.param(
        nodes_pb2.NodeStreamRequest(hello=nodes_pb2.Hello(subclouds=["a", MARK])),
        "hello.subclouds[1]",
        id="oneof-member",
    ),
    pytest.param(job_service_pb2.StatusRequest(job_id=MARK), "job_id", id="top-level"),
]


@pytest.mark.parametrize(("message", "field"), NOT_UTF8)
def test_a_string_that_is_not_utf8_is_named(message: Message, field: str) -> None:
    fault = fault_of(type(message), spoiled(message))
    assert fault.field == field
    assert "UTF-8" in fault.description


def test_a_length_that_runs_past_the_end_names_its_field() -> None:
    raw = job_service_pb2.SubmitRequest(job=job_pb2.JobSpec(prompt="hello")).SerializeToString()
    assert fault_of(job_service_pb2.SubmitRequest, raw[:-2]).field == "job"


def test_a_truncated_varint_inside_a_message_names_the_field() -> None:
    spec = job_pb2.JobSpec(sampling=job_pb2.SamplingParams(max_tokens=300))
    raw = job_service_pb2.SubmitRequest(job=spec).SerializeToString()
    # Cut inside max_tokens' varint, keeping the outer length prefixes consistent.
    inner = spec.sampling.SerializeToString()[:-1]
    job = b"\x2a" + bytes([len(inner)]) + inner
    request = b"\x0a" + bytes([len(job)]) + job
    assert raw != request
    fault = fault_of(job_service_pb2.SubmitRequest, request)
    assert fault.field == "job.sampling.max_tokens"


def test_field_number_zero_is_blamed_on_the_enclosing_message() -> None:
    job = b"\x00\x01"  # tag 0
    request = b"\x0a" + bytes([len(job)]) + job
    assert fault_of(job_service_pb2.SubmitRequest, request).field == "job"


def test_a_broken_top_level_tag_names_no_field() -> None:
    fault = fault_of(job_service_pb2.SubmitRequest, b"\x80")
    assert fault.field == ""


def test_unknown_fields_and_groups_are_skipped_to_the_real_fault() -> None:
    unknown = b"\xf8\x07\x01" + b"\xfb\x07" + b"\x08\x01" + b"\xfc\x07"  # field 127, group 127
    raw = unknown + spoiled(job_service_pb2.StatusRequest(job_id=MARK))
    assert fault_of(job_service_pb2.StatusRequest, raw).field == "job_id"


def test_without_a_descriptor_the_whole_request_is_blamed() -> None:
    fault = decode_fault(None, b"\x80")
    assert fault.field == ""
    assert "corrupt" in fault.description


def test_a_fault_the_walk_does_not_model_falls_back_to_the_request() -> None:
    # Well-formed bytes: nothing to blame, so the message says the request is corrupt.
    fault = decode_fault(job_service_pb2.StatusRequest.DESCRIPTOR, b"\x0a\x02ok")
    assert fault == FieldViolation(
        "", "the request is not a valid fleetwire.v1.StatusRequest (corrupt encoding)"
    )
