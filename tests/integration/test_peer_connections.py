"""Connections per peer address on the node port (``FLEETWIRE_SCHEDULER_MAX_CONNECTIONS_PER_
PEER``) and idle connections closed (``FLEETWIRE_SCHEDULER_CONNECTION_IDLE``), on a real
scheduler: separate channels from 127.0.0.1, each its own connection."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nacl.signing import SigningKey

from fleetwire.process.settings import Settings
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.handshake import handshake

LIMIT = 2
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # not shared with other channels


async def scheduler_with(settings: Settings, **scheduler: Any) -> SchedulerServer:
    group = settings.scheduler.model_copy(
        update={
            "port": 0,
            "admin_port": 0,
            "scheduler_id": f"peers-{uuid.uuid4().hex[:6]}",
            **scheduler,
        }
    )
    server = SchedulerServer(settings.model_copy(update={"scheduler": group}))
    await server.start()
    return server


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[SchedulerServer]:
    server = await scheduler_with(settings, max_connections_per_peer=LIMIT)
    yield server
    await server.stop(grace=1)


def connection(server: SchedulerServer) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OWN_CONNECTION)


async def test_connections_beyond_the_limit_per_address_are_refused_until_one_closes(
    limited: SchedulerServer,
) -> None:
    held = [connection(limited) for _ in range(LIMIT)]
    try:
        for i, channel in enumerate(held):
            welcomed = await handshake(channel, f"peer-{i}", SigningKey.generate(), stay=True)
            assert welcomed == "welcome"
        extra = connection(limited)
        try:
            refused = await handshake(extra, "peer-extra", SigningKey.generate())
            assert refused.startswith("RESOURCE_EXHAUSTED TOO_MANY_CONNECTIONS"), refused
            # The connections already counted keep their sessions and may open more streams.
            assert all(limited.registry.get(f"peer-{i}") is not None for i in range(LIMIT))
            another = await handshake(held[0], "peer-0b", SigningKey.generate())
            assert another == "welcome"
            # A connection closing frees its slot.
            await held.pop().close()

            async def extra_is_welcome() -> bool:
                outcome = await handshake(extra, "peer-extra", SigningKey.generate())
                return outcome == "welcome"

            await eventually(extra_is_welcome, 10, "a freed slot for the extra connection")
        finally:
            await extra.close()
    finally:
        for channel in held:
            await channel.close()


async def test_an_idle_connection_is_closed(settings: Settings) -> None:
    server = await scheduler_with(settings, connection_idle=timedelta(seconds=0.5))
    try:
        async with connection(server) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert channel.get_state() == grpc.ChannelConnectivity.READY

            def went_idle() -> bool:
                return bool(channel.get_state() == grpc.ChannelConnectivity.IDLE)

            await eventually(went_idle, 10, "the server to close the idle connection")
    finally:
        await server.stop(grace=1)
