"""A trusted lookup of node keys (JobService.ListNodeKeys, issue 16): every key the mesh
registered for a node with when it was valid, kept by a trigger whichever path changes a
key, and the SDK verifying results with it rather than with the key a job names; keys the
mesh would not accept (small order) are refused where they are registered. Real bridge,
scheduler and PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg
import grpc
import pytest
from nacl.signing import SigningKey

from broker_bridge.server import BridgeServer
from fleetwire.protocol.signing import key_id
from fleetwire.store.nodes import NodeStore
from fleetwire.v1 import job_pb2, job_service_pb2
from fleetwire.v1 import mesh_admin_service_pb2 as admin_pb2
from fleetwire.v1.mesh_admin_service_pb2_grpc import MeshAdminServiceStub
from fleetwire_client import (
    AsyncClient,
    InvalidArgument,
    JobRequest,
    NotFound,
    verify_job_with_keys,
)
from scheduler.server import SchedulerServer
from tests.support.handshake import handshake, hello
from tests.support.scripted_node import ScriptedNode, running

IDENTITY_POINT = bytes([1] + [0] * 31)  # small order: one signature for many messages


def public(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


async def test_a_nodes_keys_follow_registration_rotation_and_revocation(
    bridge: BridgeServer, pool: asyncpg.Pool
) -> None:
    node_id = f"keys-{uuid.uuid4().hex[:8]}"
    first, second = SigningKey.generate(), SigningKey.generate()
    store = NodeStore(pool)
    async with AsyncClient(f"127.0.0.1:{bridge.port}", insecure=True) as client:
        await store.register(node_id, public(first), replace=False)
        (only,) = await client.node_keys(node_id)
        assert bytes(only.public_key) == public(first)
        assert not only.HasField("valid_until")
        assert not only.HasField("revoked_at")

        await store.register(node_id, public(second), replace=True)  # a rotation
        await store.revoke(node_id)
        newest, older = await client.node_keys(node_id)
        assert bytes(newest.public_key) == public(second)
        assert newest.HasField("revoked_at")
        assert not newest.HasField("valid_until")
        assert bytes(older.public_key) == public(first)
        assert older.HasField("valid_until"), "replaced by the rotation"
        assert not older.HasField("revoked_at")

        with pytest.raises(NotFound):
            await client.node_keys(f"never-{uuid.uuid4().hex[:8]}")
        with pytest.raises(InvalidArgument):
            await client.node_keys("Not A Node")


async def test_the_sdk_verifies_a_result_with_the_meshs_key_for_its_node(
    bridge: BridgeServer, scheduler: SchedulerServer, pool: asyncpg.Pool
) -> None:
    """A result verifies with the key the mesh registered; the same job naming a key of its
    own (a forger's) does not; a revocation after the signing leaves it good, one before
    would not."""
    node = ScriptedNode(
        f"127.0.0.1:{scheduler.port}", f"signer-{uuid.uuid4().hex[:6]}", "scripted", lambda _n: "ok"
    )
    async with AsyncClient(f"127.0.0.1:{bridge.port}", insecure=True) as client:
        async with running(node):  # registered on first use (the test mesh trusts it)
            request = JobRequest(model="scripted", prompt="p", max_tokens=3)
            job = await client.wait((await client.submit(request)).job_id, timeout=30)
        assert job.succeeded
        assert await client.verify(job)

        forger = SigningKey.generate()
        forged = job_pb2.Job()
        forged.CopyFrom(job.message)
        forged.signature.public_key = public(forger)
        forged.signature.key_id = key_id(public(forger))
        assert not await client.verify(dataclasses.replace(job, message=forged))

        await NodeStore(pool).revoke(node.node_id)
        fresh = AsyncClient(f"127.0.0.1:{bridge.port}", insecure=True)  # no cached keys
        try:
            assert await fresh.verify(job), "signed before the revocation"
            (key,) = await fresh.node_keys(node.node_id)
        finally:
            await fresh.close()
    # Had the key been revoked before the node signed, the result would not count.
    early = job_service_pb2.NodeKey()
    early.CopyFrom(key)
    early.revoked_at.FromMilliseconds(job.message.signature.finished_at_unix_ms - 1)
    assert verify_job_with_keys(job.message, [key])
    assert not verify_job_with_keys(job.message, [early])


async def test_a_small_order_key_is_refused_where_keys_are_registered(
    scheduler: SchedulerServer, admin: MeshAdminServiceStub
) -> None:
    weak = hello(f"weak-{uuid.uuid4().hex[:6]}", SigningKey.generate())
    weak.hello.public_key = IDENTITY_POINT
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.port}") as channel:
        refusal = await handshake(
            channel, weak.hello.node_id, SigningKey.generate(), hello_message=weak
        )
    assert refusal.startswith("UNAUTHENTICATED WEAK_KEY"), refusal
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.RegisterNode(
            admin_pb2.RegisterNodeRequest(node_id="weak-admin", public_key=IDENTITY_POINT)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "public_key" in (caught.value.details() or "")
