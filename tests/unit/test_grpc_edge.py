"""The edge's pure parts: the checked decoder every server's handlers get, how handlers are
rewrapped, and what INTERNAL tells a client. (The edge on real servers:
tests/integration/test_bridge_wire_input.py and test_scheduler_wire_input.py.)"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from google.rpc import code_pb2

from fleetwire.domain.errors import Internal, InvalidArgument
from fleetwire.rpc.edge import checked_decoder, guard_handler
from fleetwire.rpc.status import status_for
from fleetwire.v1 import job_pb2, job_service_pb2


def test_a_request_that_does_not_decode_is_invalid_argument_naming_the_field() -> None:
    raw = job_service_pb2.SubmitRequest(job=job_pb2.JobSpec(prompt="MARK")).SerializeToString()
    decode = checked_decoder(job_service_pb2.SubmitRequest.FromString)
    with pytest.raises(InvalidArgument) as caught:
        decode(raw.replace(b"MARK", b"\xff\xff\xff\xff"))
    assert [v.field for v in caught.value.violations] == ["job.prompt"]
    assert isinstance(caught.value.__cause__, DecodeError)


def test_a_malformed_duration_is_invalid_argument_naming_the_field() -> None:
    request = job_service_pb2.SubmitRequest(job=job_pb2.JobSpec())
    request.job.ttl.seconds = 2**62
    decode = checked_decoder(job_service_pb2.SubmitRequest.FromString)
    with pytest.raises(InvalidArgument) as caught:
        decode(request.SerializeToString())
    assert [v.field for v in caught.value.violations] == ["job.ttl"]


def test_a_good_request_decodes_unchanged() -> None:
    request = job_service_pb2.SubmitRequest(job=job_pb2.JobSpec(prompt="hi"))
    request.job.ttl.seconds = 60
    decode = checked_decoder(job_service_pb2.SubmitRequest.FromString)
    assert decode(request.SerializeToString()) == request


def test_without_a_deserializer_bytes_pass_through() -> None:
    assert checked_decoder(None)(b"\x00raw") == b"\x00raw"


async def _unary(request: Any, context: Any) -> Any:
    return request


def _sync(request: Any, context: Any) -> Any:
    return request


def test_unary_handlers_take_raw_bytes_and_decode_inside_the_guard() -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        _unary, request_deserializer=job_service_pb2.StatusRequest.FromString
    )
    guarded = guard_handler(handler, "/svc/Method")
    assert guarded.request_deserializer is None
    assert guarded.unary_unary is not _unary


def test_synchronous_handlers_are_left_alone() -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        _sync, request_deserializer=job_service_pb2.StatusRequest.FromString
    )
    assert guard_handler(handler, "/svc/Method") is handler


def test_internal_tells_the_client_only_the_trace_id() -> None:
    status = status_for(Internal("trace-123"))
    assert status.code == code_pb2.INTERNAL
    assert status.message == "internal error; the server logged it under trace id trace-123"


def test_an_excluded_node_is_told_how_long() -> None:
    """NODE_EXCLUDED carries RetryInfo: the node agent waits that long before dialling."""
    from datetime import timedelta

    from google.rpc import error_details_pb2

    from fleetwire.domain.errors import NodeExcluded

    status = status_for(NodeExcluded("excluded", retry_delay=timedelta(seconds=42)))
    assert status.code == code_pb2.UNAVAILABLE
    infos = []
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            infos.append(info.retry_delay.seconds)
    assert infos == [42]
