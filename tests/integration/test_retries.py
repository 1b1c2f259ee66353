"""Staged retries and dead letters, driven by a scripted node over the real NodeStream
protocol against the real scheduler, RabbitMQ and PostgreSQL."""

from __future__ import annotations

import uuid

import aiormq
import asyncpg

from fleetwire.messaging.topology import HEADER_LAST_ERROR, HEADER_RETRIES, Topology
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running

TERMINAL = {
    job_pb2.JOB_STATE_SUCCEEDED,
    job_pb2.JOB_STATE_FAILED,
    job_pb2.JOB_STATE_DEAD_LETTERED,
    job_pb2.JOB_STATE_EXPIRED,
    job_pb2.JOB_STATE_CANCELLED,
}


async def submit_and_wait(jobs: job_service_pb2_grpc.JobServiceStub) -> job_pb2.Job:
    spec = job_pb2.JobSpec(
        model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3)
    )
    job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job.job_id

    async def finished() -> job_pb2.Job | None:
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        return job if job.state in TERMINAL else None

    return await eventually(finished, within=30, interval=0.1, what=f"job {job_id} to finish")


async def attempts_of(settings: Settings, job_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        return list(
            await conn.fetch(
                "SELECT attempt, outcome, error_reason FROM attempts WHERE job_id = $1"
                " ORDER BY attempt",
                uuid.UUID(job_id),
            )
        )
    finally:
        await conn.close()


def node(scheduler: SchedulerServer, node_id: str, script: dict[int, str]) -> ScriptedNode:
    return ScriptedNode(
        address=f"127.0.0.1:{scheduler.port}",
        node_id=node_id,
        model="scripted",
        script=lambda n: script.get(n, "ok"),
    )


async def test_retryable_failure_goes_through_a_retry_stage_then_succeeds(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, settings: Settings
) -> None:
    async with running(node(scheduler, "retry-once", {1: "fail-retryable"})) as scripted:
        job = await submit_and_wait(jobs)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert job.attempts == 2
    assert [d.attempt for d in scripted.dispatches if d.job_id == job.job_id] == [1, 2]
    history = await attempts_of(settings, job.job_id)
    assert [(r["outcome"], r["error_reason"]) for r in history] == [
        ("FAILED", "SCRIPTED_FAILURE"),
        ("SUCCEEDED", None),
    ]


async def test_bad_signature_is_never_final_and_the_job_is_retried(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, settings: Settings
) -> None:
    async with running(node(scheduler, "forger", {1: "bad-signature"})):
        job = await submit_and_wait(jobs)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert job.signature.attempt == 2
    history = await attempts_of(settings, job.job_id)
    assert history[0]["error_reason"] == "BAD_SIGNATURE"


async def test_non_retryable_failure_fails_at_once(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer
) -> None:
    async with running(node(scheduler, "final-failer", {1: "fail-final"})):
        job = await submit_and_wait(jobs)
    assert job.state == job_pb2.JOB_STATE_FAILED
    assert job.error.reason == "SCRIPTED_FAILURE"
    assert job.attempts == 1


async def test_after_the_last_stage_the_job_is_dead_lettered_with_its_history(
    jobs: job_service_pb2_grpc.JobServiceStub,
    scheduler: SchedulerServer,
    settings: Settings,
    amqp_channel: aiormq.abc.AbstractChannel,
) -> None:
    stages = len(settings.scheduler.retry_delays)
    always = {n: "fail-retryable" for n in range(1, 50)}
    async with running(node(scheduler, "always-fails", always)):
        job = await submit_and_wait(jobs)
    assert job.state == job_pb2.JOB_STATE_DEAD_LETTERED
    assert job.error.reason == "ATTEMPTS_EXHAUSTED"
    assert "SCRIPTED_FAILURE" in job.error.message
    history = await attempts_of(settings, job.job_id)
    assert len(history) == stages + 1
    assert all(r["outcome"] == "FAILED" for r in history)

    parked = None
    queue = Topology(settings.mesh.namespace).dead_letters_queue
    while True:  # other tests park messages here too
        message = await amqp_channel.basic_get(queue, no_ack=True)
        assert message.delivery_tag is not None, "the dead-lettered message is kept"
        if message.header.properties.message_id == job.job_id:
            parked = message
            break
    headers = parked.header.properties.headers or {}
    assert headers[HEADER_RETRIES] == stages
    assert "SCRIPTED_FAILURE" in str(headers[HEADER_LAST_ERROR])
