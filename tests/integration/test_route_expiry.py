"""Route queues expire when unused (``FLEETWIRE_ROUTE_QUEUE_EXPIRES``, RabbitMQ's
``x-expires``), on this run's real RabbitMQ with an expiry of a second or two: an unused
one disappears, one with a consumer stays, and one that exists with other arguments (made
before expiry existed) is used as it is rather than failing with PRECONDITION_FAILED."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import aiormq
import aiormq.abc

from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from tests.conftest import broker_queue_names
from tests.support.eventually import eventually

EXPIRES = timedelta(seconds=1.5)


async def broker_queues(prefix: str) -> set[str]:
    return set(await broker_queue_names(prefix))


async def test_an_unused_route_queue_expires_and_one_in_use_does_not(
    settings: Settings, amqp_channel: aiormq.abc.AbstractChannel
) -> None:
    expiring = Topology(settings.mesh.namespace, route_queue_expires=EXPIRES)
    legacy = Topology(settings.mesh.namespace, route_queue_expires=timedelta(0))
    await expiring.declare_base(amqp_channel)
    tag = uuid.uuid4().hex[:8]
    unused_route, used_route, old_route = (f"testnet.expiry-{n}-{tag}" for n in "uso")
    unused = await expiring.declare_route(amqp_channel, unused_route)
    used = await expiring.declare_route(amqp_channel, used_route)
    consumer = await amqp_channel.connection.channel()
    await consumer.basic_consume(used, lambda _message: asyncio.sleep(0), no_ack=True)
    # A queue declared without an expiry (before this release): used as it is.
    old = await legacy.declare_route(amqp_channel, old_route)
    assert await expiring.declare_route(amqp_channel, old_route) == old
    assert not amqp_channel.is_closed
    prefix = f"{settings.mesh.namespace}.jobs.testnet.expiry-"
    try:
        assert {unused, used, old} <= await broker_queues(prefix)

        async def unused_is_gone() -> bool:
            return unused not in await broker_queues(prefix)

        await eventually(unused_is_gone, 8, "the unused route queue to expire")
        await asyncio.sleep(EXPIRES.total_seconds())  # past the expiry once more
        assert {used, old} <= await broker_queues(prefix), "in use, or without an expiry"
    finally:
        await consumer.close()
        for queue in (used, old):
            await amqp_channel.queue_delete(queue)
