"""No silent loss at the bridge: with RabbitMQ, Redis or PostgreSQL unreachable, or a
publish that is not confirmed, Submit answers UNAVAILABLE and leaves no job row behind;
after the broker drops the bridge's connection, the bridge reconnects by itself.

The shared services are never stopped here (other suites use them): a bridge is pointed at
a closed local port instead, and the broker-side failure is a forced connection close."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator

import aiormq
import asyncpg
import grpc
import pytest
from pydantic import SecretStr

from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_service_pb2
from tests.conftest import free_port
from tests.integration.bridge_kit import reason_of, running_bridge, spec, stub_of, with_bridge
from tests.support.eventually import eventually


async def rows_with_request_id(settings: Settings, request_id: str) -> int:
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE client_request_id = $1", request_id
        )
        return count
    finally:
        await conn.close()


def with_group(settings: Settings, group: str, **fields: object) -> Settings:
    updated = getattr(settings, group).model_copy(update=fields)
    return with_bridge(settings.model_copy(update={group: updated}))


def with_models(settings: Settings, *models: str) -> Settings:
    mesh = settings.mesh.model_copy(update={"models": [*settings.mesh.models, *models]})
    return settings.model_copy(update={"mesh": mesh})


@pytest.fixture
async def private_model(
    settings: Settings, amqp_channel: aiormq.abc.AbstractChannel
) -> AsyncIterator[str]:
    model = f"flt-{uuid.uuid4().hex[:8]}"
    yield model
    topology = Topology(settings.mesh.namespace)
    for network in ("mainnet", "testnet"):
        await amqp_channel.queue_delete(topology.route_queue(topology.route_key(network, model)))


async def submit_fails_unavailable(settings: Settings, broken: Settings) -> str:
    request_id = f"down-{uuid.uuid4()}"
    async with running_bridge(broken) as bridge, stub_of(bridge) as jobs:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await jobs.Submit(
                job_service_pb2.SubmitRequest(job=spec(request_id=request_id)), timeout=20
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await rows_with_request_id(settings, request_id) == 0, "a half-written job"
    return reason_of(caught.value)


async def test_rabbitmq_unreachable_is_unavailable_and_writes_nothing(settings: Settings) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    broken = with_group(settings, "rabbitmq", url=SecretStr(url))
    assert await submit_fails_unavailable(settings, broken) == "BACKEND_UNAVAILABLE"


async def test_redis_unreachable_is_unavailable_and_writes_nothing(settings: Settings) -> None:
    broken = with_group(settings, "redis", url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"))
    assert await submit_fails_unavailable(settings, broken) == "BACKEND_UNAVAILABLE"


async def test_postgresql_lost_is_unavailable(settings: Settings) -> None:
    async with running_bridge(with_bridge(settings)) as bridge, stub_of(bridge) as jobs:
        assert bridge._pool is not None
        await bridge._pool.close()  # as if the database went away under a running bridge
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()), timeout=20)
        bridge._pool = None
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_unconfirmed_publish_removes_the_job_row(
    settings: Settings, private_model: str, amqp_channel: aiormq.abc.AbstractChannel
) -> None:
    """The row is written before the publish; a publish the broker does not take (its
    queue vanished behind the bridge's back: returned as unroutable) removes it again."""
    topology = Topology(settings.mesh.namespace)
    queue = topology.route_queue(topology.route_key("mainnet", private_model))
    async with (
        running_bridge(with_bridge(with_models(settings, private_model))) as bridge,
        stub_of(bridge) as jobs,
    ):
        first = await jobs.Submit(job_service_pb2.SubmitRequest(job=spec(model=private_model)))
        await jobs.Cancel(job_service_pb2.CancelRequest(job_id=first.job.job_id))
        await amqp_channel.queue_delete(queue)
        request_id = f"lost-{uuid.uuid4()}"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await jobs.Submit(
                job_service_pb2.SubmitRequest(job=spec(model=private_model, request_id=request_id))
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(caught.value) == "ROUTE_UNAVAILABLE"
    assert await rows_with_request_id(settings, request_id) == 0


async def test_failed_batch_is_withdrawn_whole(
    settings: Settings, private_model: str, amqp_channel: aiormq.abc.AbstractChannel
) -> None:
    """One job of a batch cannot be published: the call fails and none of the batch's jobs
    is left to run (those already published are withdrawn)."""
    from fleetwire.v1 import job_pb2

    topology = Topology(settings.mesh.namespace)
    async with (
        running_bridge(with_bridge(with_models(settings, private_model))) as bridge,
        stub_of(bridge) as jobs,
    ):
        testnet = spec(model=private_model)
        testnet.network = job_pb2.NETWORK_TESTNET
        warm = await jobs.SubmitBatch(
            job_service_pb2.SubmitBatchRequest(jobs=[spec(model=private_model), testnet])
        )
        for job_id in warm.batch.job_ids:
            await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job_id))
        await amqp_channel.queue_delete(
            topology.route_queue(topology.route_key("testnet", private_model))
        )
        request_id = f"batch-lost-{uuid.uuid4()}"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await jobs.SubmitBatch(
                job_service_pb2.SubmitBatchRequest(
                    jobs=[spec(model=private_model), testnet, spec("x", model=private_model)],
                    client_request_id=request_id,
                )
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        live = await conn.fetchval(
            "SELECT count(*) FROM jobs j JOIN batches b USING (batch_id)"
            " WHERE b.client_request_id = $1 AND j.state NOT IN ('CANCELLED')",
            request_id,
        )
        batches = await conn.fetchval(
            "SELECT count(*) FROM batches WHERE client_request_id = $1", request_id
        )
    finally:
        await conn.close()
    assert live == 0
    assert batches == 0, "a withdrawn batch leaves no row, so the client may retry its id"


RABBITMQCTL = shutil.which("rabbitmqctl")


def close_connections_named(name: str) -> int:
    """Closes, from the broker's side, every AMQP connection whose client name is ``name``."""
    assert RABBITMQCTL is not None
    listed = subprocess.run(
        [RABBITMQCTL, "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    closed = 0
    for line in listed.splitlines():
        if f'"{name}"' in line or f'<<"{name}">>' in line:
            pid = line.split("\t", 1)[0]
            subprocess.run(
                [RABBITMQCTL, "-q", "close_connection", pid, "fault test"],
                capture_output=True,
                check=True,
                timeout=60,
            )
            closed += 1
    return closed


@pytest.mark.skipif(RABBITMQCTL is None, reason="rabbitmqctl is not installed here")
async def test_bridge_reconnects_after_the_broker_closes_its_connection(
    settings: Settings,
) -> None:
    name = f"fw-fault-{uuid.uuid4().hex[:8]}"
    url = settings.rabbitmq.url.get_secret_value()
    named = with_group(settings, "rabbitmq", url=SecretStr(f"{url}?name={name}"))
    async with running_bridge(named) as bridge, stub_of(bridge) as jobs:
        before = await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))
        generation = bridge._link.generation
        assert await asyncio.to_thread(close_connections_named, name) >= 1
        # The client has noticed the close (or already reconnected: the link reopens lazily).
        await eventually(
            lambda: not bridge._link.is_open or bridge._link.generation > generation,
            within=5,
            what="the bridge to notice the closed connection",
        )
        after = await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()), timeout=20)
        assert bridge._link.generation > generation, "a new connection was made"
        for job in (before.job, after.job):
            await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id))


@pytest.mark.skipif(RABBITMQCTL is None, reason="rabbitmqctl is not installed here")
async def test_submits_across_broker_connection_losses_are_never_lost_or_doubled(
    settings: Settings, private_model: str, amqp_channel: aiormq.abc.AbstractChannel
) -> None:
    """A stream of submits while the broker drops the bridge's connection twice: every
    Submit answers OK (its job row exists and its message is in the queue) or UNAVAILABLE
    (no row). A message whose confirm was lost may sit in the queue without a row; the
    scheduler drops such orphans, so no job runs that the client was told failed."""
    name = f"fw-stream-{uuid.uuid4().hex[:8]}"
    url = settings.rabbitmq.url.get_secret_value()
    named = with_bridge(
        with_models(
            with_group(settings, "rabbitmq", url=SecretStr(f"{url}?name={name}")), private_model
        ),
        tenant_rate=10_000.0,
        tenant_burst=10_000,
    )
    accepted: dict[str, str] = {}  # request id -> job id
    refused: list[str] = []
    async with running_bridge(named) as bridge, stub_of(bridge) as jobs:
        broken = asyncio.Event()
        attempted = 0

        async def submit_stream(worker: int) -> None:
            nonlocal attempted
            i = 0
            after = 0
            while after < 10:  # until both closes happened, then ten more each
                i += 1
                after += broken.is_set()
                attempted += 1
                request_id = f"stream-{worker}-{i}-{uuid.uuid4().hex[:6]}"
                try:
                    answer = await jobs.Submit(
                        job_service_pb2.SubmitRequest(
                            job=spec(f"{worker}/{i}", model=private_model, request_id=request_id)
                        ),
                        timeout=20,
                    )
                    accepted[request_id] = answer.job.job_id
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    refused.append(request_id)
                await asyncio.sleep(0.02)  # pacing the stream of submits

        async def serving_after(generation: int) -> None:
            """Until the bridge has (re)connected since ``generation`` and accepted a few
            submits on the new connection: each close hits a connection carrying submits."""
            before = len(accepted)

            def serving() -> bool:
                link = bridge._link
                reconnected = link.is_open and link.generation > generation
                return reconnected and len(accepted) >= before + 3

            await eventually(serving, within=30, what="submits on a fresh connection")

        async def break_connection() -> None:
            generation = 0
            try:
                for _ in range(2):
                    await serving_after(generation)
                    generation = bridge._link.generation
                    await asyncio.to_thread(close_connections_named, name)
            finally:
                broken.set()  # the streams end (ten more submits each) even if this failed

        await asyncio.gather(*(submit_stream(w) for w in range(3)), break_connection())
        assert bridge._link.generation >= 3, "the bridge reconnected by itself after each close"

    assert len(accepted) + len(refused) == attempted
    assert len(accepted) > 0
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        rows = {
            r["client_request_id"]: str(r["job_id"])
            for r in await conn.fetch(
                "SELECT client_request_id, job_id FROM jobs WHERE client_request_id = ANY($1)",
                [*accepted, *refused],
            )
        }
    finally:
        await conn.close()
    assert rows == accepted, "exactly the accepted jobs exist"
    topology = Topology(settings.mesh.namespace)
    queue = topology.route_queue(topology.route_key("mainnet", private_model))
    queued: list[str] = []
    while True:
        message = await amqp_channel.basic_get(queue, no_ack=True)
        if message.delivery_tag is None:
            break
        queued.append(str(message.header.properties.message_id))
    assert len(queued) == len(set(queued)), "no job was published twice"
    assert set(accepted.values()) <= set(queued), "every accepted job is in the queue"
    orphans = set(queued) - set(accepted.values())
    assert len(orphans) <= len(refused)
