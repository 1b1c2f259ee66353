"""Integration fixtures: the bridge and the scheduler in-process, on this run's real
RabbitMQ, Redis and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from broker_bridge.server import BridgeServer
from fleetwire.settings import Settings
from fleetwire.v1 import job_service_pb2_grpc
from scheduler.server import SchedulerServer


@pytest.fixture(scope="session")
async def bridge(settings: Settings) -> AsyncIterator[BridgeServer]:
    server = BridgeServer(settings)
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest.fixture(scope="session")
async def scheduler(settings: Settings) -> AsyncIterator[SchedulerServer]:
    server = SchedulerServer(settings)
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest.fixture
async def jobs(bridge: BridgeServer) -> AsyncIterator[job_service_pb2_grpc.JobServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield job_service_pb2_grpc.JobServiceStub(channel)
