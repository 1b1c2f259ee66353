"""Bad input over the wire: each gets the right status code and names the bad field, and
the server's own limits (message size) hold."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2

from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.integration.bridge_kit import details, spec

Edit = Callable[[job_pb2.JobSpec], None]


def _set(path: str, value: object) -> Edit:
    def edit(job: job_pb2.JobSpec) -> None:
        *parents, name = path.split(".")
        target: object = job
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return edit


def _ttl(seconds: float) -> Edit:
    def edit(job: job_pb2.JobSpec) -> None:
        job.ttl.FromTimedelta(timedelta(seconds=seconds))

    return edit


def _messages(count: int) -> Edit:
    def edit(job: job_pb2.JobSpec) -> None:
        job.prompt = ""
        for _ in range(count):
            job.messages.add(role="user", content="x")

    return edit


BAD_INPUTS = [
    pytest.param(_set("model", "no-such-model"), "job.model", id="unknown-model"),
    pytest.param(_set("prompt", "x" * 40_000), "job.prompt", id="prompt-too-large"),
    pytest.param(_set("sampling.max_tokens", 0), "job.sampling.max_tokens", id="no-max-tokens"),
    pytest.param(
        _set("sampling.max_tokens", 100_000), "job.sampling.max_tokens", id="max-tokens-too-big"
    ),
    pytest.param(_set("sampling.temperature", 9.0), "job.sampling.temperature", id="temp"),
    pytest.param(_ttl(0.5), "job.ttl", id="ttl-too-short"),
    pytest.param(_ttl(90_000), "job.ttl", id="ttl-too-long"),
    pytest.param(_set("priority", 42), "job.priority", id="unknown-priority"),
    pytest.param(_set("network", 42), "job.network", id="unknown-network"),
    pytest.param(_messages(257), "job.messages", id="too-many-messages"),
    pytest.param(_set("constraints.region", "eu west!"), "job.constraints.region", id="bad-region"),
    pytest.param(
        _set("constraints.min_gpu_memory_mib", 1 << 40),
        "job.constraints.min_gpu_memory_mib",
        id="absurd-gpu-memory",
    ),
    pytest.param(_set("model_version", "v 1"), "job.model_version", id="bad-model-version"),
    pytest.param(_set("client_request_id", "r" * 129), "job.client_request_id", id="long-id"),
    pytest.param(_set("client_request_id", "a\x00b"), "job.client_request_id", id="nul-in-id"),
]


@pytest.mark.parametrize(("edit", "field"), BAD_INPUTS)
async def test_bad_input_is_invalid_argument_naming_the_field(
    jobs: job_service_pb2_grpc.JobServiceStub, edit: Edit, field: str
) -> None:
    job = spec()
    edit(job)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Submit(job_service_pb2.SubmitRequest(job=job))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = details(caught.value)["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == [field]


@pytest.mark.parametrize(
    "call",
    [
        lambda jobs: jobs.Status(job_service_pb2.StatusRequest(job_id="x")),
        lambda jobs: jobs.Cancel(job_service_pb2.CancelRequest(job_id="")),
        lambda jobs: jobs.BatchStatus(job_service_pb2.BatchStatusRequest(batch_id="nope")),
    ],
    ids=["status", "cancel", "batch-status"],
)
async def test_malformed_ids_are_invalid_argument(
    jobs: job_service_pb2_grpc.JobServiceStub, call: Callable[..., object]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(jobs)  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_oversized_message_is_refused_by_the_server(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    huge = spec("x" * (9 * 1024 * 1024))  # above the 8 MiB cap of fleetwire.rpc.options
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Submit(job_service_pb2.SubmitRequest(job=huge))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))  # still serving
    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=ok.job.job_id))
