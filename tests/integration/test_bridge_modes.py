"""The inference modes: polling, sync (bounded by the deadline; the job keeps its id),
stream (Watch resumable from a sequence number) and batch (one id, aggregate progress)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from broker_bridge.server import BridgeServer
from broker_bridge.service import JOB_ID_METADATA
from fleetwire.domain.states import JobState
from fleetwire.messaging.events import ChunkEvent, JobEvents
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.integration.bridge_kit import details, reason_of, spec
from tests.support.eventually import eventually


async def test_polling_returns_at_once(jobs: job_service_pb2_grpc.JobServiceStub) -> None:
    job = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()), timeout=5)).job
    assert job.state == job_pb2.JOB_STATE_QUEUED
    assert job.spec.mode == job_pb2.INFERENCE_MODE_POLLING  # the default
    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id))


async def test_sync_deadline_leaves_a_job_that_can_be_followed(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    """No node serves this run's integration mesh: a SYNC submit outlives its deadline,
    and the job id it was given (initial metadata) still answers Status."""
    call = jobs.Submit(
        job_service_pb2.SubmitRequest(job=spec(mode=job_pb2.INFERENCE_MODE_SYNC)), timeout=1.0
    )
    metadata = dict(await call.initial_metadata())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    job_id = str(metadata[JOB_ID_METADATA])
    job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
    assert job.state == job_pb2.JOB_STATE_QUEUED
    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job_id))


async def test_watch_resumes_after_a_sequence_number(
    jobs: job_service_pb2_grpc.JobServiceStub, events: JobEvents
) -> None:
    job = (
        await jobs.Submit(
            job_service_pb2.SubmitRequest(job=spec(mode=job_pb2.INFERENCE_MODE_STREAM))
        )
    ).job
    try:
        for seq, text in enumerate(["a", "b", "c", "d"], start=1):  # as a scheduler would
            await events.publish_chunk(job.job_id, ChunkEvent(1, seq, text, 1))

        async def chunks_after(sequence: int) -> list[str]:
            seen: list[str] = []
            stream = jobs.Watch(
                job_service_pb2.WatchRequest(job_id=job.job_id, after_sequence=sequence)
            )
            async for event in stream:
                if event.HasField("chunk"):
                    seen.append(event.chunk.text)
                    if event.chunk.sequence == 4:
                        stream.cancel()
                        break
            return seen

        assert await chunks_after(0) == ["a", "b", "c", "d"]
        assert await chunks_after(2) == ["c", "d"]  # a reconnecting client resumes
    finally:
        await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id))
        await events.publish_state(job.job_id, JobState.CANCELLED)


async def test_batch_submit_status_and_watch(jobs: job_service_pb2_grpc.JobServiceStub) -> None:
    request = job_service_pb2.SubmitBatchRequest(
        jobs=[spec(f"item {i}") for i in range(3)], client_request_id=f"batch-{uuid.uuid4()}"
    )
    batch = (await jobs.SubmitBatch(request)).batch
    assert (batch.total, batch.queued, batch.done) == (3, 3, False)
    assert len(batch.job_ids) == 3
    member = (await jobs.Status(job_service_pb2.StatusRequest(job_id=batch.job_ids[0]))).job
    assert member.spec.mode == job_pb2.INFERENCE_MODE_BATCH

    again = (await jobs.SubmitBatch(request)).batch  # idempotent
    assert (again.batch_id, list(again.job_ids)) == (batch.batch_id, list(batch.job_ids))

    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=batch.job_ids[0]))
    status = (
        await jobs.BatchStatus(job_service_pb2.BatchStatusRequest(batch_id=batch.batch_id))
    ).batch
    assert (status.queued, status.cancelled, status.done) == (2, 1, False)

    events: list[job_service_pb2.WatchBatchResponse] = []

    async def follow() -> None:
        async for event in jobs.WatchBatch(
            job_service_pb2.WatchBatchRequest(batch_id=batch.batch_id)
        ):
            events.append(event)

    follower = asyncio.create_task(follow())
    # The watch has begun once its first aggregate arrived: the bridge read the members'
    # states before sending it, so the cancels below come after that read.
    await eventually(lambda: events, within=10, what="the watch's first aggregate")
    for job_id in batch.job_ids[1:]:
        await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job_id))
    await asyncio.wait_for(follower, 10)
    assert not events[0].HasField("job")
    assert events[0].batch.cancelled == 1
    # Every member once: the one cancelled before the watch began right away.
    assert events[1].job.job_id == batch.job_ids[0]
    assert sorted(e.job.job_id for e in events[1:]) == sorted(batch.job_ids)
    assert (events[-1].batch.done, events[-1].batch.cancelled) == (True, 3)


async def test_bad_batch_names_the_job_and_field(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    request = job_service_pb2.SubmitBatchRequest(
        jobs=[spec(), spec(model="nope"), spec(request_id="own")]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.SubmitBatch(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = details(caught.value)["BadRequest"]
    fields = [v.field for v in bad.field_violations]  # type: ignore[attr-defined]
    assert fields == ["jobs[1].model", "jobs[2].client_request_id"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.SubmitBatch(job_service_pb2.SubmitBatchRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_batch_of_another_tenant_is_not_found(
    jobs: job_service_pb2_grpc.JobServiceStub, bridge: BridgeServer
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.BatchStatus(job_service_pb2.BatchStatusRequest(batch_id=str(uuid.uuid4())))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "NOT_FOUND"
