"""Admission control: a tenant's token bucket (shared by replicas through Redis) and the
per-class queue-depth guard answer RESOURCE_EXHAUSTED with RetryInfo and QuotaFailure; a
tenant flooding the bulk class does not keep another tenant's normal jobs out or behind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import aiormq
import grpc
import pytest
from google.rpc import error_details_pb2

from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.store.db import open_pool
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import job_pb2, job_service_pb2
from tests.integration.bridge_kit import (
    bearer,
    details,
    reason_of,
    running_bridge,
    spec,
    stub_of,
    with_bridge,
)
from tests.support.eventually import eventually

BULK, NORMAL, URGENT = (
    job_pb2.PRIORITY_CLASS_BULK,
    job_pb2.PRIORITY_CLASS_NORMAL,
    job_pb2.PRIORITY_CLASS_URGENT,
)


@pytest.fixture
async def tenants(settings: Settings) -> AsyncIterator[TenantStore]:
    pool = await open_pool(settings.postgres)
    yield TenantStore(pool)
    await pool.close()


@pytest.fixture
async def private_model(
    settings: Settings, amqp_channel: aiormq.abc.AbstractChannel
) -> AsyncIterator[str]:
    """A model name (so a route queue) of this test alone; the queue is deleted after."""
    model = f"adm-{uuid.uuid4().hex[:8]}"
    yield model
    topology = Topology(settings.mesh.namespace)
    await amqp_channel.queue_delete(topology.route_queue(topology.route_key("mainnet", model)))


def with_models(settings: Settings, *models: str) -> Settings:
    mesh = settings.mesh.model_copy(update={"models": [*settings.mesh.models, *models]})
    return settings.model_copy(update={"mesh": mesh})


async def test_tenant_rate_is_shared_by_replicas_and_answers_retry_info(
    settings: Settings, tenants: TenantStore
) -> None:
    tenant = f"rate-{uuid.uuid4().hex[:8]}"
    key = (await tenants.create_key(tenant)).secret
    await tenants.set_limits(tenant, rate_per_second=0.5, burst=3)
    replica = with_bridge(settings)
    async with (
        running_bridge(replica) as one,
        running_bridge(replica) as two,
        stub_of(one) as a,
        stub_of(two) as b,
    ):
        accepted = []
        for stub in (a, b, a):  # three tokens across two replicas
            job = (
                await stub.Submit(job_service_pb2.SubmitRequest(job=spec()), metadata=bearer(key))
            ).job
            accepted.append(job.job_id)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await b.Submit(job_service_pb2.SubmitRequest(job=spec()), metadata=bearer(key))
        for job_id in accepted:
            await a.Cancel(job_service_pb2.CancelRequest(job_id=job_id), metadata=bearer(key))
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(error) == "TENANT_RATE_LIMITED"
    found = details(error)
    retry = found["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    delay = retry.retry_delay.ToTimedelta()
    assert timedelta(0) < delay <= timedelta(seconds=2)  # one token at 0.5/s
    quota = found["QuotaFailure"]
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == f"tenant:{tenant}"


async def test_queue_depth_guard_refuses_low_classes_first(
    settings: Settings, private_model: str
) -> None:
    guarded = with_bridge(
        with_models(settings, private_model),
        max_queue_depth=2,
        queue_depth_cache=timedelta(0),
        queue_full_retry=timedelta(seconds=3),
    )
    async with running_bridge(guarded) as bridge, stub_of(bridge) as jobs:
        refusals: list[grpc.aio.AioRpcError] = []

        async def submit(priority: int) -> grpc.StatusCode:
            try:
                await jobs.Submit(
                    job_service_pb2.SubmitRequest(job=spec(model=private_model, priority=priority))
                )
            except grpc.aio.AioRpcError as err:
                refusals.append(err)
                return err.code()
            return grpc.StatusCode.OK

        ok, full = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED
        assert [await submit(BULK) for _ in range(3)] == [ok, ok, full]  # bulk up to 2
        assert [await submit(NORMAL) for _ in range(3)] == [ok, ok, full]  # normal up to 4
        assert [await submit(URGENT) for _ in range(5)] == [ok] * 4 + [full]  # urgent up to 8
    for refusal in refusals:
        assert reason_of(refusal) == "QUEUE_FULL"
        found = details(refusal)
        retry = found["RetryInfo"]
        assert isinstance(retry, error_details_pb2.RetryInfo)
        assert retry.retry_delay.seconds == 3
        quota = found["QuotaFailure"]
        assert isinstance(quota, error_details_pb2.QuotaFailure)
        assert quota.violations[0].subject == f"queue:mainnet.{private_model}"


async def test_bulk_flood_of_one_tenant_does_not_starve_anothers_normal_jobs(
    settings: Settings,
    tenants: TenantStore,
    private_model: str,
    amqp_channel: aiormq.abc.AbstractChannel,
) -> None:
    flooder, other = f"flood-{uuid.uuid4().hex[:6]}", f"calm-{uuid.uuid4().hex[:6]}"
    flood_key = (await tenants.create_key(flooder)).secret
    calm_key = (await tenants.create_key(other)).secret
    await tenants.set_limits(flooder, rate_per_second=1, burst=20)
    bridge_settings = with_bridge(
        with_models(settings, private_model), max_queue_depth=15, queue_depth_cache=timedelta(0)
    )
    async with running_bridge(bridge_settings) as bridge, stub_of(bridge) as jobs:
        refused = 0
        codes: set[grpc.StatusCode] = set()
        flood_ids = []
        for i in range(40):  # the flood: far above the flooder's rate
            try:
                job = (
                    await jobs.Submit(
                        job_service_pb2.SubmitRequest(
                            job=spec(f"bulk {i}", model=private_model, priority=BULK)
                        ),
                        metadata=bearer(flood_key),
                    )
                ).job
                flood_ids.append(job.job_id)
            except grpc.aio.AioRpcError as err:
                codes.add(err.code())
                refused += 1
        assert refused >= 20, "the flood was throttled"
        assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        calm_ids = [
            (
                await jobs.Submit(
                    job_service_pb2.SubmitRequest(job=spec(f"normal {i}", model=private_model)),
                    metadata=bearer(calm_key),
                )
            ).job.job_id
            for i in range(5)
        ]
    # Whatever the flood left in the queue, the other tenant's normal jobs come out first.
    topology = Topology(settings.mesh.namespace)
    queue = topology.route_queue(topology.route_key("mainnet", private_model))
    order = []
    while True:
        message = await amqp_channel.basic_get(queue, no_ack=True)
        if message.delivery_tag is None:
            break
        assert message.header.properties.message_id is not None
        order.append(message.header.properties.message_id)
    assert sorted(order[:5]) == sorted(calm_ids)
    assert sorted(order[5:]) == sorted(flood_ids)


async def test_other_tenants_normal_jobs_finish_during_a_bulk_flood(
    settings: Settings, tenants: TenantStore, private_model: str
) -> None:
    """With a (scripted, one-slot) node working through a bulk flood of one tenant, the
    normal jobs another tenant submits afterwards finish long before the flood does."""

    from scheduler.server import SchedulerServer

    # A scheduler whose mesh serves the private model (the run's scheduler does not).
    mesh_settings = with_models(settings, private_model)
    own = mesh_settings.scheduler.model_copy(
        update={"port": 0, "admin_port": 0, "scheduler_id": f"fair-{uuid.uuid4().hex[:6]}"}
    )
    scheduler = SchedulerServer(mesh_settings.model_copy(update={"scheduler": own}))
    await scheduler.start()
    try:
        await _flood_and_calm(settings, tenants, private_model, scheduler.port)
    finally:
        await scheduler.stop(grace=1)


async def _flood_and_calm(
    settings: Settings, tenants: TenantStore, private_model: str, scheduler_port: int
) -> None:
    from tests.support.scripted_node import ScriptedNode, running

    flooder, other = f"flood-{uuid.uuid4().hex[:6]}", f"calm-{uuid.uuid4().hex[:6]}"
    flood_key = (await tenants.create_key(flooder)).secret
    calm_key = (await tenants.create_key(other)).secret
    await tenants.set_limits(flooder, rate_per_second=1, burst=20)
    node = ScriptedNode(
        f"127.0.0.1:{scheduler_port}",
        f"fair-{uuid.uuid4().hex[:6]}",
        private_model,
        lambda _n: "ok",
        work_time=0.1,
    )
    bridge_settings = with_bridge(
        with_models(settings, private_model), max_queue_depth=15, queue_depth_cache=timedelta(0)
    )
    async with (
        running_bridge(bridge_settings) as bridge,
        stub_of(bridge) as jobs,
        running(node),
    ):
        flood_ids: list[str] = []
        refused = 0
        for i in range(40):
            try:
                answer = await jobs.Submit(
                    job_service_pb2.SubmitRequest(
                        job=spec(f"bulk {i}", model=private_model, priority=BULK)
                    ),
                    metadata=bearer(flood_key),
                )
                flood_ids.append(answer.job.job_id)
            except grpc.aio.AioRpcError:
                refused += 1
        calm_ids = [
            (
                await jobs.Submit(
                    job_service_pb2.SubmitRequest(job=spec(f"normal {i}", model=private_model)),
                    metadata=bearer(calm_key),
                )
            ).job.job_id
            for i in range(5)
        ]

        async def states(ids: list[str], key: str) -> list[int]:
            return [
                (
                    await jobs.Status(job_service_pb2.StatusRequest(job_id=i), metadata=bearer(key))
                ).job.state
                for i in ids
            ]

        async def calm_done() -> bool:
            return all(s == job_pb2.JOB_STATE_SUCCEEDED for s in await states(calm_ids, calm_key))

        await eventually(calm_done, within=30, what="the other tenant's normal jobs to finish")
        flood_done = sum(
            s == job_pb2.JOB_STATE_SUCCEEDED for s in await states(flood_ids, flood_key)
        )
        for job_id in flood_ids:  # leave nothing queued behind
            await jobs.Cancel(
                job_service_pb2.CancelRequest(job_id=job_id), metadata=bearer(flood_key)
            )
    assert refused >= 20
    assert flood_done <= len(flood_ids) // 2, (
        f"{flood_done} of {len(flood_ids)} flood jobs ran before 5 normal jobs finished"
    )


async def test_tenant_backlog_cap_keeps_one_tenant_from_filling_a_class(
    settings: Settings, tenants: TenantStore, private_model: str
) -> None:
    busy, other = f"busy-{uuid.uuid4().hex[:6]}", f"idle-{uuid.uuid4().hex[:6]}"
    busy_key = (await tenants.create_key(busy)).secret
    other_key = (await tenants.create_key(other)).secret
    capped = with_bridge(with_models(settings, private_model), max_waiting_per_tenant=3)
    async with running_bridge(capped) as bridge, stub_of(bridge) as jobs:

        async def submit(key: str) -> str:
            answer = await jobs.Submit(
                job_service_pb2.SubmitRequest(job=spec(model=private_model)),
                metadata=bearer(key),
            )
            return answer.job.job_id

        waiting = [await submit(busy_key) for _ in range(3)]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(busy_key)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(caught.value) == "TENANT_BACKLOG_FULL"
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # a batch counts all its jobs
            await jobs.SubmitBatch(
                job_service_pb2.SubmitBatchRequest(jobs=[spec(model=private_model)]),
                metadata=bearer(busy_key),
            )
        assert reason_of(caught.value) == "TENANT_BACKLOG_FULL"
        mine = await submit(other_key)  # another tenant is not affected
        await jobs.Cancel(
            job_service_pb2.CancelRequest(job_id=waiting[0]), metadata=bearer(busy_key)
        )
        waiting[0] = await submit(busy_key)  # a finished job frees a place
        for job_id in waiting:
            await jobs.Cancel(
                job_service_pb2.CancelRequest(job_id=job_id), metadata=bearer(busy_key)
            )
        await jobs.Cancel(job_service_pb2.CancelRequest(job_id=mine), metadata=bearer(other_key))
