"""Tenants and API keys: keys are checked, tenants see only their own jobs, and a revoked
key stops working within the cache TTL on every replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest

from broker_bridge.server import BridgeServer
from fleetwire.process.settings import Settings
from fleetwire.store.db import open_pool
from fleetwire.store.tenants import TenantStore, hash_key, key_id_of
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.integration.bridge_kit import (
    bearer,
    reason_of,
    running_bridge,
    spec,
    stub_of,
    with_bridge,
)
from tests.support.eventually import eventually

CACHE_TTL = timedelta(milliseconds=500)


@pytest.fixture(scope="module")
async def tenants(settings: Settings) -> AsyncIterator[TenantStore]:
    pool = await open_pool(settings.postgres)
    yield TenantStore(pool)
    await pool.close()


@pytest.fixture(scope="module")
async def strict_bridges(settings: Settings) -> AsyncIterator[list[BridgeServer]]:
    """Two replicas that require API keys."""
    strict = with_bridge(settings, require_api_key=True, auth_cache_ttl=CACHE_TTL)
    async with running_bridge(strict) as one, running_bridge(strict) as two:
        yield [one, two]


async def test_key_is_stored_hashed_and_shown_once(
    tenants: TenantStore, settings: Settings
) -> None:
    issued = await tenants.create_key("acme", name="ci")
    assert key_id_of(issued.secret) == issued.key_id
    pool = await open_pool(settings.postgres, migrate=False)
    try:
        row = await pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", issued.key_id)
    finally:
        await pool.close()
    assert row is not None
    assert bytes(row["secret_hash"]) == hash_key(issued.secret)
    assert issued.secret.encode() not in bytes(row["secret_hash"])
    assert issued.secret not in str(dict(row))
    listed = await tenants.list_keys("acme")
    assert issued.key_id in [k.key_id for k in listed]


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "API_KEY_MISSING"),
        ((("authorization", "Basic abc"),), "API_KEY_INVALID"),
        ((("authorization", "Bearer "),), "API_KEY_INVALID"),
        (bearer("fwk_000000000000_" + "x" * 43), "API_KEY_INVALID"),
        (bearer("not-a-key"), "API_KEY_INVALID"),
    ],
)
async def test_missing_or_bad_key_is_unauthenticated(
    strict_bridges: list[BridgeServer], metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    async with stub_of(strict_bridges[0]) as jobs:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(caught.value) == reason


async def test_other_tenants_job_is_not_found(
    strict_bridges: list[BridgeServer], tenants: TenantStore
) -> None:
    alice = (await tenants.create_key("alice")).secret
    bob = (await tenants.create_key("bob")).secret
    async with stub_of(strict_bridges[0]) as jobs:
        job = (
            await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()), metadata=bearer(alice))
        ).job
        mine = await jobs.Status(
            job_service_pb2.StatusRequest(job_id=job.job_id), metadata=bearer(alice)
        )
        assert mine.job.state == job_pb2.JOB_STATE_QUEUED
        for call in (
            jobs.Status(job_service_pb2.StatusRequest(job_id=job.job_id), metadata=bearer(bob)),
            jobs.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id), metadata=bearer(bob)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in jobs.Watch(
                job_service_pb2.WatchRequest(job_id=job.job_id), metadata=bearer(bob)
            ):
                pass
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        # the job is untouched by bob's cancel
        await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id), metadata=bearer(alice))


async def test_revoked_key_stops_on_every_replica_within_the_cache_ttl(
    strict_bridges: list[BridgeServer], tenants: TenantStore
) -> None:
    issued = await tenants.create_key("revokee")
    stubs = []
    async with stub_of(strict_bridges[0]) as one, stub_of(strict_bridges[1]) as two:
        stubs = [one, two]
        for jobs in stubs:  # both replicas cache the key as valid
            job = (
                await jobs.Submit(
                    job_service_pb2.SubmitRequest(job=spec()), metadata=bearer(issued.secret)
                )
            ).job
            await jobs.Cancel(
                job_service_pb2.CancelRequest(job_id=job.job_id), metadata=bearer(issued.secret)
            )
        assert await tenants.revoke_key(issued.key_id)
        revoked_at = time.monotonic()
        pending = set(range(len(stubs)))
        took: list[float] = []

        async def every_replica_refuses() -> bool:
            for i in sorted(pending):
                try:
                    await stubs[i].Status(
                        job_service_pb2.StatusRequest(job_id=job.job_id),
                        metadata=bearer(issued.secret),
                    )
                except grpc.aio.AioRpcError as err:
                    if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                        pending.discard(i)
                        took.append(time.monotonic() - revoked_at)
            return not pending

        await eventually(
            every_replica_refuses, within=5, what="every replica to refuse the revoked key"
        )
    assert not pending, "a replica still accepts the revoked key"
    assert max(took) <= CACHE_TTL.total_seconds() + 0.5


async def test_local_bridge_runs_keyless_calls_as_anonymous_but_checks_sent_keys(
    jobs: job_service_pb2_grpc.JobServiceStub, settings: Settings
) -> None:
    assert settings.bridge.require_api_key is False
    job = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job
    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()), metadata=bearer("nope"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_anonymous_cannot_see_a_tenants_job(
    strict_bridges: list[BridgeServer],
    tenants: TenantStore,
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    key = (await tenants.create_key("carol")).secret
    async with stub_of(strict_bridges[0]) as strict:
        job = (
            await strict.Submit(job_service_pb2.SubmitRequest(job=spec()), metadata=bearer(key))
        ).job
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await jobs.Status(job_service_pb2.StatusRequest(job_id=job.job_id))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        await strict.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id), metadata=bearer(key))


async def test_cli_creates_lists_and_revokes_keys(
    strict_bridges: list[BridgeServer],
    mesh_env: dict[str, str],
    scheduler: SchedulerServer,
    operator_key: str,
) -> None:
    """`fleetwire admin keys …` over the scheduler's admin port, with an operator key."""
    import json
    import os
    import sys

    async def cli(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleetwire_tools.cli",
            "admin",
            "keys",
            *args,
            "--address",
            f"127.0.0.1:{scheduler.admin_port}",
            env={
                **os.environ,
                **mesh_env,
                "FLEETWIRE_ADMIN_KEY": operator_key,
                "FLEETWIRE_POSTGRES_DSN": "postgresql://nobody@127.0.0.1:1/none",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return out.decode()

    created = json.loads(await cli("create", "--tenant", "cli-tenant", "--json"))
    key = created["key"]
    assert created["key_id"] in await cli("list", "--tenant", "cli-tenant")
    assert key not in await cli("list", "--json"), "the key is shown only once"
    async with stub_of(strict_bridges[0]) as jobs:
        job = (
            await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()), metadata=bearer(key))
        ).job
        await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id), metadata=bearer(key))
        await cli("revoke", created["key_id"])
        # Time itself is tested: the revoked key is refused once the cache's TTL ran out.
        await asyncio.sleep(CACHE_TTL.total_seconds() + 0.1)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await jobs.Status(
                job_service_pb2.StatusRequest(job_id=job.job_id), metadata=bearer(key)
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
