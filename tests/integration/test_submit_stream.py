"""SubmitStream on real services: many Submits on one stream, each answered by reference
with what Submit alone would have answered — the job, or the same error with the same
details — and the stream goes on after a refused job."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from fleetwire.process.settings import Settings
from fleetwire.store.db import open_pool
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.integration.bridge_kit import bearer, running_bridge, spec, stub_of, with_bridge


async def streamed(
    jobs: job_service_pb2_grpc.JobServiceStub,
    specs: Sequence[job_pb2.JobSpec],
    metadata: tuple[tuple[str, str], ...] = (),
) -> dict[int, job_service_pb2.SubmitStreamResponse]:
    """Sends every spec on one SubmitStream (ref = its index) and returns the answers by
    ref."""

    async def requests() -> AsyncIterator[job_service_pb2.SubmitStreamRequest]:
        for ref, job in enumerate(specs):
            yield job_service_pb2.SubmitStreamRequest(
                ref=ref, submit=job_service_pb2.SubmitRequest(job=job)
            )

    answers: dict[int, job_service_pb2.SubmitStreamResponse] = {}
    async for answer in jobs.SubmitStream(requests(), metadata=metadata, timeout=30):
        assert answer.ref not in answers, "a request answered twice"
        answers[answer.ref] = answer
    return answers


def status_of(answer: job_service_pb2.SubmitStreamResponse) -> status_pb2.Status:
    """The answer's error as the google.rpc.Status it is on the wire."""
    assert answer.WhichOneof("outcome") == "error", answer
    return status_pb2.Status.FromString(answer.error.SerializeToString())


def detail(status: status_pb2.Status, kind: type[error_details_pb2.BadRequest]) -> object:
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            found = kind()
            packed.Unpack(found)
            return found
    raise AssertionError(f"no {kind.__name__} in {status}")


async def test_every_submit_of_a_stream_is_accepted_once_and_answered_by_its_ref(
    settings: Settings,
) -> None:
    specs = [spec(f"stream job {i}") for i in range(300)]  # more than in flight at once
    roomy = with_bridge(settings, tenant_rate=10_000.0, tenant_burst=10_000)
    async with running_bridge(roomy) as bridge, stub_of(bridge) as jobs:
        answers = await streamed(jobs, specs)
        accepted = {ref: answer.accepted.job for ref, answer in answers.items()}
        rows = [
            (await jobs.Status(job_service_pb2.StatusRequest(job_id=accepted[ref].job_id))).job
            for ref in (0, 150, 299)
        ]

    assert sorted(answers) == list(range(300))
    refused = [a.error for a in answers.values() if a.HasField("error")]
    assert not refused, refused[:2]
    assert all(job.state == job_pb2.JOB_STATE_QUEUED for job in accepted.values())
    assert len({job.job_id for job in accepted.values()}) == 300
    # The rows are there, with the spec sent under that ref.
    assert [row.spec.prompt for row in rows] == ["stream job 0", "stream job 150", "stream job 299"]


async def test_a_refused_submit_gets_submits_error_and_the_stream_goes_on(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    answers = await streamed(
        jobs,
        [
            spec(model="no-such-model"),
            spec(mode=job_pb2.INFERENCE_MODE_STREAM),
            spec("fine"),
        ],
    )

    unknown = status_of(answers[0])
    assert unknown.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    violations = detail(unknown, error_details_pb2.BadRequest)
    assert isinstance(violations, error_details_pb2.BadRequest)
    assert [v.field for v in violations.field_violations] == ["job.model"]

    streaming = status_of(answers[1])
    assert streaming.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    violations = detail(streaming, error_details_pb2.BadRequest)
    assert isinstance(violations, error_details_pb2.BadRequest)
    assert [v.field for v in violations.field_violations] == ["job.mode"]

    assert answers[2].accepted.job.state == job_pb2.JOB_STATE_QUEUED


async def test_a_client_request_id_sent_twice_on_a_stream_is_one_job(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    request_id = f"twice-{uuid.uuid4().hex}"
    answers = await streamed(jobs, [spec(request_id=request_id), spec(request_id=request_id)])
    assert answers[0].accepted.job.job_id == answers[1].accepted.job.job_id


@pytest.fixture
async def tenants(settings: Settings) -> AsyncIterator[TenantStore]:
    pool = await open_pool(settings.postgres)
    yield TenantStore(pool)
    await pool.close()


async def test_admission_refuses_a_streamed_submit_with_retry_info(
    settings: Settings, tenants: TenantStore
) -> None:
    tenant = f"stream-rate-{uuid.uuid4().hex[:8]}"
    key = (await tenants.create_key(tenant)).secret
    await tenants.set_limits(tenant, rate_per_second=0.5, burst=3)
    async with running_bridge(with_bridge(settings)) as bridge, stub_of(bridge) as jobs:
        answers = await streamed(jobs, [spec(f"{i}") for i in range(5)], metadata=bearer(key))

    outcomes = sorted(answer.WhichOneof("outcome") or "" for answer in answers.values())
    assert outcomes == ["accepted"] * 3 + ["error"] * 2  # the burst, then refusals
    for answer in answers.values():
        if answer.HasField("error"):
            status = status_of(answer)
            assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            retry = detail(status, error_details_pb2.RetryInfo)  # type: ignore[arg-type]
            assert isinstance(retry, error_details_pb2.RetryInfo)
            assert retry.retry_delay.ToTimedelta().total_seconds() > 0


async def test_a_stream_without_a_valid_key_ends_unauthenticated(
    settings: Settings,
) -> None:
    async with (
        running_bridge(with_bridge(settings, require_api_key=True)) as bridge,
        stub_of(bridge) as jobs,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await streamed(jobs, [spec()], metadata=bearer("not-a-key"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
