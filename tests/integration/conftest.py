"""Integration fixtures: the scheduler in-process (the bridge fixtures are in the root
conftest), on this run's real RabbitMQ, Redis and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from fleetwire.messaging.events import JobEvents, connect_redis
from fleetwire.process.settings import Settings
from fleetwire.store.db import open_pool
from fleetwire.v1 import mesh_admin_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.mesh_admin import SendsOperatorKey


@pytest.fixture(scope="session")
async def scheduler(settings: Settings) -> AsyncIterator[SchedulerServer]:
    server = SchedulerServer(settings)
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on this run's PostgreSQL (migrated), for tests that read or seed rows."""
    pool = await open_pool(settings.postgres)
    yield pool
    await pool.close()


@pytest.fixture
async def admin(
    scheduler: SchedulerServer, operator_key: str
) -> AsyncIterator[mesh_admin_service_pb2_grpc.MeshAdminServiceStub]:
    """MeshAdminService on the scheduler's admin port, with an admin operator's key."""
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{scheduler.admin_port}", interceptors=[SendsOperatorKey(operator_key)]
    ) as channel:
        yield mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[JobEvents]:
    """The run's job event streams, as the bridge and the schedulers write them."""
    redis = connect_redis(settings.redis.url.get_secret_value())
    yield JobEvents(
        redis,
        settings.mesh.namespace,
        maxlen=settings.redis.stream_maxlen,
        ttl=settings.redis.stream_ttl,
        finished_retention=settings.redis.finished_stream_retention,
    )
    await redis.aclose()
