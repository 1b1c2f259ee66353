"""The outbox: a job row whose message never reached RabbitMQ (its bridge died between the
INSERT and the confirm) is published anyway — by any bridge's relay once its claim lapses,
or at once by a retry of the same request. Only the current claimant may withdraw a row."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import aiormq
import asyncpg
import pytest

from broker_bridge.server import BridgeServer
from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.store.jobs import JobStore
from fleetwire.store.outbox import OutboxStore
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.support.eventually import eventually


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    yield conn
    await conn.close()


@pytest.fixture
async def private_route(
    settings: Settings, amqp_channel: aiormq.abc.AbstractChannel
) -> tuple[str, str]:
    """A subcloud no node serves, and its queue: messages stay there for the test to see."""
    subcloud = f"outbox-{secrets.token_hex(3)}"
    topology = Topology(settings.mesh.namespace)
    await topology.declare_base(amqp_channel)
    queue = await topology.declare_route(
        amqp_channel, topology.route_key("testnet", "tiny-llama", subcloud)
    )
    return subcloud, queue


def private_spec(subcloud: str, request_id: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="tiny-llama",
        prompt="outbox",
        network=job_pb2.NETWORK_TESTNET,
        client_request_id=request_id,
        constraints=job_pb2.Constraints(subcloud=subcloud),
        sampling=job_pb2.SamplingParams(max_tokens=4),
    )


async def messages_in(channel: aiormq.abc.AbstractChannel, queue: str) -> list[str]:
    """Takes every message off ``queue`` and returns their job ids."""
    found: list[str] = []
    while True:
        message = await channel.basic_get(queue, no_ack=True)
        if message.delivery_tag is None:
            return found
        envelope = job_pb2.Job()
        envelope.ParseFromString(message.body)
        found.append(envelope.job_id)


async def lose_message(
    db: asyncpg.Connection,
    channel: aiormq.abc.AbstractChannel,
    queue: str,
    job_id: str,
    *,
    claim_lapses_in: timedelta,
) -> None:
    """Leaves what a bridge SIGKILLed between its INSERT and its publish leaves: the row,
    with a claim nobody will renew or mark, and no message."""
    assert await messages_in(channel, queue) == [job_id]
    await db.execute(
        "UPDATE jobs SET publish_claim = $2, publish_due_at = now() + $3::interval"
        " WHERE job_id = $1",
        uuid.UUID(job_id),
        uuid.uuid4(),
        claim_lapses_in,
    )


async def test_a_lapsed_unpublished_job_is_published_by_the_relay(
    jobs: job_service_pb2_grpc.JobServiceStub,
    bridge: BridgeServer,
    db: asyncpg.Connection,
    amqp_channel: aiormq.abc.AbstractChannel,
    private_route: tuple[str, str],
) -> None:
    subcloud, queue = private_route
    spec = private_spec(subcloud, f"relay-{uuid.uuid4()}")
    job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job.job_id
    await lose_message(db, amqp_channel, queue, job_id, claim_lapses_in=timedelta(0))

    async def relayed() -> list[str]:
        return await messages_in(amqp_channel, queue)

    assert await eventually(relayed, within=15, what="the relay published the job") == [job_id]

    async def marked() -> bool:
        due = await db.fetchval(
            "SELECT publish_due_at FROM jobs WHERE job_id = $1", uuid.UUID(job_id)
        )
        return due is None

    await eventually(marked, within=5, what="the publication was recorded")
    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job_id))


async def test_a_retry_publishes_a_job_its_dead_writer_left_unpublished(
    jobs: job_service_pb2_grpc.JobServiceStub,
    db: asyncpg.Connection,
    amqp_channel: aiormq.abc.AbstractChannel,
    private_route: tuple[str, str],
) -> None:
    subcloud, queue = private_route
    spec = private_spec(subcloud, f"takeover-{uuid.uuid4()}")
    job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job.job_id
    # The writer's claim would hold for an hour: only the retry can publish it now.
    await lose_message(db, amqp_channel, queue, job_id, claim_lapses_in=timedelta(hours=1))

    again = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job
    assert again.job_id == job_id
    assert await messages_in(amqp_channel, queue) == [job_id], (
        "the retry answered 'accepted' only once the job was on its way"
    )
    third = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job
    assert third.job_id == job_id
    assert await messages_in(amqp_channel, queue) == [], "a published job is not published again"
    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job_id))


async def test_only_the_current_claimant_withdraws_a_row(
    jobs: job_service_pb2_grpc.JobServiceStub,
    bridge: BridgeServer,
    db: asyncpg.Connection,
    amqp_channel: aiormq.abc.AbstractChannel,
    private_route: tuple[str, str],
) -> None:
    subcloud, queue = private_route
    spec = private_spec(subcloud, f"claims-{uuid.uuid4()}")
    job_id = uuid.UUID((await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job.job_id)
    writer = uuid.uuid4()
    await db.execute(
        "UPDATE jobs SET publish_claim = $2, publish_due_at = now() + interval '1 hour'"
        " WHERE job_id = $1",
        job_id,
        writer,
    )
    assert bridge._pool is not None
    outbox = OutboxStore(bridge._pool)
    (taken,) = await outbox.take_over([job_id], uuid.uuid4(), timedelta(hours=1))
    assert taken.job_id == job_id
    assert await outbox.withdraw(job_id, writer) is False, "a retry took it: it goes on"
    assert await JobStore(bridge._pool).get_job(job_id) is not None
    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=str(job_id)))
    await messages_in(amqp_channel, queue)
