"""The deadline reaper: every live job past its deadline (TTL plus the grace) is closed as
EXPIRED with a reason, however it was dropped — its message deleted from RabbitMQ, the
scheduler that ran it dead — and several replicas close each job once."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiormq
import asyncpg
import pytest

from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.deadline_store import DeadlineStore
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    yield conn
    await conn.close()


async def submit_unserved(
    jobs: job_service_pb2_grpc.JobServiceStub,
    channel: aiormq.abc.AbstractChannel,
    settings: Settings,
    *,
    ttl: timedelta,
) -> tuple[str, str]:
    """Submits a job on a subcloud no node serves; returns its id and its queue."""
    subcloud = f"reap-{secrets.token_hex(3)}"
    topology = Topology(settings.mesh.namespace)
    await topology.declare_base(channel)
    queue = await topology.declare_route(
        channel, topology.route_key("testnet", "tiny-llama", subcloud)
    )
    spec = job_pb2.JobSpec(
        model="tiny-llama",
        prompt="never served",
        network=job_pb2.NETWORK_TESTNET,
        constraints=job_pb2.Constraints(subcloud=subcloud),
        sampling=job_pb2.SamplingParams(max_tokens=4),
    )
    spec.ttl.FromTimedelta(ttl)
    job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job.job_id
    return job_id, queue


async def test_a_job_whose_message_is_deleted_expires_by_its_deadline(
    jobs: job_service_pb2_grpc.JobServiceStub,
    scheduler: SchedulerServer,
    amqp_channel: aiormq.abc.AbstractChannel,
    settings: Settings,
) -> None:
    job_id, queue = await submit_unserved(jobs, amqp_channel, settings, ttl=timedelta(seconds=1))
    purged = await amqp_channel.queue_purge(queue)  # the message is gone: no broker expiry
    assert purged.message_count == 1
    deadline = datetime.now(UTC) + timedelta(seconds=1) + settings.scheduler.reap_grace

    async def closed() -> job_pb2.Job | None:
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        return job if job.state != job_pb2.JOB_STATE_QUEUED else None

    job = await eventually(closed, within=20, interval=0.1, what="the job was closed")
    assert job.state == job_pb2.JOB_STATE_EXPIRED
    assert job.error.reason == "DEADLINE_PASSED"
    assert "QUEUED" in job.error.message
    assert job.updated_at.ToDatetime(tzinfo=UTC) >= deadline - timedelta(seconds=1)


async def test_a_job_held_by_a_dead_scheduler_expires_and_its_attempt_is_lost(
    jobs: job_service_pb2_grpc.JobServiceStub,
    scheduler: SchedulerServer,
    amqp_channel: aiormq.abc.AbstractChannel,
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    job_id, queue = await submit_unserved(jobs, amqp_channel, settings, ttl=timedelta(minutes=5))
    await amqp_channel.queue_purge(queue)
    # What a scheduler that died holding it, on a broker that lost the delivery, leaves.
    await db.execute(
        "UPDATE jobs SET state = 'RUNNING', attempts = 1, node_id = 'gone-node',"
        " expires_at = now() - interval '1 minute' WHERE job_id = $1",
        uuid.UUID(job_id),
    )
    await db.execute(
        "INSERT INTO attempts (job_id, attempt, node_id, scheduler_id, outcome)"
        " VALUES ($1, 1, 'gone-node', 'dead-scheduler', 'RUNNING')",
        uuid.UUID(job_id),
    )

    async def closed() -> job_pb2.Job | None:
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        return job if job.state == job_pb2.JOB_STATE_EXPIRED else None

    job = await eventually(closed, within=10, interval=0.1, what="the job was reaped")
    assert job.error.reason == "DEADLINE_PASSED"
    assert "RUNNING on node gone-node" in job.error.message
    outcome = await db.fetchval(
        "SELECT outcome FROM attempts WHERE job_id = $1 AND attempt = 1", uuid.UUID(job_id)
    )
    assert outcome == "LOST"
    billed = await db.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE job_id = $1", uuid.UUID(job_id)
    )
    assert billed == 0


async def test_reapers_of_several_replicas_close_each_job_once(
    jobs: job_service_pb2_grpc.JobServiceStub,
    amqp_channel: aiormq.abc.AbstractChannel,
    settings: Settings,
    scheduler: SchedulerServer,
    db: asyncpg.Connection,
) -> None:
    template, queue = await submit_unserved(jobs, amqp_channel, settings, ttl=timedelta(minutes=5))
    await amqp_channel.queue_purge(queue)
    count = 1_000
    await db.execute(
        "INSERT INTO jobs (job_id, state, spec, model, network, priority, route_key,"
        " request_digest, trace_id, expires_at, tenant_id)"
        " SELECT gen_random_uuid(), 'QUEUED', spec, model, network, priority, route_key,"
        " request_digest, $2, now() + interval '20 seconds', tenant_id"
        " FROM jobs, generate_series(1, $3) WHERE job_id = $1",
        uuid.UUID(template),
        f"reap-many-{template}",
        count,
    )
    # A negative grace makes these replicas see jobs due within the next minute as
    # overdue, while the running scheduler's own reaper (grace > 0) leaves them alone.
    pool = await asyncpg.create_pool(
        settings.postgres.dsn.get_secret_value(), min_size=3, max_size=3
    )
    seen: list[uuid.UUID] = []

    async def replica(store: DeadlineStore) -> None:
        while True:
            reaped = await store.expire_overdue(timedelta(seconds=-60), 128)
            if reaped is None:  # another replica's sweep holds the lock
                await asyncio.sleep(0.01)
                continue
            if not reaped:
                return
            seen.extend(job.job_id for job in reaped)

    try:
        await asyncio.gather(*(replica(DeadlineStore(pool)) for _ in range(3)))
    finally:
        await pool.close()
    mine = {
        r["job_id"]
        for r in await db.fetch(
            "SELECT job_id FROM jobs WHERE trace_id = $1 AND state = 'EXPIRED'",
            f"reap-many-{template}",
        )
    }
    assert len(mine) == count, "every overdue job was closed"
    assert len(seen) == len(set(seen)), "no job was closed twice"
    assert mine <= set(seen)
