"""What a node claims in Hello is checked, on a real scheduler and PostgreSQL: a Hello too
large, with too many subclouds or slots above the cap is refused before any database work;
a subcloud counts only when granted; models outside the mesh's registry make no route."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from nacl.signing import SigningKey

from fleetwire.process.settings import Settings
from fleetwire.store.nodes import NodeStore
from fleetwire.v1 import job_pb2, node_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.handshake import handshake, hello


@pytest.fixture
async def granting(settings: Settings) -> AsyncIterator[SchedulerServer]:
    """A scheduler that believes no subcloud claim: only grants count."""
    group = settings.scheduler.model_copy(
        update={
            "port": 0,
            "admin_port": 0,
            "trust_node_claims": False,
            "max_node_slots": 16,
            "scheduler_id": f"claims-{uuid.uuid4().hex[:6]}",
        }
    )
    server = SchedulerServer(settings.model_copy(update={"scheduler": group}))
    await server.start()
    yield server
    await server.stop(grace=1)


async def login(
    server: SchedulerServer, message: nodes_pb2.NodeStreamRequest, key: SigningKey
) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return await handshake(channel, message.hello.node_id, key, hello_message=message)


def node(**fields: Any) -> tuple[nodes_pb2.NodeStreamRequest, SigningKey]:
    key = SigningKey.generate()
    message = hello(f"claims-{uuid.uuid4().hex[:8]}", key)
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(message.hello, name).extend(value)
        else:
            setattr(message.hello, name, value)
    return message, key


async def granted_testnet(pool: asyncpg.Pool, message: nodes_pb2.NodeStreamRequest) -> None:
    """What an operator's approval does by default: the node may serve testnet."""
    await NodeStore(pool).grant_network(message.hello.node_id, "testnet")


async def registered(pool: asyncpg.Pool, node_id: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM nodes WHERE node_id = $1", node_id))


async def test_an_oversized_hello_is_refused_before_any_database_work(
    granting: SchedulerServer, pool: asyncpg.Pool
) -> None:
    message, key = node(region="x" * 20_000)
    outcome = await login(granting, message, key)
    assert outcome.startswith("PERMISSION_DENIED HELLO_TOO_LARGE"), outcome
    assert await registered(pool, message.hello.node_id) == 0


async def test_slots_above_the_cap_are_refused(
    granting: SchedulerServer, pool: asyncpg.Pool
) -> None:
    message, key = node(slots=17)
    outcome = await login(granting, message, key)
    assert outcome.startswith("INVALID_ARGUMENT"), outcome
    assert "hello.slots" in outcome or "at most 16 slots" in outcome, outcome
    assert await registered(pool, message.hello.node_id) == 0
    message, key = node(slots=16)
    await granted_testnet(pool, message)
    assert await login(granting, message, key) == "welcome"


async def test_too_many_subclouds_are_refused(granting: SchedulerServer) -> None:
    message, key = node(subclouds=[f"pool-{i}" for i in range(9)])
    outcome = await login(granting, message, key)
    assert outcome.startswith("INVALID_ARGUMENT"), outcome


async def test_a_claimed_subcloud_counts_only_when_granted(
    granting: SchedulerServer, pool: asyncpg.Pool
) -> None:
    message, key = node(subclouds=["tenant-a-pool"])
    node_id = message.hello.node_id
    outcome = await login(granting, message, key)
    assert outcome.startswith("PERMISSION_DENIED SUBCLOUD_NOT_GRANTED"), outcome
    assert granting.registry.get(node_id) is None, "no session: none of the subcloud's jobs"

    assert await NodeStore(pool).grant_subcloud(node_id, "tenant-a-pool")
    await granted_testnet(pool, message)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{granting.port}") as channel:
        assert await handshake(channel, node_id, key, hello_message=message, stay=True) == "welcome"
        session = await eventually(
            lambda: granting.registry.get(node_id), within=5, what="the granted node's session"
        )
        assert session.routes == frozenset({"testnet.scripted.tenant-a-pool"})


async def test_models_outside_the_mesh_make_no_route(
    granting: SchedulerServer, pool: asyncpg.Pool
) -> None:
    message, key = node()
    await granted_testnet(pool, message)
    message.hello.models.append(nodes_pb2.ServedModel(name="not-in-the-mesh", runtime="x"))
    node_id = message.hello.node_id
    async with grpc.aio.insecure_channel(f"127.0.0.1:{granting.port}") as channel:
        assert await handshake(channel, node_id, key, hello_message=message, stay=True) == "welcome"
        session = await eventually(
            lambda: granting.registry.get(node_id), within=5, what="the node's session"
        )
        assert session.routes == frozenset({"testnet.scripted"})
    only_foreign, key = node()
    del only_foreign.hello.models[:]
    only_foreign.hello.models.append(nodes_pb2.ServedModel(name="not-in-the-mesh", runtime="x"))
    outcome = await login(granting, only_foreign, key)
    assert outcome.startswith("PERMISSION_DENIED NO_MESH_MODEL"), outcome


async def test_one_connection_opens_only_a_few_streams_on_the_node_port(
    granting: SchedulerServer, settings: Settings, pool: asyncpg.Pool
) -> None:
    """Streams beyond FLEETWIRE_SCHEDULER_MAX_STREAMS_PER_CONNECTION wait: a fifth one gets
    no Challenge while four are open, and a node on a connection of its own is served."""
    limit = settings.scheduler.max_streams_per_connection
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{granting.port}", options=own_connection
    ) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        held = []
        for _ in range(limit):
            call = stub.NodeStream()
            message, _key = node()
            await call.write(message)
            assert (await call.read()).WhichOneof("message") == "challenge"
            held.append(call)
        extra = stub.NodeStream(timeout=2)
        message, _key = node()

        async def fifth() -> None:
            await extra.write(message)
            await extra.read()

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await fifth()
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        message, key = node()
        await granted_testnet(pool, message)
        assert await login(granting, message, key) == "welcome", "another connection is served"
        for call in held:
            call.cancel()


async def test_a_claimed_network_counts_only_when_granted(
    granting: SchedulerServer, pool: asyncpg.Pool
) -> None:
    """A node claiming mainnet and testnet serves only what it was granted; none: refused."""
    message, key = node()
    message.hello.networks.append(job_pb2.NETWORK_MAINNET)  # testnet already claimed
    node_id = message.hello.node_id
    store = NodeStore(pool)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{granting.port}") as channel:
        outcome = await handshake(channel, node_id, key, hello_message=message)
    assert outcome.startswith("PERMISSION_DENIED NETWORK_NOT_GRANTED"), outcome
    assert await store.grant_network(node_id, "testnet")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{granting.port}") as channel:
        assert await handshake(channel, node_id, key, hello_message=message, stay=True) == "welcome"
        session = await eventually(
            lambda: granting.registry.get(node_id), within=5, what="the node's session"
        )
        assert session.routes == frozenset({"testnet.scripted"}), "no mainnet route"
