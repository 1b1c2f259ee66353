"""Idempotency: a client request id makes Submit safe to retry, also when two bridge
replicas receive the duplicate at the same moment."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg
import grpc
import pytest

from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.integration.bridge_kit import reason_of, running_bridge, spec, stub_of, with_bridge


async def rows_with_request_id(settings: Settings, request_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        return list(
            await conn.fetch(
                "SELECT job_id, tenant_id FROM jobs WHERE client_request_id = $1", request_id
            )
        )
    finally:
        await conn.close()


async def cancel(jobs: job_service_pb2_grpc.JobServiceStub, *job_ids: str) -> None:
    for job_id in set(job_ids):
        await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job_id, reason="test done"))


async def test_same_request_id_returns_the_original_job(
    jobs: job_service_pb2_grpc.JobServiceStub, settings: Settings
) -> None:
    request_id = f"retry-{uuid.uuid4()}"
    first = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec(request_id=request_id)))).job
    await cancel(jobs, first.job_id)  # the original's state moves on...
    again = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec(request_id=request_id)))).job
    assert again.job_id == first.job_id
    assert again.state == job_pb2.JOB_STATE_CANCELLED  # ...and the retry sees it
    assert len(await rows_with_request_id(settings, request_id)) == 1


async def test_same_request_id_with_another_body_is_failed_precondition(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    request_id = f"reuse-{uuid.uuid4()}"
    first = (
        await jobs.Submit(job_service_pb2.SubmitRequest(job=spec("one", request_id=request_id)))
    ).job
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Submit(job_service_pb2.SubmitRequest(job=spec("two", request_id=request_id)))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "IDEMPOTENCY_KEY_REUSED"
    assert first.job_id not in (caught.value.details() or ""), "an error names no other job"
    await cancel(jobs, first.job_id)


async def test_concurrent_duplicates_on_two_replicas_make_exactly_one_job(
    settings: Settings,
) -> None:
    request_id = f"race-{uuid.uuid4()}"
    replica = with_bridge(settings)
    async with (
        running_bridge(replica) as one,
        running_bridge(replica) as two,
        stub_of(one) as a,
        stub_of(two) as b,
    ):
        request = job_service_pb2.SubmitRequest(job=spec("race", request_id=request_id))
        answers = await asyncio.gather(*(stub.Submit(request) for stub in [a, b] * 10))
        ids = {answer.job.job_id for answer in answers}
        assert len(ids) == 1, f"duplicates created {len(ids)} jobs"
        rows = await rows_with_request_id(settings, request_id)
        assert [str(r["job_id"]) for r in rows] == list(ids)
        await cancel(a, *ids)


async def test_request_ids_are_per_tenant(settings: Settings) -> None:
    """The same request id from two tenants is two jobs (the constraint is per tenant)."""
    from fleetwire.store.db import open_pool
    from fleetwire.store.tenants import TenantStore
    from tests.integration.bridge_kit import bearer

    pool = await open_pool(settings.postgres)
    try:
        keys = [(await TenantStore(pool).create_key(t)).secret for t in ("idem-a", "idem-b")]
    finally:
        await pool.close()
    request_id = f"shared-{uuid.uuid4()}"
    async with running_bridge(with_bridge(settings)) as bridge, stub_of(bridge) as stub:
        made = [
            (
                await stub.Submit(
                    job_service_pb2.SubmitRequest(job=spec(request_id=request_id)),
                    metadata=bearer(key),
                )
            ).job.job_id
            for key in keys
        ]
        for key, job_id in zip(keys, made, strict=True):
            await stub.Cancel(job_service_pb2.CancelRequest(job_id=job_id), metadata=bearer(key))
    assert len(set(made)) == 2


async def test_postgresql_constraint_is_the_last_word(settings: Settings) -> None:
    """Even without the Redis lock, a second row with the tenant's request id is refused."""
    from datetime import UTC, datetime, timedelta

    from fleetwire.store.db import open_pool
    from fleetwire.store.jobs import JobStore, NewJob

    request_id = f"pg-{uuid.uuid4()}"
    pool = await open_pool(settings.postgres)
    try:
        store = JobStore(pool)

        def row() -> NewJob:
            return NewJob(
                job_id=uuid.uuid4(),
                spec=b"",
                model="tiny-llama",
                network="mainnet",
                priority="PRIORITY_CLASS_NORMAL",
                route_key="mainnet.tiny-llama",
                request_digest=b"d",
                trace_id="t",
                expires_at=datetime.now(UTC) + timedelta(minutes=1),
                client_request_id=request_id,
            )

        first, second = row(), row()
        assert await store.insert_job(first) is True
        assert await store.insert_job(second) is False
        assert await store.get_job(second.job_id) is None
        # The same in one coalesced statement: rows without the key are written, the one
        # with it is refused, in one commit.
        free = [dataclasses.replace(row(), client_request_id=None) for _ in range(2)]
        third = row()
        assert await store.insert_jobs([free[0], third, free[1]]) == [True, False, True]
        assert await store.get_job(third.job_id) is None
        assert await store.get_job(free[1].job_id) is not None
        await pool.execute(
            "DELETE FROM jobs WHERE job_id = ANY($1::uuid[])",
            [first.job_id, *(job.job_id for job in free)],
        )
    finally:
        await pool.close()
