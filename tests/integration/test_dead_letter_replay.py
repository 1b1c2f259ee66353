"""Dead-letter replay (MeshAdminService.ReplayDeadLetter): a job that exhausted its retry
stages runs again as a new, linked job; the original stays DEAD_LETTERED; once per dead
letter. Scripted node, in-process scheduler and bridge, real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator

import aiormq
import asyncpg
import grpc
import pytest

from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.protocol.facts import verify_job
from fleetwire.store.db import open_pool
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    mesh_admin_service_pb2,
    mesh_admin_service_pb2_grpc,
)
from scheduler.server import SchedulerServer
from tests.integration.bridge_kit import bearer, reason_of
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running

Admin = mesh_admin_service_pb2_grpc.MeshAdminServiceStub
Jobs = job_service_pb2_grpc.JobServiceStub
TERMINAL = {
    job_pb2.JOB_STATE_SUCCEEDED,
    job_pb2.JOB_STATE_FAILED,
    job_pb2.JOB_STATE_DEAD_LETTERED,
    job_pb2.JOB_STATE_EXPIRED,
    job_pb2.JOB_STATE_CANCELLED,
}


@pytest.fixture(scope="module")
async def tenant_key(settings: Settings) -> AsyncIterator[str]:
    """An API key of the tenant ``replayer``: the replacement must belong to it too."""
    pool = await open_pool(settings.postgres)
    try:
        yield (await TenantStore(pool).create_key("replayer")).secret
    finally:
        await pool.close()


async def status(jobs: Jobs, job_id: str, key: str) -> job_pb2.Job:
    request = job_service_pb2.StatusRequest(job_id=job_id)
    return (await jobs.Status(request, metadata=bearer(key))).job


async def wait_state(jobs: Jobs, job_id: str, key: str, states: set[int]) -> job_pb2.Job:
    async def reached() -> job_pb2.Job | None:
        job = await status(jobs, job_id, key)
        return job if job.state in states else None

    # 30 s: the machine may be loaded.
    return await eventually(reached, within=30, what=f"job {job_id} in {states}")


async def submit_and_wait(jobs: Jobs, key: str) -> job_pb2.Job:
    spec = job_pb2.JobSpec(
        model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3)
    )
    request = job_service_pb2.SubmitRequest(job=spec)
    job_id = (await jobs.Submit(request, metadata=bearer(key))).job.job_id
    return await wait_state(jobs, job_id, key, TERMINAL)


async def parked_job_ids(channel: aiormq.abc.AbstractChannel, queue: str) -> list[str]:
    """Message ids in the dead-letters queue, left in place (taken unacked, then requeued)."""
    ids: list[str] = []
    last_tag = None
    while True:
        message = await channel.basic_get(queue, no_ack=False)
        if message.delivery_tag is None:
            break
        ids.append(message.header.properties.message_id or "")
        last_tag = message.delivery_tag
    if last_tag is not None:
        await channel.basic_nack(last_tag, multiple=True, requeue=True)
    return ids


async def park_decoy(channel: aiormq.abc.AbstractChannel, queue: str, message_id: str) -> None:
    """Another dead letter, which a replay must leave where it is."""
    await channel.basic_publish(
        b"",
        routing_key=queue,
        properties=aiormq.spec.Basic.Properties(message_id=message_id, delivery_mode=2),
    )


async def replay(admin: Admin, job_id: str) -> mesh_admin_service_pb2.ReplayDeadLetterResponse:
    request = mesh_admin_service_pb2.ReplayDeadLetterRequest(job_id=job_id)
    return await admin.ReplayDeadLetter(request)


async def refusal(admin: Admin, job_id: str) -> tuple[grpc.StatusCode, str, str]:
    """(code, ErrorInfo reason, message) of a replay that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await replay(admin, job_id)
    return caught.value.code(), reason_of(caught.value), caught.value.details() or ""


async def rows(settings: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_dead_lettered_job_replays_once_as_a_new_linked_job_that_succeeds(
    jobs: Jobs,
    scheduler: SchedulerServer,
    settings: Settings,
    admin: Admin,
    amqp_channel: aiormq.abc.AbstractChannel,
    tenant_key: str,
) -> None:
    stages = len(settings.scheduler.retry_delays)
    failing = {n: "fail-retryable" for n in range(1, stages + 2)}  # every attempt of the first
    node = ScriptedNode(
        f"127.0.0.1:{scheduler.port}", "replay-node", "scripted", lambda n: failing.get(n, "ok")
    )
    dead_letters = Topology(settings.mesh.namespace).dead_letters_queue
    await park_decoy(amqp_channel, dead_letters, "decoy-before")
    async with running(node):
        original = await submit_and_wait(jobs, tenant_key)
        assert original.state == job_pb2.JOB_STATE_DEAD_LETTERED
        assert original.attempts == stages + 1
        await park_decoy(amqp_channel, dead_letters, "decoy-after")
        parked = await parked_job_ids(amqp_channel, dead_letters)
        assert parked[-3:] == ["decoy-before", original.job_id, "decoy-after"]

        # Concurrent replays of one dead letter (two operators, a retried call): one job.
        answers = await asyncio.gather(
            *(replay(admin, original.job_id) for _ in range(3)), return_exceptions=True
        )
        replies = [
            a for a in answers if isinstance(a, mesh_admin_service_pb2.ReplayDeadLetterResponse)
        ]
        refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert len(replies) == 1, answers
        assert [(e.code(), reason_of(e)) for e in refused] == [
            (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_REPLAYED")
        ] * 2
        (reply,) = replies
        new = reply.job
        assert new.job_id != original.job_id
        assert new.replay_of == original.job_id
        assert new.state == job_pb2.JOB_STATE_QUEUED
        assert new.spec == original.spec
        assert new.expires_at.ToDatetime() > original.expires_at.ToDatetime(), "a fresh TTL"
        assert reply.parked_message_removed
        # Only its message left the queue; the others are still there, in order.
        assert await parked_job_ids(amqp_channel, dead_letters) == [
            p for p in parked if p != original.job_id
        ]

        done = await wait_state(jobs, new.job_id, tenant_key, {job_pb2.JOB_STATE_SUCCEEDED})

    assert verify_job(done, bytes(node.key.verify_key))
    assert done.signature.node_id == "replay-node"
    assert done.attempts == 1
    assert done.replay_of == original.job_id
    assert [d.job_id for d in node.dispatches][-1] == new.job_id

    # The original is untouched and terminal, and its trail names the replacement.
    trail = await admin.JobTrail(mesh_admin_service_pb2.JobTrailRequest(job_id=original.job_id))
    assert trail.job.state == job_pb2.JOB_STATE_DEAD_LETTERED
    assert trail.job.attempts == original.attempts
    assert trail.job.error == original.error
    assert trail.replayed_as == new.job_id
    assert len(trail.attempts) == stages + 1
    replacement_trail = await admin.JobTrail(
        mesh_admin_service_pb2.JobTrailRequest(job_id=new.job_id)
    )
    assert replacement_trail.job.replay_of == original.job_id
    assert replacement_trail.replayed_as == ""

    tenants = await rows(
        settings,
        "SELECT tenant_id FROM jobs WHERE job_id = ANY($1::uuid[])",
        [uuid.UUID(original.job_id), uuid.UUID(new.job_id)],
    )
    assert [r["tenant_id"] for r in tenants] == ["replayer", "replayer"], "same tenant"
    billed = await rows(
        settings,
        "SELECT job_id, kind, account FROM ledger_entries WHERE job_id = ANY($1::uuid[])"
        " ORDER BY kind",
        [uuid.UUID(original.job_id), uuid.UUID(new.job_id)],
    )
    assert [(str(r["job_id"]), r["kind"], r["account"]) for r in billed] == [
        (new.job_id, "JOB_CHARGE", "tenant:replayer"),
        (new.job_id, "NODE_EARNING", "owner:replay-node"),
    ], "the replacement is billed once (to the tenant), the dead letter never"

    # Later replays are refused, naming the replacement; nothing new is made.
    code, reason, message = await refusal(admin, original.job_id)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_REPLAYED")
    assert new.job_id in message
    replays = await rows(
        settings, "SELECT job_id FROM jobs WHERE replay_of = $1", uuid.UUID(original.job_id)
    )
    assert [str(r["job_id"]) for r in replays] == [new.job_id]


async def test_only_dead_lettered_jobs_replay(
    jobs: Jobs, scheduler: SchedulerServer, admin: Admin, tenant_key: str
) -> None:
    node = ScriptedNode(f"127.0.0.1:{scheduler.port}", "replay-ok", "scripted", lambda _n: "ok")
    async with running(node):
        succeeded = await submit_and_wait(jobs, tenant_key)
    assert succeeded.state == job_pb2.JOB_STATE_SUCCEEDED
    code, reason, _ = await refusal(admin, succeeded.job_id)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_DEAD_LETTERED")
    after = await status(jobs, succeeded.job_id, tenant_key)
    assert after == succeeded, "a refused replay changes nothing"

    code, reason, _ = await refusal(admin, str(uuid.uuid4()))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    code, _, _ = await refusal(admin, "not-a-job-id")
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def fleetwire_cli(*args: str, operator_key: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetwire_tools.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "FLEETWIRE_ADMIN_KEY": operator_key},
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_cli_replays_a_dead_letter_once(
    jobs: Jobs, scheduler: SchedulerServer, settings: Settings, tenant_key: str, operator_key: str
) -> None:
    stages = len(settings.scheduler.retry_delays)
    failing = {n: "fail-retryable" for n in range(1, stages + 2)}
    node = ScriptedNode(
        f"127.0.0.1:{scheduler.port}", "cli-replay", "scripted", lambda n: failing.get(n, "ok")
    )
    address = ("--address", f"127.0.0.1:{scheduler.admin_port}")
    async with running(node):
        original = await submit_and_wait(jobs, tenant_key)
        assert original.state == job_pb2.JOB_STATE_DEAD_LETTERED
        code, out = await fleetwire_cli(
            "admin",
            "mesh",
            "replay",
            original.job_id,
            "--json",
            *address,
            operator_key=operator_key,
        )
        assert code == 0, out
        new = json.loads(out)["job"]
        assert new["replay_of"] == original.job_id
        await wait_state(jobs, new["job_id"], tenant_key, {job_pb2.JOB_STATE_SUCCEEDED})
    code, out = await fleetwire_cli(
        "admin", "mesh", "replay", original.job_id, *address, operator_key=operator_key
    )
    assert code == 1
    assert "FAILED_PRECONDITION" in out
    assert new["job_id"] in out
    code, out = await fleetwire_cli(
        "admin", "mesh", "trail", original.job_id, *address, operator_key=operator_key
    )
    assert code == 0, out
    assert f"replayed as {new['job_id']}" in out
    # The replay, an admin action, is in the audit log with the operator who did it.
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        audited = await conn.fetch(
            "SELECT actor, detail FROM audit_log WHERE action = 'ReplayDeadLetter' AND target = $1",
            original.job_id,
        )
    finally:
        await conn.close()
    assert len(audited) == 1, audited
    assert audited[0]["actor"].startswith("operator:tests")
    assert new["job_id"] in audited[0]["detail"]
