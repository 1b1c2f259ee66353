"""The asyncio SDK's concurrent submits on one SubmitStream, against a real bridge (RabbitMQ,
Redis, PostgreSQL): every submit answered with its own job, a refused one raising the
typed error Submit would raise, and a stream cut under the submits in flight costing no
job and doubling none (the same client_request_id goes again on the new stream)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from broker_bridge.server import BridgeServer
from fleetwire.process.settings import Settings
from fleetwire_client import AsyncClient, InvalidArgument, JobRequest, RetryPolicy
from tests.integration.bridge_kit import running_bridge, with_bridge
from tests.support.cuttable_relay import CuttableRelay
from tests.support.eventually import eventually

JOBS = 120


def handled(bridge: BridgeServer, method: str) -> float:
    """Calls of ``method`` the bridge's gRPC server finished (any code)."""
    total = 0.0
    for family in bridge.metrics.registry.collect():
        for sample in family.samples:
            if (
                sample.name == "fleetwire_grpc_server_handled_total"
                and sample.labels.get("method") == method
            ):
                total += sample.value
    return total


@pytest.fixture
async def roomy_bridge(settings: Settings) -> AsyncIterator[BridgeServer]:
    roomy = with_bridge(settings, tenant_rate=100_000.0, tenant_burst=100_000)
    async with running_bridge(roomy) as bridge:
        yield bridge


async def rows_of(settings: Settings, request_ids: list[str]) -> int:
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE client_request_id = ANY($1::text[])", request_ids
        )
        return count
    finally:
        await conn.close()


@pytest.mark.skip(
    reason="known problem: under CI load one of 120 concurrent submits on the stream went "
    "unanswered (DeadlineExceeded); SubmitStream in the SDK stays opt-in until it is found"
)
async def test_concurrent_submits_share_one_stream_and_get_their_own_jobs(
    roomy_bridge: BridgeServer,
) -> None:
    address = f"127.0.0.1:{roomy_bridge.port}"
    async with AsyncClient(address, insecure=True, stream_submits=True) as client:
        jobs = await asyncio.gather(
            *(client.submit(JobRequest(prompt=f"streamed {i}", max_tokens=4)) for i in range(JOBS))
        )
        with pytest.raises(InvalidArgument) as refused:
            await client.submit(JobRequest(model="no-such-model", prompt="x"))
        streams_open = await asyncio.to_thread(handled, roomy_bridge, "Submit")

    assert len({job.job_id for job in jobs}) == JOBS
    assert [v.field for v in refused.value.violations] == ["job.model"]
    assert streams_open == 0  # not one unary Submit: all went on the stream


async def test_the_unary_path_when_streams_are_off(roomy_bridge: BridgeServer) -> None:
    address = f"127.0.0.1:{roomy_bridge.port}"
    async with AsyncClient(address, insecure=True) as client:  # the default: Submit calls
        await asyncio.gather(*(client.submit(JobRequest(prompt=f"u{i}")) for i in range(5)))

    async def counted() -> bool:  # the server counts a call as it ends, after its answer
        return handled(roomy_bridge, "Submit") == 5

    await eventually(counted, within=10, what="5 Submit calls counted")


@pytest.mark.skip(
    reason="known problem: under load about one run in six leaves one submit resent after "
    "the cut unanswered on the new stream (client stream and reader alive, the bridge never "
    "answers it); SubmitStream in the SDK stays opt-in until it is found"
)
async def test_a_stream_cut_under_submits_in_flight_loses_and_doubles_nothing(
    settings: Settings, roomy_bridge: BridgeServer
) -> None:
    relay = CuttableRelay(roomy_bridge.port)
    await relay.start()
    request_ids = [f"cut-{uuid.uuid4().hex}" for _ in range(JOBS)]
    retry = RetryPolicy(max_attempts=20)
    try:
        async with AsyncClient(
            relay.address, insecure=True, retry=retry, timeout=60, stream_submits=True
        ) as client:

            async def submit(request_id: str) -> str:
                job = await client.submit(JobRequest(prompt="p", client_request_id=request_id))
                return job.job_id

            calls = [asyncio.create_task(submit(r)) for r in request_ids]
            for answered, call in enumerate(asyncio.as_completed(calls), start=1):
                await call
                if answered == JOBS // 4:
                    break
            relay.cut()  # the stream breaks with submits written and unanswered
            job_ids = await asyncio.gather(*calls)
    finally:
        await relay.stop()

    assert relay.cuts == 1
    assert len(set(job_ids)) == JOBS  # every submit answered with a job of its own
    assert await rows_of(settings, request_ids) == JOBS  # and none written twice
