"""Status, Watch and Cancel on real services; bad input gets a clear error and the bridge
keeps serving."""

from __future__ import annotations

import uuid

import grpc
import pytest

from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc


def queued_spec() -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="tiny-llama", prompt="hi", sampling=job_pb2.SamplingParams(max_tokens=4)
    )


async def test_status_of_unknown_job_is_not_found(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Status(job_service_pb2.StatusRequest(job_id=str(uuid.uuid4())))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_malformed_job_id_is_invalid_argument(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Status(job_service_pb2.StatusRequest(job_id="not-a-uuid"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_queued_job_and_watch_ends(jobs: job_service_pb2_grpc.JobServiceStub) -> None:
    submitted = (await jobs.Submit(job_service_pb2.SubmitRequest(job=queued_spec()))).job
    status = (await jobs.Status(job_service_pb2.StatusRequest(job_id=submitted.job_id))).job
    assert status.state == job_pb2.JOB_STATE_QUEUED
    assert status.spec.priority == job_pb2.PRIORITY_CLASS_NORMAL  # default applied

    cancelled = (
        await jobs.Cancel(job_service_pb2.CancelRequest(job_id=submitted.job_id, reason="test"))
    ).job
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    assert cancelled.error.reason == "CANCELLED_BY_CLIENT"

    events = [
        event async for event in jobs.Watch(job_service_pb2.WatchRequest(job_id=submitted.job_id))
    ]
    assert [e.job.state for e in events] == [job_pb2.JOB_STATE_CANCELLED]

    again = (await jobs.Cancel(job_service_pb2.CancelRequest(job_id=submitted.job_id))).job
    assert again.state == job_pb2.JOB_STATE_CANCELLED  # terminal: unchanged
