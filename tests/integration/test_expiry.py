"""A job whose TTL runs out in the queue is dead-lettered by the broker and recorded as
EXPIRED by the scheduler; it is never dispatched."""

from __future__ import annotations

import uuid
from datetime import timedelta

import aiormq
import asyncpg

from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually


async def test_expired_job_is_recorded_and_never_dispatched(
    jobs: job_service_pb2_grpc.JobServiceStub,
    scheduler: SchedulerServer,
    amqp_channel: aiormq.abc.AbstractChannel,
    settings: Settings,
) -> None:
    topology = Topology(settings.mesh.namespace)
    await topology.declare_base(amqp_channel)
    queue = await topology.declare_route(amqp_channel, topology.route_key("testnet", "tiny-llama"))
    await amqp_channel.queue_purge(queue)  # per-message TTL is enforced at the head only
    spec = job_pb2.JobSpec(
        model="tiny-llama",
        prompt="too late",
        network=job_pb2.NETWORK_TESTNET,
        sampling=job_pb2.SamplingParams(max_tokens=4),
    )
    spec.ttl.FromTimedelta(timedelta(seconds=1))
    job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job.job_id

    async def left_the_queue() -> job_pb2.Job | None:
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        return job if job.state != job_pb2.JOB_STATE_QUEUED else None

    job = await eventually(left_the_queue, within=10, interval=0.1, what="the job to leave QUEUED")
    assert job.state == job_pb2.JOB_STATE_EXPIRED
    assert job.error.reason == "TTL_EXPIRED"
    assert job.attempts == 0

    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        attempts = await conn.fetchval(
            "SELECT count(*) FROM attempts WHERE job_id = $1", uuid.UUID(job_id)
        )
    finally:
        await conn.close()
    assert attempts == 0, "an expired job is never dispatched"
