"""A tenant's policy at admission, on a real bridge and PostgreSQL: a priority class,
network or subcloud it was not allowed is PERMISSION_DENIED, and a mainnet job without
credit is FAILED_PRECONDITION — each before anything is written."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import grpc
import pytest

from fleetwire.process.settings import BridgeSettings, Settings
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.integration.bridge_kit import (
    bearer,
    reason_of,
    running_bridge,
    spec,
    stub_of,
    with_bridge,
)
from tests.support.eventually import eventually


@pytest.fixture
async def jobs(settings: Settings) -> AsyncIterator[job_service_pb2_grpc.JobServiceStub]:
    """A bridge that requires keys and reads policies afresh on every call."""
    strict = with_bridge(settings, require_api_key=True, auth_cache_ttl=timedelta(0))
    async with running_bridge(strict) as bridge, stub_of(bridge) as stub:
        yield stub


async def tenant_with(pool: asyncpg.Pool, **policy: object) -> tuple[str, str]:
    store = TenantStore(pool)
    tenant = f"policy-{uuid.uuid4().hex[:8]}"
    key = (await store.create_key(tenant)).secret
    await store.set_policy(
        tenant,
        priorities=policy.get("priorities"),  # type: ignore[arg-type]
        networks=policy.get("networks"),  # type: ignore[arg-type]
        subclouds=policy.get("subclouds"),  # type: ignore[arg-type]
        credit_limit=policy.get("credit_limit"),  # type: ignore[arg-type]
    )
    return tenant, key


async def submit(
    jobs: job_service_pb2_grpc.JobServiceStub, key: str, job: job_pb2.JobSpec
) -> tuple[grpc.StatusCode, str]:
    try:
        answer = await jobs.Submit(job_service_pb2.SubmitRequest(job=job), metadata=bearer(key))
    except grpc.aio.AioRpcError as err:
        return err.code(), reason_of(err)
    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=answer.job.job_id), metadata=bearer(key))
    return grpc.StatusCode.OK, ""


async def rows_of(pool: asyncpg.Pool, tenant: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM jobs WHERE tenant_id = $1", tenant))


async def test_a_tenant_without_urgent_gets_permission_denied(
    jobs: job_service_pb2_grpc.JobServiceStub, pool: asyncpg.Pool
) -> None:
    tenant, key = await tenant_with(pool, priorities=["normal", "bulk"])
    urgent = spec(priority=job_pb2.PRIORITY_CLASS_URGENT)
    assert await submit(jobs, key, urgent) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PRIORITY_NOT_ALLOWED",
    )
    assert await rows_of(pool, tenant) == 0
    assert await submit(jobs, key, spec()) == (grpc.StatusCode.OK, "")


async def test_networks_and_subclouds_follow_the_policy(
    jobs: job_service_pb2_grpc.JobServiceStub, pool: asyncpg.Pool
) -> None:
    _, key = await tenant_with(pool, networks=["testnet"], subclouds=["own-pool"])
    mainnet = spec()
    mainnet.network = job_pb2.NETWORK_MAINNET
    assert await submit(jobs, key, mainnet) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "NETWORK_NOT_ALLOWED",
    )
    foreign = spec()
    foreign.network = job_pb2.NETWORK_TESTNET
    foreign.constraints.subcloud = "someone-elses"
    assert await submit(jobs, key, foreign) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SUBCLOUD_NOT_ALLOWED",
    )
    foreign.constraints.subcloud = "own-pool"
    assert await submit(jobs, key, foreign) == (grpc.StatusCode.OK, "")


async def test_a_mainnet_job_without_credit_is_failed_precondition(
    jobs: job_service_pb2_grpc.JobServiceStub, pool: asyncpg.Pool
) -> None:
    tenant, key = await tenant_with(pool, credit_limit=0)
    mainnet = spec()
    mainnet.network = job_pb2.NETWORK_MAINNET
    assert await submit(jobs, key, mainnet) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_CREDIT",
    )
    assert await rows_of(pool, tenant) == 0
    testnet = spec()
    testnet.network = job_pb2.NETWORK_TESTNET
    assert await submit(jobs, key, testnet) == (grpc.StatusCode.OK, ""), "testnet is free"
    await TenantStore(pool).set_policy(
        tenant, priorities=None, networks=None, subclouds=None, credit_limit=1_000_000
    )
    assert await submit(jobs, key, mainnet) == (grpc.StatusCode.OK, "")


PRODUCTION_DEFAULTS = {
    name: BridgeSettings.model_fields[name].get_default(call_default_factory=True)
    for name in (
        "default_priorities",
        "default_networks",
        "default_subclouds",
        "default_credit_limit",
    )
}


async def test_a_tenant_without_a_policy_gets_the_restrictive_defaults(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """The bridge's own defaults (the test mesh opens them, as the dev profile does): no
    urgent class, no subcloud, no mainnet debt; normal testnet work is allowed."""
    production = with_bridge(
        settings, require_api_key=True, auth_cache_ttl=timedelta(0), **PRODUCTION_DEFAULTS
    )
    _, key = await tenant_with(pool)
    testnet, mainnet, pooled = spec(), spec(), spec()
    testnet.network = pooled.network = job_pb2.NETWORK_TESTNET
    mainnet.network = job_pb2.NETWORK_MAINNET
    pooled.constraints.subcloud = "some-pool"
    async with running_bridge(production) as bridge, stub_of(bridge) as stub:
        urgent = spec(priority=job_pb2.PRIORITY_CLASS_URGENT)
        urgent.network = job_pb2.NETWORK_TESTNET
        assert await submit(stub, key, urgent) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PRIORITY_NOT_ALLOWED",
        )
        assert await submit(stub, key, pooled) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "SUBCLOUD_NOT_ALLOWED",
        )
        assert await submit(stub, key, mainnet) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "INSUFFICIENT_CREDIT",
        )
        assert await submit(stub, key, testnet) == (grpc.StatusCode.OK, "")


async def test_a_batch_is_refused_whole_when_one_member_is_not_allowed(
    jobs: job_service_pb2_grpc.JobServiceStub, pool: asyncpg.Pool
) -> None:
    tenant, key = await tenant_with(pool, priorities=["normal"])
    members = [spec(), spec(priority=job_pb2.PRIORITY_CLASS_URGENT)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.SubmitBatch(
            job_service_pb2.SubmitBatchRequest(jobs=members), metadata=bearer(key)
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(caught.value) == "PRIORITY_NOT_ALLOWED"
    assert await rows_of(pool, tenant) == 0


async def test_watch_streams_per_tenant_are_bounded(settings: Settings, pool: asyncpg.Pool) -> None:
    """The third Watch of a tenant allowed two is RESOURCE_EXHAUSTED with a retry delay;
    another tenant still watches, and a closed stream frees its slot."""
    limited = with_bridge(settings, require_api_key=True, max_watches_per_tenant=2)
    _, key = await tenant_with(pool)
    _, other = await tenant_with(pool)
    async with running_bridge(limited) as bridge, stub_of(bridge) as stub:
        job = (
            await stub.Submit(job_service_pb2.SubmitRequest(job=spec()), metadata=bearer(key))
        ).job

        theirs = (
            await stub.Submit(job_service_pb2.SubmitRequest(job=spec()), metadata=bearer(other))
        ).job

        def watch(with_key: str) -> grpc.aio.UnaryStreamCall:
            job_id = job.job_id if with_key == key else theirs.job_id
            return stub.Watch(
                job_service_pb2.WatchRequest(job_id=job_id), metadata=bearer(with_key)
            )

        held = [watch(key), watch(key)]
        for call in held:
            await call.read()  # open: the job's current state came
        third = watch(key)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await third.read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(caught.value) == "TOO_MANY_WATCHES"
        others = watch(other)
        await others.read()
        held[0].cancel()

        async def slot_freed() -> bool:
            again = watch(key)
            try:
                await again.read()
            except grpc.aio.AioRpcError:
                return False
            finally:
                again.cancel()
            return True

        await eventually(slot_freed, within=5, what="the closed Watch's slot to be free")
        for call in (held[1], others):
            call.cancel()
        await stub.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id), metadata=bearer(key))
        await stub.Cancel(
            job_service_pb2.CancelRequest(job_id=theirs.job_id), metadata=bearer(other)
        )
