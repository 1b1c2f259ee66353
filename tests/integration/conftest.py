"""Integration fixtures: the scheduler in-process (the bridge fixtures are in the root
conftest), on this run's real RabbitMQ, Redis and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleetwire.settings import Settings
from scheduler.server import SchedulerServer


@pytest.fixture(scope="session")
async def scheduler(settings: Settings) -> AsyncIterator[SchedulerServer]:
    server = SchedulerServer(settings)
    await server.start()
    yield server
    await server.stop(grace=1)
