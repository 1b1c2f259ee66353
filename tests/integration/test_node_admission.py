"""Node admission on a real scheduler and PostgreSQL: nothing is written for a node before it
proves its key; an unknown node waits as a request until an operator approves it; an
approved id is never taken by another key; a revoked key ends a live session within
seconds and a revoked node's results are not finalised."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from nacl.signing import SigningKey

from broker_bridge.desk import new_job
from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.protocol.signing import key_id
from fleetwire.store.attempts import AttemptStore, SignedOutcome
from fleetwire.store.jobs import JobStore
from fleetwire.store.ledger import Bill
from fleetwire.store.nodes import NodeStore, Registration
from fleetwire.v1 import job_pb2, mesh_admin_service_pb2, mesh_admin_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.handshake import handshake
from tests.support.mesh_admin import SendsOperatorKey
from tests.support.scripted_node import ScriptedNode, running


def admitting(settings: Settings, **scheduler: Any) -> Settings:
    """A scheduler of this run's mesh that admits nodes only by approval."""
    group = settings.scheduler.model_copy(
        update={
            "port": 0,
            "admin_port": 0,
            "auto_register_nodes": False,
            "scheduler_id": f"admission-{uuid.uuid4().hex[:6]}",
            **scheduler,
        }
    )
    return settings.model_copy(update={"scheduler": group})


@pytest.fixture
async def strict(settings: Settings) -> AsyncIterator[SchedulerServer]:
    server = SchedulerServer(admitting(settings))
    await server.start()
    yield server
    await server.stop(grace=1)


async def rows_for(pool: asyncpg.Pool, node_id: str) -> tuple[int, int]:
    """(registrations, admission requests) stored for ``node_id``."""
    registered = await pool.fetchval("SELECT count(*) FROM nodes WHERE node_id = $1", node_id)
    requested = await pool.fetchval(
        "SELECT count(*) FROM node_requests WHERE node_id = $1", node_id
    )
    return int(registered), int(requested)


async def try_login(server: SchedulerServer, node_id: str, key: SigningKey, **kw: Any) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return await handshake(channel, node_id, key, **kw)


async def test_an_unproven_hello_writes_nothing(
    strict: SchedulerServer, pool: asyncpg.Pool
) -> None:
    """A Hello for any id, answered with a signature of another key, is refused and leaves
    no row: squatting an id takes its key."""
    node_id = f"squat-{uuid.uuid4().hex[:8]}"
    outcome = await try_login(strict, node_id, SigningKey.generate(), signer=SigningKey.generate())
    assert outcome.startswith("UNAUTHENTICATED"), outcome
    assert await rows_for(pool, node_id) == (0, 0)


async def test_an_unknown_node_waits_until_approved(
    strict: SchedulerServer, pool: asyncpg.Pool
) -> None:
    node_id = f"newcomer-{uuid.uuid4().hex[:8]}"
    key = SigningKey.generate()
    for _ in range(2):  # asking again refreshes the one request
        outcome = await try_login(strict, node_id, key)
        assert outcome.startswith("PERMISSION_DENIED NODE_PENDING"), outcome
    assert await rows_for(pool, node_id) == (0, 1)
    assert strict.registry.get(node_id) is None, "a pending node has no session: no work"

    kid = key_id(bytes(key.verify_key))
    assert await NodeStore(pool).approve(node_id, kid) is Registration.CREATED
    assert await rows_for(pool, node_id) == (1, 0)
    assert await try_login(strict, node_id, key) == "welcome"


async def test_an_approved_id_is_never_taken_by_another_key(
    strict: SchedulerServer, pool: asyncpg.Pool
) -> None:
    node_id = f"owned-{uuid.uuid4().hex[:8]}"
    owner, stranger = SigningKey.generate(), SigningKey.generate()
    store = NodeStore(pool)
    # Both ask before any approval: the stranger's request does not push out the owner's.
    for key in (owner, stranger):
        assert "NODE_PENDING" in await try_login(strict, node_id, key)
    assert await rows_for(pool, node_id) == (0, 2)
    assert await store.approve(node_id, key_id(bytes(owner.verify_key))) is Registration.CREATED

    outcome = await try_login(strict, node_id, stranger)
    assert outcome.startswith("PERMISSION_DENIED KEY_MISMATCH"), outcome
    assert await rows_for(pool, node_id) == (1, 0), "no request for an id that has a key"
    assert await store.approve(node_id, key_id(bytes(stranger.verify_key))) is None
    assert await try_login(strict, node_id, owner) == "welcome"


async def test_admission_requests_are_bounded(settings: Settings, pool: asyncpg.Pool) -> None:
    waiting = int(await pool.fetchval("SELECT count(*) FROM node_requests"))
    server = SchedulerServer(admitting(settings, max_pending_nodes=waiting + 1))
    await server.start()
    try:
        first, second = f"bound-a-{uuid.uuid4().hex[:6]}", f"bound-b-{uuid.uuid4().hex[:6]}"
        assert "NODE_PENDING" in await try_login(server, first, SigningKey.generate())
        outcome = await try_login(server, second, SigningKey.generate())
        assert outcome.startswith("PERMISSION_DENIED ADMISSION_FULL"), outcome
        assert await rows_for(pool, second) == (0, 0)
    finally:
        await server.stop(grace=1)
        await pool.execute("DELETE FROM node_requests WHERE node_id LIKE 'bound-%'")


async def test_revoking_a_key_ends_the_live_session_within_seconds(
    scheduler: SchedulerServer, pool: asyncpg.Pool, settings: Settings
) -> None:
    node_id = f"revoked-{uuid.uuid4().hex[:8]}"
    node = ScriptedNode(f"127.0.0.1:{scheduler.port}", node_id, "scripted", lambda _n: "ok")
    async with running(node):
        assert scheduler.registry.get(node_id) is not None
        assert await NodeStore(pool).revoke(node_id)
        interval = settings.scheduler.key_check_interval.total_seconds()
        await eventually(
            lambda: scheduler.registry.get(node_id) is None,
            within=interval + 5,
            what="the revoked node's session to end",
        )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.port}") as channel:
        again = await handshake(channel, node_id, node.key)
    assert again.startswith("PERMISSION_DENIED KEY_REVOKED"), again


async def test_a_revoked_nodes_result_is_not_finalised(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    node_id = f"late-{uuid.uuid4().hex[:8]}"
    key = SigningKey.generate()
    nodes, jobs, attempts = NodeStore(pool), JobStore(pool), AttemptStore(pool)
    assert await nodes.register(node_id, bytes(key.verify_key), replace=False) is (
        Registration.CREATED
    )
    spec = job_pb2.JobSpec(
        model="scripted",
        prompt="late",
        network=job_pb2.NETWORK_TESTNET,
        priority=job_pb2.PRIORITY_CLASS_NORMAL,
        sampling=job_pb2.SamplingParams(max_tokens=4),
    )
    spec.ttl.FromSeconds(600)
    row, _ = new_job(
        spec,
        topology=Topology(settings.mesh.namespace),
        tenant_id="anonymous",
        trace_id="t",
        now=datetime.now(UTC),
        publish_lease=timedelta(seconds=5),
    )
    assert await jobs.insert_job(row)
    (opened,) = await attempts.begin_attempts([(row.job_id, node_id)], "admission-test")
    assert opened is not None
    assert await nodes.revoke(node_id)
    outcome = SignedOutcome(
        attempt=opened.number,
        node_id=node_id,
        output="late",
        finish_reason="length",
        prompt_tokens=1,
        completion_tokens=1,
        timings={},
        signature=b"s" * 64,
        public_key=bytes(key.verify_key),
        key_id=key_id(bytes(key.verify_key)),
        finished_at_ms=1,
    )
    assert await attempts.finalise_successes([(row.job_id, outcome, Bill(0))]) == [False]


async def test_an_operator_approves_and_revokes_over_the_admin_port(
    strict: SchedulerServer, pool: asyncpg.Pool, operator_key: str
) -> None:
    """The admission flow over gRPC (no database credentials): ListPendingNodes shows the
    request, ApproveNode admits it (testnet granted), RevokeNode ends it; each audited."""
    node_id = f"rpc-{uuid.uuid4().hex[:8]}"
    key = SigningKey.generate()
    assert "NODE_PENDING" in await try_login(strict, node_id, key)
    kid = key_id(bytes(key.verify_key))
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{strict.admin_port}", interceptors=[SendsOperatorKey(operator_key)]
    ) as channel:
        admin = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
        pending = (
            await admin.ListPendingNodes(mesh_admin_service_pb2.ListPendingNodesRequest())
        ).nodes
        assert (node_id, kid) in [(p.node_id, p.key_id) for p in pending]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.ApproveNode(
                mesh_admin_service_pb2.ApproveNodeRequest(node_id=node_id, key_id="f" * 16)
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        await admin.ApproveNode(
            mesh_admin_service_pb2.ApproveNodeRequest(node_id=node_id, key_id=kid)
        )
        assert await try_login(strict, node_id, key) == "welcome"
        await admin.RevokeNode(mesh_admin_service_pb2.RevokeNodeRequest(node_id=node_id))
    again = await try_login(strict, node_id, key)
    assert again.startswith("PERMISSION_DENIED KEY_REVOKED"), again
    audited = await pool.fetch(
        "SELECT action, actor FROM audit_log WHERE target = $1 ORDER BY entry_id", node_id
    )
    assert [r["action"] for r in audited] == ["node.approve", "node.revoke"]
    assert all(r["actor"].startswith("operator:tests") for r in audited)
    granted = await pool.fetch(
        "SELECT network FROM node_network_grants WHERE node_id = $1", node_id
    )
    assert [r["network"] for r in granted] == ["testnet"]
