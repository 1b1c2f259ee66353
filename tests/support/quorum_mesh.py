"""An in-process bridge and scheduler on quorum queues, in a namespace of their own on the
local broker (which runs quorum queues as a one-node cluster)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiormq
import grpc

from broker_bridge.server import BridgeServer
from fleetwire.messaging.topology import QueueType
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.conftest import broker_queue_names, free_port


@asynccontextmanager
async def quorum_mesh(
    settings: Settings, run_id: str, **rabbitmq: Any
) -> AsyncIterator[tuple[job_service_pb2_grpc.JobServiceStub, SchedulerServer]]:
    """Yields a client of the bridge and the scheduler; ``rabbitmq`` overrides RabbitMQ
    settings (``delivery_limit``...). Deletes the namespace's queues afterwards."""
    namespace = f"{run_id}q{uuid.uuid4().hex[:6]}"
    quorum = settings.model_copy(
        update={
            "mesh": settings.mesh.model_copy(update={"namespace": namespace}),
            "rabbitmq": settings.rabbitmq.model_copy(
                update={"queue_type": QueueType.QUORUM, **rabbitmq}
            ),
            "bridge": settings.bridge.model_copy(update={"port": free_port()}),
            "scheduler": settings.scheduler.model_copy(
                update={"port": free_port(), "admin_port": free_port()}
            ),
        }
    )
    scheduler = SchedulerServer(quorum)
    await scheduler.start()
    bridge = BridgeServer(quorum)
    await bridge.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
            yield job_service_pb2_grpc.JobServiceStub(channel), scheduler
    finally:
        await bridge.stop(grace=1)
        await scheduler.stop(grace=1)
        connection = await aiormq.connect(settings.rabbitmq.url.get_secret_value())
        amqp = await connection.channel()
        for queue in await broker_queue_names(f"{namespace}."):
            await amqp.queue_delete(queue)
        for exchange in ("jobs", "dlx"):
            await amqp.exchange_delete(f"{namespace}.{exchange}")
        await connection.close()
