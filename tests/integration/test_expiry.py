"""A job whose TTL runs out in the queue is dead-lettered by the broker and recorded as
EXPIRED by the scheduler; it is never dispatched."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import aiormq
import asyncpg

from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer


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

    job = None
    for _ in range(100):
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        if job.state != job_pb2.JOB_STATE_QUEUED:
            break
        await asyncio.sleep(0.1)
    assert job is not None
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
