"""Input the protobuf runtime itself refuses or misreads, and faults of the server, on a real
bridge: never UNKNOWN. A request that does not decode, or carries a malformed Duration, is
INVALID_ARGUMENT naming the field; an unexpected exception is INTERNAL with only a trace id
(its text stays in the server's log), and the bridge keeps serving."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import message as pb_message
from google.rpc import error_details_pb2
from structlog.testing import capture_logs

from broker_bridge.auth import Authenticator
from broker_bridge.server import BridgeServer
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.integration.bridge_kit import details, reason_of, spec

SERVICE = "/fleetwire.v1.JobService"
MARK = "MARK"  # replaced in the encoding by as many bytes that are not UTF-8


@pytest.fixture
async def channel(bridge: BridgeServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as open_channel:
        yield open_channel


def not_utf8(request: pb_message.Message) -> bytes:
    """``request``'s encoding with the UTF-8 bytes of MARK replaced by invalid ones (same
    length, so every length prefix stays right: only the string is bad)."""
    raw = request.SerializeToString()
    if raw.count(MARK.encode()) != 1:
        raise ValueError("the request must contain MARK exactly once")
    return raw.replace(MARK.encode(), b"\xff" * len(MARK))


def bad_field(error: grpc.aio.AioRpcError) -> list[str]:
    bad = details(error).get("BadRequest")
    assert isinstance(bad, error_details_pb2.BadRequest), details(error)
    return [v.field for v in bad.field_violations]


def with_labels(job: job_pb2.JobSpec, labels: dict[str, str]) -> job_pb2.JobSpec:
    job.labels.update(labels)
    return job


def chat(content: str) -> job_pb2.JobSpec:
    job = spec("")
    job.messages.add(role="user", content=content)
    return job


UNARY_BAD_UTF8 = [
    pytest.param(
        "Submit", job_service_pb2.SubmitRequest(job=spec(MARK)), "job.prompt", id="prompt"
    ),
    pytest.param(
        "Submit", job_service_pb2.SubmitRequest(job=spec(model=MARK)), "job.model", id="model"
    ),
    pytest.param(
        "Submit",
        job_service_pb2.SubmitRequest(job=chat(MARK)),
        "job.messages[0].content",
        id="chat-content",
    ),
    pytest.param(
        "Submit",
        job_service_pb2.SubmitRequest(job=with_labels(spec(), {MARK: "v"})),
        "job.labels",
        id="label-key",
    ),
    pytest.param(
        "SubmitBatch",
        job_service_pb2.SubmitBatchRequest(jobs=[spec("fine"), spec(MARK)]),
        "jobs[1].prompt",
        id="batch-member",
    ),
    pytest.param(
        "Status", job_service_pb2.StatusRequest(job_id=MARK), "job_id", id="status-job-id"
    ),
    pytest.param(
        "Cancel",
        job_service_pb2.CancelRequest(job_id=str(uuid.uuid4()), reason=MARK),
        "reason",
        id="cancel-reason",
    ),
]


@pytest.mark.parametrize(("method", "request_message", "field"), UNARY_BAD_UTF8)
async def test_invalid_utf8_is_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel, method: str, request_message: pb_message.Message, field: str
) -> None:
    call = channel.unary_unary(f"{SERVICE}/{method}", request_serializer=lambda raw: raw)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(not_utf8(request_message))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert bad_field(caught.value) == [field]
    assert reason_of(caught.value) == "INVALID_ARGUMENT"
    assert "DecodeError" not in (caught.value.details() or "")


async def test_invalid_utf8_in_a_streaming_call_is_invalid_argument(
    channel: grpc.aio.Channel,
) -> None:
    call = channel.unary_stream(f"{SERVICE}/Watch", request_serializer=lambda raw: raw)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call(not_utf8(job_service_pb2.WatchRequest(job_id=MARK))):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert bad_field(caught.value) == ["job_id"]


async def test_a_truncated_request_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    raw = job_service_pb2.SubmitRequest(job=spec("a prompt")).SerializeToString()
    call = channel.unary_unary(f"{SERVICE}/Submit", request_serializer=lambda b: b)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(raw[:-3])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert bad_field(caught.value) == ["job"]  # its length runs past the end


def ttl(seconds: int, nanos: int = 0) -> job_pb2.JobSpec:
    job = spec()
    job.ttl.seconds = seconds
    job.ttl.nanos = nanos
    return job


MALFORMED_DURATIONS = [
    pytest.param(2**62, 0, id="2^62-seconds"),
    pytest.param(-(2**62), 0, id="minus-2^62-seconds"),
    pytest.param(315_576_000_001, 0, id="just-beyond-the-range"),
    pytest.param(60, -5, id="negative-nanos"),
    pytest.param(-60, 5, id="mixed-signs"),
    pytest.param(60, 1_000_000_000, id="nanos-out-of-range"),
]


@pytest.mark.parametrize(("seconds", "nanos"), MALFORMED_DURATIONS)
async def test_a_malformed_ttl_is_invalid_argument_naming_it(
    jobs: job_service_pb2_grpc.JobServiceStub, seconds: int, nanos: int
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Submit(job_service_pb2.SubmitRequest(job=ttl(seconds, nanos)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert bad_field(caught.value) == ["job.ttl"]
    # Named as malformed, not merely out of the TTL's limits; no Python exception text.
    assert "malformed Duration" in (caught.value.details() or "")
    assert "Error" not in (caught.value.details() or "")


async def test_a_malformed_ttl_in_a_batch_names_the_member(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    request = job_service_pb2.SubmitBatchRequest(jobs=[spec(), ttl(2**62)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.SubmitBatch(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert bad_field(caught.value) == ["jobs[1].ttl"]


async def test_a_negative_ttl_is_refused_by_the_ttl_limits(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    """0 s and -5 ns is a well-formed (negative) Duration: our own limits refuse it."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Submit(job_service_pb2.SubmitRequest(job=ttl(0, -5)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert bad_field(caught.value) == ["job.ttl"]


def broken_caller(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("secret text")


async def _status(jobs: job_service_pb2_grpc.JobServiceStub, trace_id: str) -> None:
    await jobs.Status(
        job_service_pb2.StatusRequest(job_id=str(uuid.uuid4())),
        metadata=(("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"),),
    )


async def _watch(jobs: job_service_pb2_grpc.JobServiceStub, trace_id: str) -> None:
    async for _ in jobs.Watch(
        job_service_pb2.WatchRequest(job_id=str(uuid.uuid4())),
        metadata=(("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"),),
    ):
        pass


@pytest.mark.parametrize("rpc", [_status, _watch], ids=["unary", "server-stream"])
async def test_a_server_fault_is_internal_with_its_text_only_in_the_log(
    jobs: job_service_pb2_grpc.JobServiceStub,
    monkeypatch: pytest.MonkeyPatch,
    rpc: Callable[[job_service_pb2_grpc.JobServiceStub, str], Any],
) -> None:
    trace_id = uuid.uuid4().hex  # the caller's W3C trace, continued by the bridge
    monkeypatch.setattr(Authenticator, "caller", broken_caller)
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc(jobs, trace_id)
    monkeypatch.undo()

    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL, error
    assert reason_of(error) == "INTERNAL"
    assert trace_id in (error.details() or "")
    assert "secret" not in str(error)
    assert "RuntimeError" not in str(error)
    logged = [entry for entry in logs if entry["event"] == "unexpected error"]
    assert len(logged) == 1, logs
    assert logged[0]["trace_id"] == trace_id
    assert "secret text" in repr(logged[0]["exc_info"])

    # The bridge keeps serving.
    job = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job
    status = await jobs.Status(job_service_pb2.StatusRequest(job_id=job.job_id))
    assert status.job.job_id == job.job_id
